"""Supervision that never strands work, on real `herald serve` processes: kill -9 loops of
the worker and of the notifier, services that cannot start, two instances on one data dir,
repairs at start-up, and the death of the supervisor itself."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from services import landlock
from services.core.events import EventType
from tests.e2e.harness import Instance, pid_alive, start_serve, wait_for

needs_landlock = pytest.mark.skipif(not landlock.support().available,
                                    reason=f"sandbox {landlock.support().describe()}")

FAST_RESTARTS = "[supervisor]\nrestart_max_delay = 0.5\n"
SHORT = ["--concurrency", "4"]


def _serve_env(data_dir: Path, runtime: Path) -> dict[str, str]:
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HERALD_DATA_DIR": str(data_dir)}


def _serve(data_dir: Path, runtime: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "embedded", "serve", *extra],
                            env=_serve_env(data_dir, runtime), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _ready_pid(herald: Instance, name: str, not_pid: int | None = None) -> int:
    """The pid of `name` once it is ready (and is not `not_pid`)."""
    def ready() -> int | None:
        st = herald.status()[name]
        pid = st.get("pid")
        return pid if st["state"] == "ready" and pid and pid != not_pid else None

    return int(wait_for(ready, timeout=60))


def _logged_seqs(data_dir: Path, after: int) -> list[int]:
    with sqlite3.connect(data_dir / "herald.db") as db:
        return [s for (s,) in db.execute("SELECT seq FROM events WHERE seq > ? AND principal = "
                                         "'local' ORDER BY seq", (after,))]  # fmt: skip


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for child, parent in parents.items():
            if parent == p and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


class _Killer(threading.Thread):
    """Kills one service with SIGKILL `times` times, each time once it is back and has
    served for `after` seconds."""

    def __init__(self, herald: Instance, name: str, times: int, after: float) -> None:
        super().__init__(daemon=True)
        self.herald, self.name, self.times, self.after = herald, name, times, after
        self.kills = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            pid = None
            for _ in range(self.times):
                pid = _ready_pid(self.herald, self.name, not_pid=pid)
                time.sleep(self.after)
                os.kill(pid, signal.SIGKILL)
                self.kills += 1
        except BaseException as exc:  # reported by the test
            self.error = exc


def _collect(stream, ids: set[str], seen: list[int], timeout: float) -> None:
    """Read the stream until every task of `ids` had its terminal event."""
    open_ids = set(ids)
    deadline = time.monotonic() + timeout
    for msg in stream.messages(timeout=0.5):
        assert time.monotonic() < deadline, f"{len(open_ids)} task(s) never finished"
        if msg is None or msg.event is None:
            continue
        seen.append(msg.event.seq)
        if msg.event.terminal:
            open_ids.discard(msg.event.task_id)
            if not open_ids:
                return


@pytest.mark.slow
def test_worker_killed_20_times_during_500_tasks_strands_nothing(tmp_path, runtime_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text(FAST_RESTARTS)
    herald = start_serve(data, runtime_dir, *SHORT)
    try:
        client = herald.client
        stream = client.events()
        head = stream.open().body["head"]
        killer = _Killer(herald, "worker", times=20, after=0.2)
        killer.start()
        ids = set()
        for i in range(500):
            ids.add(client.submit("demo.answer", {"seconds": 0.05 if i % 5 else 0})["id"])
        seen: list[int] = []
        _collect(stream, ids, seen, timeout=240)
        killer.join(120)
        assert killer.error is None and killer.kills == 20
        states = {client.get(t)["state"] for t in ids}
        assert states <= {"succeeded", "failed"}  # terminal, none left queued or running
        # every event logged for these tasks reached the client, once, in order
        wait_for(lambda: len(seen) >= len(_logged_seqs(data, head)), timeout=30)
        stream.close()
        assert seen == sorted(set(seen)) == _logged_seqs(data, head)[: len(seen)]
        assert herald.proc.poll() is None  # one run of herald serve: no relaunch
        assert herald.status()["worker"]["restarts"] >= 20
    finally:
        herald.stop()


@pytest.mark.slow
def test_notifier_killed_10_times_during_50_streaming_tasks(tmp_path, runtime_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text(FAST_RESTARTS)
    herald = start_serve(data, runtime_dir, *SHORT)
    try:
        client = herald.client
        stream = client.events()
        head = stream.open().body["head"]
        script = "for i in $(seq 1 20); do echo line $i; sleep 0.05; done"
        killer = _Killer(herald, "notifier", times=10, after=0.2)
        killer.start()
        ids = {client.submit("process.run", {"program": "sh", "args": ["-c", script]})["id"]
               for _ in range(50)}  # fmt: skip
        seen: list[int] = []
        _collect(stream, ids, seen, timeout=240)
        killer.join(120)
        assert killer.error is None and killer.kills == 10
        assert {client.get(t)["state"] for t in ids} == {"succeeded"}
        wait_for(lambda: len(seen) >= len(_logged_seqs(data, head)), timeout=30)
        stream.close()
        assert seen == _logged_seqs(data, head)  # no gap, no duplicate, across 10 kills
        assert herald.proc.poll() is None
        assert herald.status()["notifier"]["restarts"] >= 10
    finally:
        herald.stop()


def test_serve_exits_with_the_reason_when_a_service_cannot_start(tmp_path, runtime_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.toml").write_text("[worker]\nconcurrency = 'four'\n")
    proc = _serve(data, runtime_dir)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "worker.concurrency must be an integer" in err and "worker:" in err

    (data / "config.toml").unlink()
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(data, runtime_dir, "--port", str(port))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and f"port {port} is in use" in err


def test_two_instances_started_at_once_one_runs_the_other_names_it(tmp_path):
    data = tmp_path / "data"
    for round_ in range(2):
        procs = [_serve(data, tmp_path / f"rt-{round_}-{i}") for i in range(2)]  # other runtimes
        outs: list[tuple[str, str] | None] = [None, None]
        loser = None
        deadline = time.monotonic() + 60
        while loser is None and time.monotonic() < deadline:
            for i, p in enumerate(procs):
                if p.poll() is not None:
                    loser = i
            time.sleep(0.05)
        assert loser is not None, "both instances kept running"
        winner = procs[1 - loser]
        outs[loser] = procs[loser].communicate(timeout=10)
        assert procs[loser].returncode == 1
        err = outs[loser][1]
        assert "already running" in err and f"PID {winner.pid}" in err
        assert winner.poll() is None
        winner.send_signal(signal.SIGTERM)
        winner.communicate(timeout=30)
        assert winner.returncode == 0


def test_a_second_serve_names_the_running_instance_and_touches_nothing(herald, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in (herald.data_dir / "run").iterdir()}
    proc = _serve(herald.data_dir, tmp_path / "another-runtime")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    api = herald.client.api
    assert f"PID {herald.proc.pid}, API at {api}" in err
    after = {p.name: p.stat().st_mtime_ns for p in (herald.data_dir / "run").iterdir()}
    assert after == before  # its sockets and files untouched
    task = herald.client.submit("demo.answer", {"seconds": 0})
    wait_for(lambda: herald.client.get(task["id"])["state"] == "succeeded")


def test_submit_to_a_degraded_instance_says_what_is_down(tmp_path, runtime_dir):
    data = tmp_path / "data"
    data.mkdir()
    herald = start_serve(data, runtime_dir)
    try:
        (data / "config.toml").write_text("[worker]\nconcurrency = 0\n")  # cannot start again
        os.kill(herald.service_pid("worker"), signal.SIGKILL)
        wait_for(lambda: herald.status()["worker"]["state"] == "restarting"
                 and "concurrency" in herald.status()["worker"]["reason"]
                 and (herald.status()["worker"]["next_try"] or 0) > time.time() + 2.5,
                 timeout=60)  # its delay grew: waiting seconds for its next try  # fmt: skip
        out = herald.cli("submit", "demo.answer", "seconds=0")
        assert out.returncode == 0, out.stderr
        assert "worker is restarting since" in out.stderr
        assert "concurrency must be an integer" in out.stderr
        assert "next try in" in out.stderr and "runs once the worker is back" in out.stderr
        health = herald.client.health()
        assert health["status"] == "degraded"
        assert "concurrency" in health["services"]["worker"]["reason"]
        (data / "config.toml").unlink()  # fixed: the worker is back and runs the task
        task_id = out.stdout.strip()
        wait_for(lambda: herald.client.get(task_id)["state"] == "succeeded", timeout=60)
    finally:
        herald.stop()


def test_a_damaged_token_file_is_replaced_and_said(tmp_path, runtime_dir):
    data = tmp_path / "data"
    herald = start_serve(data, runtime_dir)
    old = (data / "token").read_text().strip()
    herald.stop()
    (data / "token").write_bytes(b"\xff\xfe not a token \x80")
    herald = start_serve(data, runtime_dir)
    try:
        said = [herald.lines.get(timeout=10)]  # said right after the banner
        text = "".join(said)
        assert "is not text" in text and "old one no longer works" in text
        new = (data / "token").read_text().strip()
        assert new and new != old
        assert herald.client.health()["status"] == "ok"
        herald.client.submit("demo.answer", {"seconds": 0})
    finally:
        herald.stop()


def test_a_database_that_is_not_one_is_refused_and_left_alone(tmp_path, runtime_dir):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    junk = b"these are not the bytes of a database" * 100
    (data / "herald.db").write_bytes(junk)
    proc = _serve(data, runtime_dir)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"{data / 'herald.db'} is not an SQLite database" in err
    assert (data / "herald.db").read_bytes() == junk  # never recreated


def test_sigkill_of_serve_leaves_no_process_and_the_tasks_run_next_time(tmp_path, runtime_dir):
    data = tmp_path / "data"
    herald = start_serve(data, runtime_dir, *SHORT)
    client = herald.client
    ids = [client.submit("process.run", {"program": "sleep", "args": ["2"]})["id"],
           client.submit("demo.answer", {"seconds": 2})["id"]]  # fmt: skip
    wait_for(lambda: all(client.get(t)["state"] == "running" for t in ids))
    # Services, executors, the task's own `sleep` (started a moment after "running": its
    # attempt's process is forked and confined first).
    family = wait_for(lambda: len(found := _descendants(herald.proc.pid)) >= 3 + 4 + 1
                      and found)  # fmt: skip
    herald.proc.kill()
    herald.proc.wait()
    deadline = time.monotonic() + 1.0  # the bound: nothing left after 1 s
    while time.monotonic() < deadline and any(pid_alive(p) for p in family):
        time.sleep(0.02)
    assert {p: _cmdline(p) for p in family if pid_alive(p)} == {}
    herald.stop()
    herald = start_serve(data, runtime_dir, *SHORT)
    try:
        wait_for(lambda: all(herald.client.get(t)["state"] == "succeeded" for t in ids),
                 timeout=60)  # fmt: skip
        events = herald.client.timeline(ids[1])
        assert EventType.SUCCEEDED in [e.type for e in events]
    finally:
        herald.stop()


@needs_landlock
def test_a_killed_worker_s_attempts_folder_is_removed_by_the_next(tmp_path, runtime_dir,
                                                                   monkeypatch):  # fmt: skip
    """SIGKILL leaves no time to clean up: the next worker removes what the dead one left
    in the temp dir (and nothing of a live one's, nor what is not Herald's)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    (tmp / "herald-attempts-not-ours").mkdir()  # no lock file: left alone
    data = tmp_path / "data"
    herald = start_serve(data, runtime_dir)
    try:
        for _ in range(3):  # each worker's attempts make its folder
            task = herald.client.submit("demo.answer", {"seconds": 0})
            wait_for(lambda t=task: herald.client.get(t["id"])["state"] == "succeeded")
            folders = sorted(p.name for p in tmp.iterdir() if p.name != "herald-attempts-not-ours")
            assert len(folders) == 1 and folders[0].startswith("herald-attempts-")
            (tmp / folders[0] / "left-by-a-task").write_text("x")
            pid = herald.service_pid("worker")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda p=pid: herald.status()["worker"]["state"] == "ready"
                     and herald.status()["worker"]["pid"] != p, timeout=60)  # fmt: skip
        task = herald.client.submit("demo.answer", {"seconds": 0})
        wait_for(lambda: herald.client.get(task["id"])["state"] == "succeeded")
        left = sorted(p.name for p in tmp.iterdir())
        assert "herald-attempts-not-ours" in left
        assert len(left) == 2, left  # the live worker's folder, and the one not Herald's
        live = next(p for p in tmp.iterdir() if p.name != "herald-attempts-not-ours")
        assert not (live / "left-by-a-task").exists()
    finally:
        herald.stop()
    assert sorted(p.name for p in tmp.iterdir()) == ["herald-attempts-not-ours"]
