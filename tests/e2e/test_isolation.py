"""Every attempt in its own process, on a real `herald serve`: crashing tasks harm nobody
else, any task can be cancelled or timed out, failures are retried with backoff (also across
a restart), memory limits hold, and a killed archive leaves nothing half-written."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.events import EventType
from tests.e2e.harness import Instance, collect_all_until_terminal, pid_alive, start_serve, wait_for

ROOT = Path(__file__).resolve().parents[2]
CONFIG = '[tasks]\nmodules = ["tests.e2e.adversity_tasks"]\n'


def serve(data: Path, runtime: Path) -> Instance:
    data.mkdir(mode=0o700, exist_ok=True)
    (data / "config.toml").write_text(CONFIG)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT)
    try:
        return start_serve(data, runtime)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("isolation")
    inst = serve(root / "data", root / "runtime")
    yield inst
    inst.stop()


def outcome(inst: Instance, task_id: str) -> dict:
    return wait_for(lambda: (t := inst.client.get(task_id))["state"] in (
        "succeeded", "failed", "cancelled") and t, timeout=30)  # fmt: skip


@pytest.mark.parametrize("mode", ["exit", "kill", "segv"])
def test_a_poison_task_harms_none_of_its_neighbours(herald, mode):
    client = herald.client
    worker = herald.service_pid("worker")
    neighbours = [client.submit("demo.answer", {"seconds": 1.5})["id"] for _ in range(3)]
    wait_for(lambda: all(client.get(t)["state"] == "running" for t in neighbours))
    poison = client.submit("adv.crash", {"mode": mode})["id"]
    final = outcome(herald, poison)
    assert final["state"] == "failed" and final["error"]["code"] == "worker_lost"
    assert final["attempt"] == 3 and final["lost_attempts"] == 3
    for t in neighbours:
        done = outcome(herald, t)
        assert (done["state"], done["attempt"], done["result"]) == ("succeeded", 1, 42)
    assert herald.status()["worker"]["pid"] == worker  # the worker itself never died
    assert herald.status()["worker"]["restarts"] == 0


@pytest.mark.parametrize("name", ["adv.deaf", "adv.in_c"])
def test_a_task_that_ignores_cancel_is_killed_with_what_it_started(herald, name):
    client = herald.client
    with client.events() as stream:
        task_id = client.submit(name)["id"]
        for msg in stream.messages(timeout=0.2):
            ev = msg and msg.event
            if ev and ev.task_id == task_id and ev.type is EventType.OUTPUT:
                executor, child = map(int, re.findall(r"\d+", ev.data["lines"][0]))
                break
        assert pid_alive(child)
        start = time.monotonic()
        client.cancel(task_id)
        events = collect_all_until_terminal(stream, [task_id])[task_id]
    took = time.monotonic() - start
    grace = 1.0
    assert grace <= took <= grace + 1.0
    assert events[-1].type is EventType.CANCELLED and events[-1].data["forced"] is True
    assert client.get(task_id)["state"] == "cancelled"
    wait_for(lambda: not pid_alive(executor) and not pid_alive(child), timeout=2)


def test_a_time_limit_fails_the_task_with_timeout(herald):
    client = herald.client
    start = time.monotonic()
    task = client.submit("demo.answer", {"seconds": 10}, timeout=1)
    assert task["timeout"] == 1
    final = outcome(herald, task["id"])
    took = time.monotonic() - start
    assert final["state"] == "failed" and final["error"]["code"] == "timeout"
    assert 1.0 <= took <= 2.0


def test_failures_are_retried_with_backoff(herald, tmp_path):
    client = herald.client
    task_id = client.submit("adv.flaky", {"marker": str(tmp_path / "n"), "fails": 2})["id"]
    final = outcome(herald, task_id)
    assert (final["state"], final["attempt"], final["max_attempts"]) == ("succeeded", 3, 3)
    events = client.timeline(task_id)
    retries = [e for e in events if e.type is EventType.RETRYING]
    assert len(retries) == 2
    # Base 1 s doubling, up to a quarter of each wait random: [0.75, 1] then [1.5, 2].
    assert 0.75 <= retries[0].data["delay"] <= 1.0
    assert 1.5 <= retries[1].data["delay"] <= 2.0
    starts = [e.ts for e in events if e.type is EventType.STARTED][1:]
    for retry, started in zip(retries, starts, strict=True):
        assert retry.data["at"] <= started <= retry.data["at"] + 1.0


def test_a_memory_hog_fails_alone(herald):
    client = herald.client
    neighbour = client.submit("demo.answer", {"seconds": 1})["id"]
    hog = client.submit("adv.hog")["id"]
    final = outcome(herald, hog)
    assert final["state"] == "failed" and final["error"]["code"] == "memory_limit"
    done = outcome(herald, neighbour)
    assert (done["state"], done["attempt"]) == ("succeeded", 1)


# ------------------------------------------------------------------ files.archive


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    with open(folder / "noise.bin", "wb") as f:  # random: deflate gains nothing, slowly
        for _ in range(96):
            f.write(os.urandom(1024 * 1024))
    return folder


def archive_executor(folder: Path) -> int | None:
    """The pid of the process that has an archive's temporary file open, if any."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith(str(folder)) and target.endswith(".part"):
                    return int(pid)
        except OSError:
            continue
    return None


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_cancelled_archive_leaves_nothing(herald, big_folder, tmp_path):
    client = herald.client
    dest = tmp_path / "out.zip"
    task_id = client.submit("files.archive", {"source": str(big_folder),
                                              "destination": str(dest)})["id"]  # fmt: skip
    wait_for(lambda: archive_executor(tmp_path))
    client.cancel(task_id)
    assert outcome(herald, task_id)["state"] == "cancelled"
    assert leftovers(tmp_path) == []


def test_an_archive_killed_mid_write_leaves_no_partial_file(herald, big_folder, tmp_path):
    client = herald.client
    dest = tmp_path / "out.zip"
    task = client.submit("files.archive", {"source": str(big_folder), "destination": str(dest)},
                         timeout=1.5)  # fmt: skip
    executor = wait_for(lambda: archive_executor(tmp_path))
    os.kill(executor, signal.SIGSTOP)  # now it cannot clean up after itself: Herald must
    final = outcome(herald, task["id"])
    assert final["state"] == "failed" and final["error"]["code"] == "timeout"
    assert not pid_alive(executor)
    assert leftovers(tmp_path) == []


def test_an_archive_whose_process_dies_is_cleaned_up_and_run_again(herald, big_folder,
                                                                   tmp_path):  # fmt: skip
    client = herald.client
    dest = tmp_path / "out.zip"
    task_id = client.submit("files.archive", {"source": str(big_folder),
                                              "destination": str(dest)})["id"]  # fmt: skip
    executor = wait_for(lambda: archive_executor(tmp_path))
    os.kill(executor, signal.SIGKILL)
    final = outcome(herald, task_id)
    assert final["state"] == "succeeded" and final["attempt"] == 2
    assert final["lost_attempts"] == 1
    assert leftovers(tmp_path) == ["out.zip"]  # the first attempt's partial file is gone


# ------------------------------------------------------------------ restarts


def test_a_retry_waiting_for_its_time_survives_a_restart(tmp_path):
    data, runtime = tmp_path / "data", tmp_path / "runtime"
    inst = serve(data, runtime)
    try:
        client = inst.client
        # (Not next to the data dir: a task may create nothing directly in its parent.)
        (tmp_path / "files").mkdir()
        task_id = client.submit("adv.later", {"marker": str(tmp_path / "files" / "m")})["id"]
        waiting = wait_for(lambda: (t := client.get(task_id))["next_attempt_at"] and t)
        assert waiting["state"] == "queued" and waiting["attempt"] == 1
    finally:
        assert inst.stop() == 0
    inst = serve(data, runtime)  # every process is new
    back = time.time()
    try:
        client = inst.client
        retry = next(e for e in client.timeline(task_id) if e.type is EventType.RETRYING)
        final = outcome(inst, task_id)
        assert final["state"] == "succeeded" and final["attempt"] == 2
        started = [e.ts for e in client.timeline(task_id) if e.type is EventType.STARTED][-1]
        # At its time, not before; within a second after (or after the restart, had that
        # taken longer than the wait on a slow machine).
        assert retry.data["at"] <= started <= max(retry.data["at"], back) + 1.0
    finally:
        inst.stop()
