"""The state machine on every backend, by a seeded random walk of every operation over a
handful of tasks, current and stale attempts alike: an operation the task's state allows
appends exactly one event (the one it returns, the log's newest) and leaves the task in
the state that event says; one it does not allow writes nothing at all."""

from __future__ import annotations

import random

import pytest

from services.core.events import STATE_AFTER, EventType
from services.core.states import TaskState
from tests.contract.checks import assert_ledger_agrees_with_log

STEPS = 400


def _expected(op: str, rec, attempt: int) -> EventType | None:
    """The event `op` must append to a task now `rec` (None: it must be refused)."""
    running = rec.state is TaskState.RUNNING and attempt == rec.attempt
    if op == "claim":
        return EventType.STARTED if rec.state is TaskState.QUEUED else None
    if op == "cancel":
        if rec.state is TaskState.QUEUED:
            return EventType.CANCELLED
        if rec.state is TaskState.RUNNING and not rec.cancel_requested:
            return EventType.CANCEL_REQUESTED
        return None
    if not running:
        return None
    if op in ("progress", "output"):
        return EventType(op)
    if op in ("succeed", "fail", "end_cancelled"):
        return {"succeed": EventType.SUCCEEDED, "fail": EventType.FAILED,
                "end_cancelled": EventType.CANCELLED}[op]  # fmt: skip
    if op == "retry":
        return EventType.RETRYING
    if op in ("lose", "stop"):
        if rec.cancel_requested:
            return EventType.CANCELLED
        if op == "lose" and rec.lost + 1 >= rec.max_lost:
            return EventType.FAILED
        return EventType.RETRYING
    raise AssertionError(op)


def _apply(store, op: str, rec, attempt: int):
    tid = rec.id
    if op == "claim":
        return store.claim(tid, "w", 60)[1]
    if op == "cancel":
        return store.request_cancel(tid, rec.principal)[1]
    if op == "progress":
        return store.progress(tid, attempt, 0.5, "half")
    if op == "output":
        return store.output(tid, attempt, ["a line"])
    if op == "succeed":
        return store.finish(tid, attempt, TaskState.SUCCEEDED, result={"ok": True})
    if op == "fail":
        return store.finish(tid, attempt, TaskState.FAILED, error={"code": "x", "message": "no"})
    if op == "end_cancelled":
        return store.finish(tid, attempt, TaskState.CANCELLED, reason="cancelled")
    if op == "retry":
        return store.retry_later(tid, attempt, delay=0, error={"code": "x", "message": "again"})
    if op == "lose":
        return store.lose(tid, attempt, detail="killed")[1]
    if op == "stop":
        return store.lose(tid, attempt, stopped=True)[1]
    raise AssertionError(op)


OPS = ["claim", "claim", "cancel", "progress", "output", "succeed", "fail", "end_cancelled",
       "retry", "lose", "stop"]  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2])
def test_a_random_walk_of_every_operation(store, seed):
    rng = random.Random(seed)
    tasks: list[str] = []
    live: set[str] = set()  # not finished: most operations go to these
    for step in range(STEPS):
        if len(live) < 3 or rng.random() < 0.05:
            principal = rng.choice("ab")
            rec, ev = store.create_task(principal=principal, name="walk", args={"step": step},
                                        max_attempts=3, max_lost=rng.choice([1, 2, 3]))  # fmt: skip
            assert ev.type is EventType.QUEUED and ev.seq == store.head(principal)
            tasks.append(rec.id)
            live.add(rec.id)
            continue
        tid = rng.choice(sorted(live) if rng.random() < 0.9 else tasks)
        before = store.get_task(tid)
        op = rng.choice(OPS)
        attempt = before.attempt if rng.random() < 0.85 else rng.choice([0, before.attempt + 1])
        if attempt == before.attempt and before.attempt and rng.random() < 0.1:
            attempt -= 1  # an earlier attempt's late write
        expected = _expected(op, before, attempt)
        head = store.head(before.principal)
        ev = _apply(store, op, before, attempt)
        after = store.get_task(tid)
        if after.state.terminal:
            live.discard(tid)
        where = f"step {step}: {op} attempt {attempt} on {before.state} (attempt {before.attempt})"
        if expected is None:
            assert ev is None, where
            assert after == before, where  # refused: nothing written
            assert store.head(before.principal) == head, where
            continue
        assert ev is not None and ev.type is expected, f"{where}: got {ev}"
        assert ev.seq == head + 1 == store.head(before.principal), where
        assert store.events_after(head, principal=before.principal) == [ev], where
        assert after.state is (STATE_AFTER[ev.type] or before.state), where
        if step % 50 == 0:
            assert_ledger_agrees_with_log(store, before.principal)
    for principal in "ab":
        assert_ledger_agrees_with_log(store, principal)
