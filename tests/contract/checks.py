"""What every contract test may check after any operation, through the public surface
alone: the ledger and the log agree, and a principal's seqs follow each other one by one.

Where a principal's seqs start is the backend's: SQLite's first is 1; Redis starts a new
counter at a floor (its epoch: a log lost with its counters starts above every seq handed
out before). Either way the seqs before the first are reported as pruned
(`pruned_through` is the seq just before it: 0 on SQLite), so a cursor from before is
told to reload, never left with a silent gap. The suite counts from that `origin`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

from services.core.events import STATE_AFTER, TERMINAL_EVENTS, Event, EventType
from services.core.states import TaskState, can_transition

EVERYTHING = 100_000  # a limit no test reaches


def whole_log(store: Any, principal: str, after: int = 0) -> list[Event]:
    """Every event of the principal after `after`, page by page (small pages on purpose:
    the cursor must work between them)."""
    out: list[Event] = []
    while True:
        page = store.events_after(after, principal=principal, limit=7)
        if not page:
            return out
        out += page
        after = page[-1].seq


def origin(store: Any, principal: str) -> int:
    """The seq before the principal's first (0 on SQLite), before anything was pruned."""
    return int(store.pruned_through(principal))


def numbers(events: list[Event], base: int) -> list[int]:
    """The events' seqs counted from `base` (an origin): 1, 2, 3, ..."""
    return [e.seq - base for e in events]


def assert_ledger_agrees_with_log(store: Any, principal: str, *, pruned: bool = False) -> None:
    """The ledger and the log of one principal tell the same story.

    - its seqs strictly increase, and without pruning follow its origin one by one up to
      its head;
    - each task's events (by task_id) are its events in the principal's log, begin with
      "queued", move only along legal transitions, and end in the state the ledger says;
      a finished task has exactly one terminal event, its last;
    - the attempt of the ledger is the number of "started" events, each numbered in turn.
    """
    log = whole_log(store, principal)
    seqs = [e.seq for e in log]
    assert seqs == sorted(set(seqs)), f"seqs not strictly increasing: {seqs}"
    assert all(e.principal == principal for e in log)
    head = store.head(principal)
    if pruned:
        assert head >= (seqs[-1] if seqs else 0)
    else:
        base = origin(store, principal)
        assert seqs == list(range(base + 1, base + len(seqs) + 1)), (
            f"gaps in {principal}'s seqs after its origin {base}: {seqs}"
        )
        assert head == (seqs[-1] if seqs else 0)
    tasks = store.list_tasks(principal, limit=EVERYTHING)
    for rec in tasks:
        events = [e for e in log if e.task_id == rec.id]
        assert store.events_after(0, task_id=rec.id, limit=EVERYTHING) == events
        if pruned and not events:
            continue
        assert events[0].type is EventType.QUEUED, events
        state = TaskState.QUEUED
        starts = 0
        for ev in events[1:]:
            after = STATE_AFTER[ev.type]
            if after is not None:
                assert can_transition(state, after), f"{state} -> {after} by {ev.type}"
                state = after
            if ev.type is EventType.STARTED:
                starts += 1
                assert ev.attempt == ev.data["attempt"] == starts
            else:
                assert ev.attempt == starts, ev
        assert state is rec.state, f"ledger says {rec.state}, log says {state}: {events}"
        assert starts == rec.attempt
        terminal = [e for e in events if e.type in TERMINAL_EVENTS]
        assert len(terminal) == (1 if rec.state.terminal else 0)
        if terminal:
            assert events[-1] is terminal[0]


def dead_owner() -> str:
    """A lease owner naming a process of this host that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return f"{socket.gethostname()}:{proc.stdout.strip()}:dead"


def run_to_the_end(store: Any, principal: str = "a", *, name: str = "demo",
                   state: TaskState = TaskState.SUCCEEDED) -> tuple[str, list[Event]]:  # fmt: skip
    """A task through one attempt (queued, started, progress, its end): its id and events."""
    rec, queued = store.create_task(principal=principal, name=name, args={"n": 1})
    _, started = store.claim(rec.id, "w", 60)
    progress = store.progress(rec.id, 1, 0.5, "half")
    if state is TaskState.SUCCEEDED:
        end = store.finish(rec.id, 1, state, result={"answer": 42})
    elif state is TaskState.FAILED:
        end = store.finish(rec.id, 1, state, error={"code": "x", "message": "no"})
    else:
        end = store.finish(rec.id, 1, state, reason="cancelled")
    return rec.id, [queued, started, progress, end]
