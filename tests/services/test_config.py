"""config.toml: the [retention] table (the rest is exercised by the services' tests)."""

import pytest

from services.config import Config, load_config
from services.layout import DataLayout


def _config(tmp_path, text):
    (tmp_path / "config.toml").write_text(text)
    return load_config(DataLayout(tmp_path))


def test_retention_defaults_a_desktop_user_would_not_notice(tmp_path):
    config = load_config(DataLayout(tmp_path))  # no file
    assert config == Config()
    assert config.retention_seconds == 30 * 86400 and config.retention_keep == 10_000


def test_retention_is_configurable_and_zero_turns_a_rule_off(tmp_path):
    config = _config(tmp_path, "[retention]\nmax_age_days = 0.5\nmax_tasks = 0\n")
    assert config.retention_seconds == 43200 and config.retention_keep is None
    config = _config(tmp_path, "[retention]\nmax_age_days = 0\nmax_tasks = 5\n")
    assert config.retention_seconds is None and config.retention_keep == 5


@pytest.mark.parametrize("text", ["[retention]\nmax_tasks = -1\n",
                                  "[retention]\nmax_age_days = 'soon'\n",
                                  "retention = 3\n"])  # fmt: skip
def test_bad_retention_values_name_the_key(tmp_path, text):
    with pytest.raises(ValueError, match="retention"):
        _config(tmp_path, text)
