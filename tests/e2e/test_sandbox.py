"""The kernel's sandbox on a real `herald serve`: no task, the owner's included, reads or
writes Herald's data dir, by itself or through `process.run`, nor signals Herald's own
processes; the user's files stay within reach. (Where the kernel has no Landlock, health
says so and these tests are skipped: the checks at submit are tested elsewhere.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import landlock
from tests.e2e.harness import Instance, pid_alive, start_serve, wait_for

ROOT = Path(__file__).resolve().parents[2]
CONFIG = '[tasks]\nmodules = ["tests.e2e.sandbox_tasks"]\n'

HIDDEN = ("EACCES", "ENOENT")
REFUSED = ("EACCES", "EROFS")

pytestmark = pytest.mark.skipif(not landlock.support().available,
                                reason=f"sandbox {landlock.support().describe()}")


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("sandbox")
    data = root / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(CONFIG)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        inst = start_serve(data, root / "runtime", "--concurrency", "2")
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    yield inst
    inst.stop()


def finished(inst: Instance, task_id: str) -> dict:
    return wait_for(lambda: (t := inst.client.get(task_id))["state"] in (
        "succeeded", "failed", "cancelled") and t, timeout=30)  # fmt: skip


def children(pid: int) -> list[int]:
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_health_says_attempts_are_confined(herald):
    assert herald.client.health()["sandbox"] == landlock.support().describe()
    assert herald.client.health()["sandbox"].startswith("landlock ABI ")


def test_no_task_reaches_herald_s_data_dir_while_the_user_s_files_stay_in_reach(
        herald, tmp_path):  # fmt: skip
    mine = tmp_path / "notes.txt"
    mine.write_text("my own")
    token = (herald.data_dir / "token").read_text()
    worker = herald.service_pid("worker")
    web = herald.service_pid("web")
    executors = wait_for(lambda: len(found := children(worker)) >= 2 and found)
    task = herald.client.submit("sbx.snoop", {
        "data": str(herald.data_dir), "mine": str(mine), "out": str(tmp_path),
        "pids": [str(p) for p in (worker, web, *executors)]})  # fmt: skip
    final = finished(herald, task["id"])
    assert final["state"] == "succeeded", final
    got = final["result"]
    # Landlock refuses (EACCES); where Herald's folders are hidden (a mount namespace) they
    # are an empty, read-only folder: nothing to read (ENOENT), nothing to write (EROFS).
    assert got["token"] in HIDDEN and got["ledger"] in HIDDEN, got
    assert got["list"] in ("EACCES", []), got
    assert got["plant"] in REFUSED and got["overwrite"] in REFUSED, got
    assert (got["mine"], got["out"]) == ("my own", "ok")
    assert got["kill"] == ["EPERM"] * (2 + len(executors))
    assert (tmp_path / "result.txt").read_text() == "planted"
    assert (herald.data_dir / "token").read_text() == token
    assert "tests.e2e.sandbox_tasks" in (herald.data_dir / "config.toml").read_text()
    assert pid_alive(worker) and pid_alive(web) and all(map(pid_alive, executors))
    assert herald.status()["worker"]["restarts"] == 0


@pytest.mark.parametrize("path", ["{data}/token", "/proc/self/root{data}/token"])
def test_process_run_cannot_read_the_token(herald, path):
    target = path.format(data=herald.data_dir)
    task = herald.client.submit("process.run", {"program": "cat", "args": [target]})
    final = finished(herald, task["id"])
    assert final["state"] == "failed" and final["error"]["code"] == "exit_status"
    assert final["error"]["detail"]["exit_code"] == 1
    lines = [line for e in herald.client.timeline(task["id"]) if e.type.value == "output"
             for line in e.data["lines"]]  # fmt: skip
    token = (herald.data_dir / "token").read_text().strip()
    assert any("Permission denied" in line or "No such file" in line for line in lines), lines
    assert not any(token in line for line in lines)


def test_files_archive_of_the_data_dir_gets_nothing(herald, tmp_path):
    dest = tmp_path / "loot.zip"
    link = tmp_path / "innocent"
    link.mkdir()
    args = {"source": str(link), "destination": str(dest)}
    task = herald.client.submit("files.archive", args)  # a plain folder at submit...
    link.rmdir()
    link.symlink_to(herald.data_dir)  # ...swapped for the data dir before it runs
    final = finished(herald, task["id"])
    assert final["state"] in ("failed", "succeeded"), final
    if dest.exists():  # at most an archive of what the sandbox shows: nothing of Herald's
        import zipfile

        with zipfile.ZipFile(dest) as z:
            assert not [n for n in z.namelist() if n.endswith(("token", "herald.db"))]
    status, body = herald.client.request("POST", "/api/tasks", {  # and at submit: refused
        "task": "files.archive", "args": {"source": str(herald.data_dir),
                                          "destination": str(tmp_path / "x.zip")}})  # fmt: skip
    assert status == 422, body


def test_the_owner_creates_files_beside_herald_s_folder(herald, tmp_path):
    """Granting around Herald's folder alone leaves the folders on its path (a home dir)
    without the right to create anything in them; where the folder can be hidden, "/" is
    granted whole and an archive lands directly beside the data dir."""
    from services.worker import sandbox

    if not sandbox.can_hide():
        pytest.skip("no mount namespace here: files are created in subfolders only")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    dest = herald.data_dir.parent / "beside.zip"
    task = herald.client.submit("files.archive", {"source": str(source),
                                                  "destination": str(dest)})  # fmt: skip
    final = finished(herald, task["id"])
    assert final["state"] == "succeeded", final
    assert dest.exists()
