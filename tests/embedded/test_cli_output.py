"""`herald logs ID [--follow]` and `herald show ID`'s readable result, against a real
`herald serve`."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Instance, start_serve, wait_for


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("cli-output")
    data = root / "data"
    data.mkdir(mode=0o700)
    inst = start_serve(data, root / "runtime", "--concurrency", "2")
    yield inst
    inst.stop()


def _submit(herald: Instance, *args: str) -> str:
    out = herald.cli("submit", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_logs_prints_a_finished_programs_whole_output(herald):
    task_id = _submit(herald, "process.run", "program=seq", "args=1 20000")
    wait_for(lambda: herald.client.get(task_id)["state"] == "succeeded")
    out = herald.cli("logs", task_id)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(i) for i in range(1, 20001)]
    shown = herald.cli("show", task_id).stdout.splitlines()
    assert "result       exit 0 · 20,000 lines" in shown
    assert "  Exit code  0" in shown and "  Output     20,000 lines" in shown
    assert f"  (the whole output: herald logs {task_id})" in shown


def test_logs_follow_prints_new_lines_live_until_the_task_ends(herald, tmp_path: Path):
    go = tmp_path / "go"
    script = (f"import os, time\nprint('ready', flush=True)\n"
              f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
              f"print('done', flush=True)\n")  # fmt: skip
    task_id = _submit(herald, "process.run", f"program={sys.executable}",
                      f"args=-c {shlex.quote(script)}")  # fmt: skip
    follower = subprocess.Popen([sys.executable, "-m", "embedded", "logs", task_id, "--follow"],
                                env=herald.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "ready\n"  # printed while the task still runs
        assert herald.client.get(task_id)["state"] == "running"
        go.touch()
        rest, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert rest == "done\n"  # and it stopped by itself when the task ended


def test_show_prints_the_result_as_its_display_says(herald, tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"x" * 3000)
    (folder / "b.txt").write_bytes(b"hi\n")
    task_id = _submit(herald, "files.checksum", f"path={folder}")
    wait_for(lambda: herald.client.get(task_id)["state"] == "succeeded")
    digest = herald.client.get(task_id)["result"]["digest"]
    out = herald.cli("show", task_id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert f"result       2 files · 2.9 KiB · {digest[:12]}…" in lines
    assert f"  Digest     {digest}" in lines
    assert "  Size       2.9 KiB" in lines
    assert "  Manifest (2 rows):" in lines
    a_row = next(line for line in lines if line.lstrip().startswith("a.txt"))
    assert a_row.split() == ["a.txt", "2.9", "KiB", hashlib.sha256(b"x" * 3000).hexdigest()]
    # --json is unchanged: the result as the API has it
    raw = json.loads(herald.cli("show", task_id, "--json").stdout)
    assert raw["result"]["bytes"] == 3003 and len(raw["result"]["manifest"]) == 2
