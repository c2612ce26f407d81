"""Herald headless, end to end: real `herald serve`, real children, sockets and SQLite."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile

from services.core.events import EventType
from tests.e2e.harness import (
    collect_all_until_terminal,
    collect_until_terminal,
    pid_alive,
    start_serve,
    wait_for,
)


def test_submit_wait_prints_42(herald):
    out = herald.cli("submit", "demo.answer", "seconds=1", "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"
    tasks = json.loads(herald.cli("tasks", "--json").stdout)
    assert tasks[0]["task"] == "demo.answer" and tasks[0]["state"] == "succeeded"


def test_cli_reports_failure_and_bad_arguments(herald):
    bad = herald.cli("submit", "demo.answer", "seconds=-1")
    assert bad.returncode == 2 and "seconds" in bad.stderr
    failed = herald.cli("submit", "process.run", "program=/no/such/program", "--wait")
    assert failed.returncode == 1 and "task failed" in failed.stderr
    assert herald.cli("--version").stdout.startswith("herald ")
    assert "demo.answer" in herald.cli("catalog").stdout


def test_progress_arrives_in_order_before_the_result(herald):
    client = herald.client
    with client.events() as stream:
        task = client.submit("demo.answer", {"seconds": 1})
        events = collect_until_terminal(stream, task["id"])
    types = [e.type for e in events]
    assert types[:2] == [EventType.QUEUED, EventType.STARTED]
    assert types[-1] is EventType.SUCCEEDED and events[-1].data["result"] == 42
    progress = [e.data["fraction"] for e in events if e.type is EventType.PROGRESS]
    assert len(progress) >= 3 and progress == sorted(progress)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    # the HTTP timeline says exactly the same
    status, timeline = client.request("GET", f"/api/tasks/{task['id']}/events")
    assert status == 200
    assert [e["seq"] for e in timeline["events"]] == seqs


def test_every_builtin_task_round_trip(herald, tmp_path):
    client = herald.client
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"hello")
    (folder / "sub" / "b.bin").write_bytes(os.urandom(3000))
    table = tmp_path / "t.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "size"])
        for i in range(20):
            w.writerow([f"n{i % 3}", i])
    cases = {
        "files.checksum": {"path": str(folder / "a.txt")},
        "files.archive": {"source": str(folder), "destination": str(tmp_path / "out.zip")},
        "report.csv": {"source": str(table), "destination": str(tmp_path / "report.html")},
        "process.run": {"program": sys.executable, "args": ["-c", "print('hi'); print('there')"]},
        "demo.answer": {"seconds": 0},
    }
    with client.events() as stream:
        ids = {name: client.submit(name, args)["id"] for name, args in cases.items()}
        by_task = collect_all_until_terminal(stream, list(ids.values()))
    results = {}
    for name, task_id in ids.items():
        events = by_task[task_id]
        assert events[-1].type is EventType.SUCCEEDED, (name, events[-1].data)
        results[name] = client.get(task_id)["result"]
    assert hashlib.sha256(b"hello").hexdigest() in json.dumps(results["files.checksum"])
    with zipfile.ZipFile(tmp_path / "out.zip") as z:
        assert sorted(n for n in z.namelist() if not n.endswith("/")) == ["a.txt", "sub/b.bin"]
    assert (tmp_path / "report.html").read_text().count("<html") == 1
    assert results["process.run"]["exit_code"] == 0
    assert results["demo.answer"] == 42


def test_process_output_is_streamed(herald):
    client = herald.client
    with client.events() as stream:
        task = client.submit("process.run", {"program": sys.executable,
                                             "args": ["-c", "for i in range(5): print(i)"]})
        events = collect_until_terminal(stream, task["id"])
    lines = [ln for e in events if e.type is EventType.OUTPUT for ln in e.data["lines"]]
    assert lines == ["0", "1", "2", "3", "4"]


def test_cancel_a_queued_and_a_running_task(tmp_path, runtime_dir):
    inst = start_serve(tmp_path / "data", runtime_dir, "--concurrency", "1")
    try:
        client = inst.client
        with client.events() as stream:
            running = client.submit("demo.answer", {"seconds": 60})
            queued = client.submit("demo.answer", {"seconds": 60})
            wait_for(lambda: client.get(running["id"])["state"] == "running")
            assert client.cancel(queued["id"])["state"] == "cancelled"
            assert client.cancel(running["id"])["cancel_requested"] is True
            events = collect_until_terminal(stream, running["id"], timeout=10)
            assert events[-1].type is EventType.CANCELLED
        assert client.get(queued["id"])["state"] == "cancelled"
        assert client.get(queued["id"])["attempt"] == 0  # it never ran
    finally:
        inst.stop()


def test_worker_killed_mid_task_is_retried(herald):
    client = herald.client
    with client.events() as stream:
        task = client.submit("demo.answer", {"seconds": 1.5})
        wait_for(lambda: client.get(task["id"])["state"] == "running")
        os.kill(herald.service_pid("worker"), signal.SIGKILL)
        events = collect_until_terminal(stream, task["id"])
    types = [e.type for e in events]
    assert EventType.RETRYING in types
    assert types[-1] is EventType.SUCCEEDED
    final = client.get(task["id"])
    assert final["attempt"] == 2 and final["result"] == 42


def test_reconnect_gets_exactly_the_missed_events(herald):
    client = herald.client
    stream = client.events()
    stream.open()
    task = client.submit("demo.answer", {"seconds": 2})
    # wait for the first progress, then kill the notifier under the client
    for msg in stream.messages(timeout=0.2):
        if msg is not None and msg.event and msg.event.type is EventType.PROGRESS:
            break
    old_pid = herald.service_pid("notifier")
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: herald.status()["notifier"].get("pid") not in (None, old_pid)
             and herald.status()["notifier"]["state"] == "ready")  # fmt: skip
    rest = collect_until_terminal(stream, task["id"])
    stream.close()
    status, timeline = client.request("GET", f"/api/tasks/{task['id']}/events")
    all_seqs = [e["seq"] for e in timeline["events"]]
    seen_before = [s for s in all_seqs if s <= rest[0].seq - 1]
    assert [e.seq for e in rest] == all_seqs[len(seen_before):]
    assert rest[-1].type is EventType.SUCCEEDED


def test_principals_never_see_each_other(herald):
    token_b = herald.cli("token", "create", "bob").stdout.strip()
    a = herald.client
    from embedded.client import HeraldClient

    b = HeraldClient(a.api, a.ws, token_b)
    herald.clients.append(b)
    with b.events(since=0) as stream_b, a.events() as stream_a:
        mine = a.submit("demo.answer", {"seconds": 0})
        collect_until_terminal(stream_a, mine["id"])
        theirs = b.submit("demo.answer", {"seconds": 0})
        events_b = collect_until_terminal(stream_b, theirs["id"])
    assert {e.task_id for e in events_b} == {theirs["id"]}
    assert [t["id"] for t in b.list_tasks().tasks] == [theirs["id"]]
    assert b.request("GET", f"/api/tasks/{mine['id']}")[0] == 404
    assert b.request("POST", f"/api/tasks/{mine['id']}/cancel")[0] == 404


def test_queued_and_interrupted_tasks_survive_a_restart(tmp_path, runtime_dir):
    data = tmp_path / "data"
    inst = start_serve(data, runtime_dir, "--concurrency", "1")
    client = inst.client
    running = client.submit("demo.answer", {"seconds": 30})
    queued = client.submit("demo.answer", {"seconds": 0})
    wait_for(lambda: client.get(running["id"])["state"] == "running")
    assert inst.stop() == 0
    inst = start_serve(data, runtime_dir, "--concurrency", "2")
    try:
        client = inst.client
        wait_for(lambda: client.get(queued["id"])["state"] == "succeeded")
        again = client.get(running["id"])
        assert again["state"] == "running" and again["attempt"] == 2
        client.cancel(running["id"])
        wait_for(lambda: client.get(running["id"])["state"] == "cancelled")
    finally:
        inst.stop()


def test_children_die_with_a_killed_parent(tmp_path, runtime_dir):
    inst = start_serve(tmp_path / "data", runtime_dir)
    pids = [inst.service_pid(n) for n in ("web", "worker", "notifier")]
    inst.proc.kill()
    inst.stop()
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=15)


def test_clean_stop_removes_the_runtime_file(tmp_path, runtime_dir):
    inst = start_serve(tmp_path / "data", runtime_dir)
    pids = [inst.service_pid(n) for n in ("web", "worker", "notifier")]
    assert inst.stop() == 0
    assert not any(pid_alive(p) for p in pids)
    assert list(runtime_dir.joinpath("herald").glob("instance-*.json")) == []
    again = inst.cli("tasks")
    assert again.returncode == 3 and "not running" in again.stderr  # ExitCode.UNREACHABLE


def test_a_crashing_service_is_restarted_on_the_same_port(herald):
    port = herald.status()["web"]["port"]
    old = herald.service_pid("web")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: herald.status()["web"].get("pid") not in (None, old)
             and herald.status()["web"]["state"] == "ready")  # fmt: skip
    assert herald.status()["web"]["port"] == port
    assert herald.status()["web"]["restarts"] == 1
    assert herald.client.health()["status"] in ("ok", "degraded")


def test_ctrl_c_during_submit_wait_cancels_the_task(herald):
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedded", "submit", "demo.answer", "seconds=60", "--wait"],
        env=herald.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    client = herald.client
    task = wait_for(lambda: next(iter(client.list_tasks(state="running").tasks), None))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Cancelling" in err
    assert client.get(task["id"])["state"] == "cancelled"
