"""Fixtures for end-to-end tests.

Herald's data and runtime dirs live apart from a test's `tmp_path`, as they do apart from a
user's files: confined, a task may create nothing directly in a folder on the path to one of
Herald's own (see services/worker/sandbox.py), and tests write their files into `tmp_path`.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Instance, start_serve


@pytest.fixture
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runtime")


@pytest.fixture
def herald(tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path) -> Iterator[Instance]:
    inst = start_serve(tmp_path_factory.mktemp("data"), runtime_dir, "--concurrency", "2")
    yield inst
    inst.stop()
