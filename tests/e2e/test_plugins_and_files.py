"""User tasks (README example via the config file, an entry point) and private files."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from tests.e2e.harness import collect_all_until_terminal, start_serve

README = Path(__file__).resolve().parents[2] / "README.md"

ENTRY_POINT_TASK = '''
from services.tasks import Param, ParamType, task

@task("ep.double", title="Double", params=[Param("n", ParamType.INTEGER)])
def double(ctx, n):
    return n * 2
'''


def readme_example() -> str:
    text = README.read_text()
    section = text.split("## Adding a task", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_and_an_entry_point_join_the_catalog(tmp_path, runtime_dir, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "my_tasks.py").write_text(readme_example())
    (plugins / "ep_tasks.py").write_text(ENTRY_POINT_TASK)
    dist = plugins / "ep_tasks-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-tasks\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[herald.tasks]\ndouble = ep_tasks\n")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text('[tasks]\nmodules = ["my_tasks"]\n')
    monkeypatch.setenv("PYTHONPATH", str(plugins))
    inst = start_serve(data, runtime_dir)
    try:
        client = inst.client
        names = {t["name"] for t in client.catalog()}
        assert {"text.count_words", "ep.double"} <= names
        with client.events() as stream:
            words = client.submit("text.count_words", {"text": "one two three"})
            double = client.submit("ep.double", {"n": 21})
            events = collect_all_until_terminal(stream, [words["id"], double["id"]])
        assert events[words["id"]][-1].data["result"] == {"words": 3}
        assert events[double["id"]][-1].data["result"] == 42
    finally:
        inst.stop()


def test_tokens_stay_private(herald, runtime_dir):
    token = herald.data_dir.joinpath("token").read_text().strip()
    assert len(token) >= 43  # 256 bits, urlsafe base64
    runtime_files = list((runtime_dir / "herald").glob("instance-*.json"))
    assert len(runtime_files) == 1
    for path in [*runtime_files, herald.data_dir / "token", herald.data_dir / "auth.json",
                 herald.data_dir / "herald.db"]:  # fmt: skip
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for name in ("web", "worker", "notifier"):
        pid = herald.service_pid(name)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert token.encode() not in argv and token.encode() not in environ
