"""Fixtures for end-to-end tests."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Instance, start_serve


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    return tmp_path / "runtime"


@pytest.fixture
def herald(tmp_path: Path, runtime_dir: Path) -> Iterator[Instance]:
    inst = start_serve(tmp_path / "data", runtime_dir, "--workers", "2")
    yield inst
    inst.stop()
