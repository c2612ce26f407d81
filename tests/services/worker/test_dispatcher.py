"""The dispatcher in-process (its loop in a thread) with real executor processes, real SQLite
files and real wake-up sockets. The worker service as a whole is tested in tests/e2e."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.errors import TaskFailure
from services.core.events import EventType
from services.core.params import Param, ParamType
from services.core.retry import Backoff
from services.core.states import TaskState
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store import TaskStore
from services.store.sqlite import JOURNAL_SIZE_LIMIT
from services.tasks.catalog import Catalog
from services.wake import WakeReceiver, WakeSender
from services.worker.dispatcher import Dispatcher
from tests.disk import fill, integrity, small_disk

catalog = Catalog()


@catalog.task("t.ok", params=[Param("n", ParamType.INTEGER, default=1)])
def ok(ctx, n):
    ctx.progress(0.5, "half")
    ctx.output("a line")
    print("printed", "too")
    return {"n": n, "pid": os.getpid(), "ppid": os.getppid()}


def executor_of(result: dict, dispatcher: Dispatcher) -> int:
    """The executor that ran an attempt: itself, or, confined, the parent of the attempt's
    own process."""
    return result["ppid"] if dispatcher.sandbox.available else result["pid"]


@catalog.task("t.boom")
def boom(ctx):
    raise ZeroDivisionError("no")


@catalog.task("t.refuse")
def refuse(ctx):
    raise TaskFailure("not today", code="refused")


@catalog.task("t.unjson")
def unjson(ctx):
    return {1, 2}


@catalog.task("t.nan")
def nan(ctx):
    return float("nan")


@catalog.task("t.exit")
def calls_exit(ctx):
    raise SystemExit(3)


@catalog.task("t.wait", cancel_grace=1)
def wait(ctx):
    ctx.sleep(60)


@catalog.task("t.deaf", cancel_grace=0.5)
def deaf(ctx):
    time.sleep(60)  # no checkpoint: only a kill stops it


@catalog.task("t.in_c", cancel_grace=0.5)
def in_c(ctx):
    ctypes.CDLL(None).sleep(60)  # blocked in C: even SIGTERM's handler does not run


@catalog.task("t.flaky", retries=2, retry_on=(OSError,),
              backoff=Backoff(base=0.2, factor=2, maximum=5, jitter=0.5),
              params=[Param("marker", ParamType.STRING), Param("fails", ParamType.INTEGER)])
def flaky(ctx, marker, fails):
    n = int(Path(marker).read_text()) if os.path.exists(marker) else 0
    Path(marker).write_text(str(n + 1))
    if n < fails:
        raise OSError(f"flaky {n}")
    return n


@catalog.task("t.again", retries=1)
def again(ctx):
    if ctx.attempt == 1:
        ctx.retry(after=0.3, reason="come back later")
    return ctx.attempt


@catalog.task("t.not_retried", retries=3, retry_on=(OSError,))
def not_retried(ctx):
    raise ValueError("not an OSError")


@catalog.task("t.hog", memory_limit=64)
def hog(ctx):
    return len(bytearray(512 * 1024 * 1024))


@catalog.task("t.solo", concurrency=1, params=[Param("seconds", ParamType.NUMBER)])
def solo(ctx, seconds):
    start = time.time()
    ctx.sleep(seconds)
    return [start, time.time()]


@catalog.task("t.temp", cancel_grace=0.3, params=[Param("path", ParamType.STRING),
                                                  Param("write", ParamType.BOOLEAN, default=True)])
def temp(ctx, path, write=True):
    registered = ctx.temp_path(path)
    if write:  # (not over Herald's own database: the live test harness still uses it)
        with open(registered, "w") as f:
            f.write("partial")
    ctx.output("written")
    time.sleep(60)


@catalog.task("t.garbage")
def garbage(ctx):
    for name in os.listdir("/proc/self/fd"):  # a hostile task writes to the dispatcher
        fd = int(name)
        try:
            if os.fstat(fd).st_mode & 0o170000 == 0o140000:  # a socket
                os.write(fd, b"\xff not a frame\n")
        except OSError:
            pass
    time.sleep(60)


@catalog.task("t.suicide")
def suicide(ctx):
    ctx.progress(0.1, "going")
    os.kill(os.getpid(), signal.SIGKILL)


@catalog.task("t.gate", params=[Param("path", ParamType.STRING)])
def gate(ctx, path):
    while not os.path.exists(path):
        ctx.sleep(0.02)
    for i in range(500):  # ~0.5 MB of output: more than a WAL file has room for
        ctx.output(f"{i:04d} " + "x" * 1000)
    return "through"


class Harness:
    def __init__(self, root: Path, concurrency: int = 2, **kw) -> None:
        root.mkdir(mode=0o700, exist_ok=True)
        self.layout = DataLayout(root)
        self.store = TaskStore(self.layout.ledger_db)
        self.queue = TaskQueue(self.layout)
        self.notified = WakeReceiver(self.layout.wake_address("notifier"))
        self.dispatcher = Dispatcher(self.layout, catalog, concurrency, **kw)
        self.worker_wake = WakeSender(self.layout.wake_address("worker"))
        self.thread = threading.Thread(target=self.dispatcher.run)

    def submit(self, name: str, args: dict | None = None, *, enqueue: bool = True,
               timeout: float | None = None, max_lost: int = 3,
               principal: str = "a") -> str:  # fmt: skip
        spec = catalog.get(name)
        rec, _ = self.store.create_task(principal=principal, name=name, args=args or {},
                                        max_attempts=1 + (spec.retries if spec else 0),
                                        max_lost=max_lost, timeout=timeout)  # fmt: skip
        if enqueue:
            self.queue.enqueue(rec.id)
            self.worker_wake.wake()
        return rec.id

    def wait_state(self, task_id: str, *states: TaskState, timeout: float = 15) -> float:
        start = time.monotonic()
        while self.store.get_task(task_id).state not in states:
            assert time.monotonic() - start < timeout, self.store.get_task(task_id)
            time.sleep(0.01)
        return time.monotonic() - start

    def cancel(self, task_id: str) -> None:
        self.store.request_cancel(task_id, "a")
        self.worker_wake.wake(b"cancel")

    def close(self) -> None:
        self.dispatcher.stop()
        self.thread.join(15)
        assert not self.thread.is_alive()
        self.notified.close()
        self.worker_wake.close()
        self.store.close()

    def events(self, task_id: str):
        return self.store.events_after(0, task_id=task_id)

    def types(self, task_id: str) -> list[EventType]:
        return [e.type for e in self.events(task_id)]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder for the tasks' own files. Not the data dir's parent: confined, a task may
    create nothing directly in a folder on the path to Herald's own (see sandbox.py)."""
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "data")
    h.thread.start()
    yield h
    h.close()


def test_an_attempt_runs_in_an_executor_and_every_report_is_recorded(harness):
    task_id = harness.submit("t.ok", {"n": 3})
    harness.wait_state(task_id, TaskState.SUCCEEDED)
    rec = harness.store.get_task(task_id)
    assert rec.result["n"] == 3
    assert executor_of(rec.result, harness.dispatcher) in {
        ex.pid for ex in harness.dispatcher.executors}  # fmt: skip
    assert rec.result["pid"] != os.getpid()
    assert harness.types(task_id) == [EventType.QUEUED, EventType.STARTED, EventType.PROGRESS,
                                      EventType.OUTPUT, EventType.SUCCEEDED]  # fmt: skip
    output = [e.data["lines"] for e in harness.events(task_id) if e.type is EventType.OUTPUT]
    assert output == [["a line", "printed too"]]  # print() is the task's output too
    assert harness.notified.wait(1)


def test_executors_are_reused(harness):
    pids = {executor_of(harness.store.get_task(t).result, harness.dispatcher) for t in
            [harness.submit("t.ok") for _ in range(6)] if not harness.wait_state(
                t, TaskState.SUCCEEDED)}  # fmt: skip
    assert pids <= {ex.pid for ex in harness.dispatcher.executors} and len(pids) <= 2


@pytest.mark.parametrize(("name", "code"), [
    ("t.boom", "exception"), ("t.refuse", "refused"), ("t.unjson", "bad_result"),
    ("t.nan", "bad_result"), ("t.exit", "exception"), ("t.nope", "unknown_task")])
def test_failures_are_recorded_with_a_code_from_their_type(harness, name, code):
    task_id = harness.submit(name)
    harness.wait_state(task_id, TaskState.FAILED)
    error = harness.store.get_task(task_id).error
    assert error["code"] == code and error["message"]
    if name == "t.boom":
        assert "ZeroDivisionError" in error["traceback"]
    if name == "t.exit":
        assert error["message"] == "SystemExit: 3"


def test_a_cooperative_cancel_stops_at_the_checkpoint(harness):
    task_id = harness.submit("t.wait")
    harness.wait_state(task_id, TaskState.RUNNING)
    harness.cancel(task_id)
    assert harness.wait_state(task_id, TaskState.CANCELLED) < 0.9  # well before its grace
    assert harness.events(task_id)[-1].data == {"reason": "stopped at a checkpoint"}


@pytest.mark.parametrize("name", ["t.deaf", "t.in_c"])
def test_a_task_that_ignores_a_cancel_is_killed_after_its_grace(harness, name):
    task_id = harness.submit(name)
    harness.wait_state(task_id, TaskState.RUNNING)
    time.sleep(0.2)
    pids = {ex.pid for ex in harness.dispatcher.executors}
    harness.cancel(task_id)
    took = harness.wait_state(task_id, TaskState.CANCELLED)
    assert 0.4 < took < 0.5 + 1.0
    last = harness.events(task_id)[-1]
    assert last.data["forced"] is True and last.data["grace"] == 0.5
    assert "stopped by force after 0.5 s" in last.data["reason"]
    # Its executor was replaced; the pool is full again.
    deadline = time.monotonic() + 5
    while len(harness.dispatcher.executors) < 2 or not pids - {
            ex.pid for ex in harness.dispatcher.executors}:  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert all(gone(p) for p in pids - {ex.pid for ex in harness.dispatcher.executors})


def test_a_time_limit_stops_the_attempt_and_fails_the_task(harness):
    task_id = harness.submit("t.deaf", timeout=0.5)
    took = harness.wait_state(task_id, TaskState.FAILED)
    assert took < 1.5
    error = harness.store.get_task(task_id).error
    assert error["code"] == "timeout" and error["timeout"] == 0.5
    assert error["message"] == "Timed out after 0.5 s; the attempt was stopped."
    assert harness.events(task_id)[1].data == {"attempt": 1, "timeout": 0.5}


def test_retryable_failures_are_retried_with_backoff(harness, files):
    task_id = harness.submit("t.flaky", {"marker": str(files / "m"), "fails": 2})
    harness.wait_state(task_id, TaskState.SUCCEEDED)
    rec = harness.store.get_task(task_id)
    assert (rec.result, rec.attempt, rec.failures, rec.shown_max_attempts) == (2, 3, 2, 3)
    retries = [e for e in harness.events(task_id) if e.type is EventType.RETRYING]
    assert [e.data["reason"] for e in retries] == ["failed", "failed"]
    assert [e.data["error"]["message"] for e in retries] == ["OSError: flaky 0", "OSError: flaky 1"]
    # base 0.2 doubling, half of each wait random: [0.1, 0.2] then [0.2, 0.4].
    delays = [e.data["delay"] for e in retries]
    assert 0.1 <= delays[0] <= 0.2 and 0.2 <= delays[1] <= 0.4
    starts = [e.ts for e in harness.events(task_id) if e.type is EventType.STARTED]
    for retry, started in zip(retries, starts[1:], strict=True):
        assert started >= retry.data["at"]  # not before its time
        assert started - retry.data["at"] < 1.0  # and not much after


def test_retries_run_out(harness, files):
    task_id = harness.submit("t.flaky", {"marker": str(files / "m"), "fails": 5})
    harness.wait_state(task_id, TaskState.FAILED)
    rec = harness.store.get_task(task_id)
    assert rec.attempt == 3 and rec.error["message"] == "OSError: flaky 2"
    assert harness.types(task_id).count(EventType.RETRYING) == 2


def test_only_the_declared_errors_are_retried(harness):
    task_id = harness.submit("t.not_retried")
    harness.wait_state(task_id, TaskState.FAILED)
    assert harness.store.get_task(task_id).attempt == 1


def test_a_task_may_ask_for_its_own_retry(harness):
    task_id = harness.submit("t.again")
    harness.wait_state(task_id, TaskState.SUCCEEDED)
    retry = next(e for e in harness.events(task_id) if e.type is EventType.RETRYING)
    assert retry.data["reason"] == "requested" and retry.data["delay"] == 0.3
    assert retry.data["error"]["message"] == "come back later"
    assert harness.store.get_task(task_id).result == 2


def test_a_memory_limit_fails_the_task_and_spares_the_rest(harness):
    neighbour = harness.submit("t.wait")
    harness.wait_state(neighbour, TaskState.RUNNING)
    task_id = harness.submit("t.hog")
    harness.wait_state(task_id, TaskState.FAILED)
    error = harness.store.get_task(task_id).error
    assert error["code"] == "memory_limit" and "64 MB" in error["message"]
    assert harness.store.get_task(neighbour).state is TaskState.RUNNING
    after = harness.submit("t.ok")  # the pool still works
    harness.wait_state(after, TaskState.SUCCEEDED)


def test_a_dead_executor_charges_its_own_attempt_only(harness):
    neighbour = harness.submit("t.wait")
    harness.wait_state(neighbour, TaskState.RUNNING)
    task_id = harness.submit("t.suicide", max_lost=2)
    harness.wait_state(task_id, TaskState.FAILED)
    rec = harness.store.get_task(task_id)
    assert rec.error["code"] == "worker_lost" and rec.attempt == 2 and rec.lost == 2
    assert "killed by SIGKILL" in rec.error["message"]
    retrying = next(e for e in harness.events(task_id) if e.type is EventType.RETRYING)
    assert retrying.data["detail"] == "killed by SIGKILL"
    n = harness.store.get_task(neighbour)
    assert (n.state, n.attempt, n.lost) == (TaskState.RUNNING, 1, 0)


def test_a_task_of_limited_concurrency_waits_its_turn(tmp_path):
    h = Harness(tmp_path / "data", concurrency=3)
    h.thread.start()
    try:
        ids = [h.submit("t.solo", {"seconds": 0.3}) for _ in range(3)]
        free = h.submit("t.ok")  # not held up by them
        h.wait_state(free, TaskState.SUCCEEDED)
        assert sum(h.store.get_task(t).state is TaskState.RUNNING for t in ids) == 1
        for t in ids:
            h.wait_state(t, TaskState.SUCCEEDED)
        spans = sorted(h.store.get_task(t).result for t in ids)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            assert start >= end - 0.01  # one at a time
    finally:
        h.close()


def test_a_killed_attempt_s_temporary_paths_are_removed(harness, files):
    path = files / "out.part"
    task_id = harness.submit("t.temp", {"path": str(path)})
    harness.wait_state(task_id, TaskState.RUNNING)
    deadline = time.monotonic() + 5
    while EventType.OUTPUT not in harness.types(task_id):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert path.exists()
    harness.cancel(task_id)
    harness.wait_state(task_id, TaskState.CANCELLED)
    assert not path.exists()


def test_a_task_cannot_have_herald_s_own_files_removed(harness, tmp_path):
    own = harness.layout.ledger_db
    task_id = harness.submit("t.temp", {"path": str(own), "write": False})
    harness.wait_state(task_id, TaskState.RUNNING)
    time.sleep(0.3)
    harness.cancel(task_id)
    harness.wait_state(task_id, TaskState.CANCELLED)
    assert own.exists() and harness.store.get_task(task_id) is not None


def test_an_executor_that_sends_garbage_is_killed_and_its_task_fails(harness):
    task_id = harness.submit("t.garbage")
    harness.wait_state(task_id, TaskState.FAILED)
    assert harness.store.get_task(task_id).error["code"] == "bad_result"
    after = harness.submit("t.ok")
    harness.wait_state(after, TaskState.SUCCEEDED)


def test_executors_are_recycled_after_n_attempts(tmp_path):
    h = Harness(tmp_path / "data", concurrency=1, max_tasks_per_executor=2)
    h.thread.start()
    try:
        pids = []
        for _ in range(5):
            t = h.submit("t.ok")
            h.wait_state(t, TaskState.SUCCEEDED)
            pids.append(executor_of(h.store.get_task(t).result, h.dispatcher))
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        assert all(gone(p) for p in set(pids[:4]))
    finally:
        h.close()


def test_stopping_puts_running_tasks_back_in_the_queue(tmp_path):
    h = Harness(tmp_path / "data", stop_grace=0.2)
    h.thread.start()
    task_id = h.submit("t.deaf")
    h.wait_state(task_id, TaskState.RUNNING)
    pids = [ex.pid for ex in h.dispatcher.executors]
    h.close()
    rec = TaskStore(h.layout.ledger_db).get_task(task_id)
    assert rec.state is TaskState.QUEUED and rec.attempt == 1 and rec.lost == 0
    assert rec.shown_max_attempts == 2  # the attempt it lost to the stop is given back
    assert h.queue.pending_ids() == {task_id}
    assert all(gone(p) for p in pids)


def test_a_second_stop_request_gives_running_attempts_no_grace(tmp_path):
    """The desktop's "Quit, run them next time": the end of stdin, then SIGTERM."""
    h = Harness(tmp_path / "data", stop_grace=60)
    h.thread.start()
    task_id = h.submit("t.deaf")
    h.wait_state(task_id, TaskState.RUNNING)
    h.dispatcher.stop()
    h.dispatcher.request_stop()  # a grace of 60 s would outlast the join below
    h.thread.join(10)
    assert not h.thread.is_alive()
    h.close()
    rec = TaskStore(h.layout.ledger_db).get_task(task_id)
    assert rec.state is TaskState.QUEUED and rec.lost == 0  # put back, to run next time


def test_a_duplicate_message_does_not_run_a_task_twice(harness):
    task_id = harness.submit("t.wait")
    harness.wait_state(task_id, TaskState.RUNNING)
    harness.queue.enqueue(task_id)  # the duplicate
    harness.worker_wake.wake()
    deadline = time.monotonic() + 5
    while len(harness.queue):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    harness.cancel(task_id)
    harness.wait_state(task_id, TaskState.CANCELLED)
    assert harness.types(task_id).count(EventType.STARTED) == 1


def test_a_task_recorded_but_never_enqueued_is_found(tmp_path):
    h = Harness(tmp_path / "data")
    task_id = h.submit("t.ok", enqueue=False)  # as if the web died in between
    h.thread.start()  # a new worker looks for such tasks at start
    try:
        h.wait_state(task_id, TaskState.SUCCEEDED)
    finally:
        h.close()


def test_a_task_named_before_its_message_starts_once(harness):
    """The web names a task ("?" + id) and then enqueues it: an idle worker starts it at
    once and drops the message that comes after."""
    rec, _ = harness.store.create_task(principal="a", name="t.ok", args={})
    harness.worker_wake.wake(b"?" + rec.id.encode())
    harness.wait_state(rec.id, TaskState.RUNNING, TaskState.SUCCEEDED)
    harness.queue.enqueue(rec.id)  # the message lands after the start
    harness.wait_state(rec.id, TaskState.SUCCEEDED)
    deadline = time.monotonic() + 5
    while len(harness.queue):  # read and dropped
        assert time.monotonic() < deadline
        harness.worker_wake.wake(b"!")  # any later wake-up is an occasion to read it
        time.sleep(0.05)
    assert harness.types(rec.id).count(EventType.STARTED) == 1


def test_a_task_named_while_every_executor_is_busy_starts_when_its_message_lands(tmp_path):
    h = Harness(tmp_path / "data", concurrency=1)
    h.thread.start()
    try:
        busy = h.submit("t.solo", {"seconds": 0.3})
        h.wait_state(busy, TaskState.RUNNING)
        rec, _ = h.store.create_task(principal="a", name="t.ok", args={})
        h.worker_wake.wake(b"?" + rec.id.encode())  # no executor free: it cannot start
        h.wait_state(busy, TaskState.SUCCEEDED)
        time.sleep(0.1)  # the worker, idle now, looked for its message: not there yet
        h.queue.enqueue(rec.id)  # it lands with no wake-up of its own
        assert h.wait_state(rec.id, TaskState.SUCCEEDED) < 1.0  # not the 30 s idle look
    finally:
        h.close()


def test_a_stale_message_does_not_stand_for_a_task_named_before_its_own(tmp_path):
    """A task enqueued twice (recovery at start-up re-enqueues one whose enqueue it did not
    see yet) leaves a stale message behind: reading it must not count as reading the message
    of a task named early ("?" + id), which is looked for until it lands. (Counted, not
    named, it was taken for it, and the task waited for the 30 s look: the flaky test
    above, 3 or 4 runs in 10.)"""
    h = Harness(tmp_path / "data", concurrency=1)
    h.thread.start()
    try:
        ran = h.submit("t.ok")
        h.wait_state(ran, TaskState.SUCCEEDED)
        busy = h.submit("t.solo", {"seconds": 0.3})
        h.wait_state(busy, TaskState.RUNNING)
        h.queue.enqueue(ran)  # the stale duplicate, of a task that ran already
        rec, _ = h.store.create_task(principal="a", name="t.ok", args={})
        h.worker_wake.wake(b"?" + rec.id.encode())  # no executor free: it cannot start
        h.wait_state(busy, TaskState.SUCCEEDED)
        time.sleep(0.1)  # the worker, idle now, read the queue: the stale message only
        h.queue.enqueue(rec.id)  # it lands with no wake-up of its own
        h.wait_state(rec.id, TaskState.SUCCEEDED, timeout=10)  # not the 30 s idle look
    finally:
        h.close()


def test_tasks_enqueued_between_the_workers_last_read_and_its_sleep_start_at_once(tmp_path):
    """The window the first wake-ups-per-burst lost tasks in: the worker has just found the
    queue empty and is about to sleep when a submit lands. Here a "web" runs exactly then
    (inside the worker's own empty read), enqueues two tasks and wakes after each commit
    as the web does: the second wake-up is coalesced into the first. Each round's tasks
    must start long before the 30 s idle look, round after round."""
    h = Harness(tmp_path / "data", concurrency=1)
    d, rounds = h.dispatcher, 25
    web: dict[str, object] = {}
    submitted: list[str] = []
    dequeue = d.queue.dequeue

    def dequeue_then_submit() -> str | None:
        got = dequeue()
        if got is None and web.get("armed"):
            web["armed"] = False
            if "store" not in web:  # this thread's own connections, as the web's are
                web["store"] = TaskStore(h.layout.ledger_db)
                web["queue"] = TaskQueue(h.layout)
            for _ in range(2):
                rec, _ = web["store"].create_task(principal="a", name="t.ok", args={})
                web["queue"].enqueue(rec.id)  # committed, then the wake-up
                h.worker_wake.wake(b"!" + rec.id.encode())
                submitted.append(rec.id)
        return got

    d.queue.dequeue = dequeue_then_submit
    h.thread.start()
    try:
        for i in range(rounds):
            web["armed"] = True
            h.worker_wake.wake()  # the worker looks, finds nothing: the web runs then
            deadline = time.monotonic() + 10
            while len(submitted) < 2 * (i + 1):
                assert time.monotonic() < deadline, "the worker never read an empty queue"
                time.sleep(0.005)
            for task_id in submitted[-2:]:
                h.wait_state(task_id, TaskState.SUCCEEDED, timeout=10)  # not the 30 s look
        assert h.worker_wake.coalesced >= rounds  # the second of each pair at least
    finally:
        h.close()
        if "store" in web:
            web["store"].close()


def test_while_every_executor_is_busy_submits_send_no_wake_up_and_still_run(tmp_path):
    """The worker sleeps with its flag set while the queue waits for an executor: the web's
    wake-ups are all left out, and the tasks run as soon as the executor frees."""
    h = Harness(tmp_path / "data", concurrency=1)
    h.thread.start()
    try:
        busy = h.submit("t.solo", {"seconds": 0.5})
        h.wait_state(busy, TaskState.RUNNING)
        time.sleep(0.1)  # the worker sleeps, its one executor busy
        sent = h.worker_wake.sent
        waiting = []
        for _ in range(5):  # as the web does: committed, then the wake-up
            rec, _ = h.store.create_task(principal="a", name="t.ok", args={})
            h.queue.enqueue(rec.id)
            h.worker_wake.wake(b"!" + rec.id.encode())
            waiting.append(rec.id)
        assert h.worker_wake.sent - sent <= 1  # none, or one if it had not slept yet
        for task_id in waiting:
            h.wait_state(task_id, TaskState.SUCCEEDED, timeout=10)  # not the 30 s look
    finally:
        h.close()


def test_a_stop_asked_for_by_a_signal_handler_takes_no_lock(tmp_path):
    """A handler runs between two bytecodes of the main thread, maybe inside Event.set
    itself: stopping from there must not take the event's lock again (it deadlocked)."""
    h = Harness(tmp_path / "data")
    d = h.dispatcher
    done = threading.Event()

    def handler_inside_event_set() -> None:
        with d._stopping._cond:  # the lock Event.set holds while it runs
            d.request_stop()
        done.set()

    t = threading.Thread(target=handler_inside_event_set, daemon=True)
    t.start()
    assert done.wait(2), "request_stop blocked on the stop event's lock"
    assert d.stopping
    h.thread.start()  # the loop sees the request and stops at once
    h.close()


def test_reports_the_full_disk_refuses_wait_in_order_and_nothing_runs_twice(tmp_path, caplog):
    with small_disk(tmp_path / "disk", "8m") as disk:
        h = Harness(disk / "data")
        h.thread.start()
        try:
            opened = tmp_path / "gate"
            gated = [h.submit("t.gate", {"path": str(opened)}) for _ in range(2)]
            waiting = [h.submit("t.ok") for _ in range(3)]
            for task_id in gated:
                h.wait_state(task_id, TaskState.RUNNING)
            fill(disk / "filler")
            opened.touch()  # the gated attempts report, end, and nothing can be recorded
            deadline = time.monotonic() + 15
            while not any("data disk is full" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the disk never refused a write"
                time.sleep(0.02)
            time.sleep(0.5)
            # Nothing lost meanwhile, nothing done twice: no attempt starts while the
            # disk refuses the ones that ended.
            assert all(h.store.get_task(t).state is TaskState.RUNNING for t in gated)
            assert all(h.store.get_task(t).attempt == 0 for t in waiting)

            (disk / "filler").unlink()
            for task_id in gated + waiting:
                h.wait_state(task_id, TaskState.SUCCEEDED)
        finally:
            h.close()
        store = TaskStore(h.layout.ledger_db)
        try:
            for task_id in gated + waiting:
                rec = store.get_task(task_id)
                timeline = [(e.type.value, e.attempt)
                            for e in store.events_after(0, task_id=task_id)]  # fmt: skip
                assert rec.attempt == 1 and rec.lost == 0, timeline
            for task_id in gated:
                events = store.events_after(0, task_id=task_id)
                types = [e.type for e in events]
                assert types[:2] == [EventType.QUEUED, EventType.STARTED]
                assert types[-1] is EventType.SUCCEEDED
                assert set(types[2:-1]) == {EventType.OUTPUT}
                lines = [line for e in events[2:-1] for line in e.data["lines"]]
                assert [line[:4] for line in lines] == [f"{i:04d}" for i in range(500)]
        finally:
            store.close()
        assert integrity(h.layout.ledger_db) == "ok"
        assert integrity(h.layout.queue_db) == "ok"


def test_the_worker_prunes_finished_tasks_beyond_the_retention_limit(tmp_path):
    h = Harness(tmp_path / "data", retention_keep=3, prune_interval=0.0)
    h.thread.start()
    try:
        ids = [h.submit("t.ok") for _ in range(6)]
        for t in ids:
            h.wait_state(t, TaskState.SUCCEEDED)
        last_pruned = max(h.events(t)[-1].seq for t in ids[:3])
        # The housekeeping thread prunes about a second after the writes.
        deadline = time.monotonic() + 15
        while len(h.store.list_tasks("a")) > 3:
            assert time.monotonic() < deadline, [t.id for t in h.store.list_tasks("a")]
            time.sleep(0.05)
        assert [t.id for t in h.store.list_tasks("a")] == ids[:2:-1]  # the newest three
        assert all(h.events(t) == [] for t in ids[:3])
        assert h.store.pruned_through("a") == last_pruned
    finally:
        h.close()


def test_the_worker_empties_a_grown_wal_once_writes_stop(harness):
    layout = harness.layout
    wal = Path(f"{layout.ledger_db}-wal")
    writer = TaskStore(layout.ledger_db, checkpoint_pages=0)  # a writer that never checkpoints
    rec, _ = writer.create_task(principal="a", name="t.ok", args={})
    with writer._write() as c:
        for _ in range(60):
            writer._append(c, rec.id, "a", EventType.OUTPUT, 0, {"lines": ["x" * 100_000]},
                           time.time())  # fmt: skip
    writer.close()
    assert wal.stat().st_size > JOURNAL_SIZE_LIMIT
    harness.wait_state(harness.submit("t.ok"), TaskState.SUCCEEDED)  # the worker writes too
    deadline = time.monotonic() + 15
    while wal.exists() and wal.stat().st_size > 0:
        assert time.monotonic() < deadline, wal.stat().st_size
        time.sleep(0.05)
