"""The worker's runner in-process, on real SQLite files and wake-up sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.core.errors import TaskFailure
from services.core.events import EventType
from services.core.params import Param, ParamType
from services.core.states import TaskState
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store import TaskStore
from services.tasks.catalog import Catalog
from services.wake import WakeReceiver, WakeSender
from services.worker.runner import Runner

catalog = Catalog()


@catalog.task("t.ok", params=[Param("n", ParamType.INTEGER, default=1)])
def ok(ctx, n):
    ctx.progress(0.5, "half")
    ctx.output("a line")
    return {"n": n}


@catalog.task("t.boom")
def boom(ctx):
    raise ZeroDivisionError("no")


@catalog.task("t.refuse")
def refuse(ctx):
    raise TaskFailure("not today", code="refused")


@catalog.task("t.unjson")
def unjson(ctx):
    return {1, 2}


@catalog.task("t.wait")
def wait(ctx):
    ctx.sleep(60)


class Harness:
    def __init__(self, root: Path) -> None:
        self.layout = DataLayout(root)
        self.store = TaskStore(self.layout.ledger_db)
        self.queue = TaskQueue(self.layout)
        self.notified = WakeReceiver(self.layout.wake_address("notifier"))
        self.runner = Runner(self.layout, catalog, threads=2)
        self.worker_wake = WakeSender(self.layout.wake_address("worker"))
        self.thread = threading.Thread(target=self.runner.run)

    def submit(self, name: str, args: dict | None = None, *, enqueue: bool = True) -> str:
        rec, _ = self.store.create_task(principal="a", name=name, args=args or {})
        if enqueue:
            self.queue.enqueue(rec.id)
            self.worker_wake.wake()
        return rec.id

    def wait_state(self, task_id: str, *states: TaskState, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while self.store.get_task(task_id).state not in states:
            assert time.monotonic() < deadline, self.store.get_task(task_id)
            time.sleep(0.01)

    def close(self) -> None:
        self.runner.stop()
        self.thread.join(10)
        self.notified.close()
        self.worker_wake.close()

    def types(self, task_id: str) -> list[EventType]:
        return [e.type for e in self.store.events_after(0, task_id=task_id)]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    h.thread.start()
    yield h
    h.close()


def test_a_task_runs_and_every_event_is_recorded_and_announced(harness):
    task_id = harness.submit("t.ok", {"n": 3})
    harness.wait_state(task_id, TaskState.SUCCEEDED)
    assert harness.store.get_task(task_id).result == {"n": 3}
    assert harness.types(task_id) == [EventType.QUEUED, EventType.STARTED, EventType.PROGRESS,
                                      EventType.OUTPUT, EventType.SUCCEEDED]  # fmt: skip
    assert harness.notified.wait(1)  # the notifier was woken


@pytest.mark.parametrize(("name", "code"), [("t.boom", "exception"), ("t.refuse", "refused"),
                                            ("t.unjson", "bad_result"), ("t.nope", "unknown_task")])
def test_failures_are_recorded_with_a_reason(harness, name, code):
    task_id = harness.submit(name)
    harness.wait_state(task_id, TaskState.FAILED)
    error = harness.store.get_task(task_id).error
    assert error["code"] == code and error["message"]
    if name == "t.boom":
        assert "ZeroDivisionError" in error["traceback"]


def test_cancel_a_running_task_by_wake_up(harness):
    task_id = harness.submit("t.wait")
    harness.wait_state(task_id, TaskState.RUNNING)
    harness.store.request_cancel(task_id, "a")
    harness.worker_wake.wake(b"cancel")
    harness.wait_state(task_id, TaskState.CANCELLED, timeout=5)


def test_defaults_are_filled_in_for_arguments_left_out(harness):
    task_id = harness.submit("t.ok", {})  # queued before `n` existed, say
    harness.wait_state(task_id, TaskState.SUCCEEDED)
    assert harness.store.get_task(task_id).result == {"n": 1}


def test_a_task_recorded_but_never_enqueued_is_found(harness):
    task_id = harness.submit("t.ok", enqueue=False)  # as if the web died in between
    harness.runner.recover(unchanged_for=0)
    harness.worker_wake.wake()
    harness.wait_state(task_id, TaskState.SUCCEEDED)


def test_stopping_puts_running_tasks_back_in_the_queue(tmp_path):
    h = Harness(tmp_path)
    h.thread.start()
    task_id = h.submit("t.wait")
    h.wait_state(task_id, TaskState.RUNNING)
    h.close()
    rec = h.store.get_task(task_id)
    assert rec.state is TaskState.QUEUED and rec.attempt == 1
    assert h.types(task_id)[-1] is EventType.RETRYING
    assert h.queue.pending_ids() == {task_id}


def test_a_duplicate_message_does_not_hide_the_running_attempt(harness):
    """Duplicate messages of one task happen (recover re-enqueues what it cannot see in the
    queue); the second must not make the first attempt uncancellable."""
    task_id = harness.submit("t.wait")
    harness.wait_state(task_id, TaskState.RUNNING)
    harness.queue.enqueue(task_id)  # the duplicate
    harness.worker_wake.wake()
    deadline = time.monotonic() + 5
    # Taken and dropped (the task is not queued any more): one thread busy again.
    while len(harness.queue) or harness.runner._free != harness.runner.threads - 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    harness.store.request_cancel(task_id, "a")
    harness.worker_wake.wake(b"cancel")
    harness.wait_state(task_id, TaskState.CANCELLED, timeout=5)
