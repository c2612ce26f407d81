"""Schemathesis against the real web process: thousands of generated requests, valid and
not, must get answers that match the OpenAPI document, never a 5xx, and nothing without the
token. Only the web service runs, so no generated task is ever executed (a fuzzer must not
archive `/`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.auth import ensure_install_token
from services.layout import DataLayout
from tests.services.web.test_server import reap, start, wait_ready

ST = shutil.which("st", path=str(Path(sys.executable).parent))


@pytest.mark.slow
@pytest.mark.skipif(ST is None, reason="schemathesis is not installed")
def test_schemathesis_finds_no_failure(tmp_path: Path) -> None:
    token = ensure_install_token(DataLayout(tmp_path))
    proc = start(tmp_path)
    try:
        port = wait_ready(proc)["port"]
        result = subprocess.run(
            [ST, "run", f"http://127.0.0.1:{port}/api/openapi.json",
             "-H", f"Authorization: Bearer {token}",
             "--max-examples", "40", "--seed", "1", "--no-color",
             # A schema-valid path may still name a file that does not exist (422).
             "--exclude-checks", "positive_data_acceptance"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
    finally:
        reap(proc)
    assert result.returncode == 0, result.stdout[-4000:]
