"""Task events: the one place where event type names are defined."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.core.states import TaskState


class EventType(StrEnum):
    """What happened to a task. Each is appended to the event log with a sequence number."""

    QUEUED = "queued"  # accepted; data: name, args
    STARTED = "started"  # an attempt began; data: attempt
    PROGRESS = "progress"  # data: fraction (0..1 or None), message
    OUTPUT = "output"  # data: lines (list of str)
    CANCEL_REQUESTED = "cancel_requested"  # a running task was asked to stop
    RETRYING = "retrying"  # queued again; data: reason, next_attempt, delay, at, error?
    SUCCEEDED = "succeeded"  # data: result
    FAILED = "failed"  # data: error {code, message, traceback?}
    CANCELLED = "cancelled"  # data: reason


# The state a task is in after an event of this type (None: the state does not change).
STATE_AFTER: dict[EventType, TaskState | None] = {
    EventType.QUEUED: TaskState.QUEUED,
    EventType.STARTED: TaskState.RUNNING,
    EventType.PROGRESS: None,
    EventType.OUTPUT: None,
    EventType.CANCEL_REQUESTED: None,
    EventType.RETRYING: TaskState.QUEUED,
    EventType.SUCCEEDED: TaskState.SUCCEEDED,
    EventType.FAILED: TaskState.FAILED,
    EventType.CANCELLED: TaskState.CANCELLED,
}

TERMINAL_EVENTS = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


@dataclass(frozen=True, slots=True)
class Event:
    """One durable task event.

    Args:
        seq: the principal's own sequence number: 1, 2, 3, ... over its events alone,
            assigned when recorded (events recorded before schema 4 keep their old log
            position, so a principal's seqs may have gaps). It says nothing of other
            principals. This is the `seq` of the wire, the API and every cursor.
        task_id: the task it is about.
        principal: the task's owner; only that principal may see the event.
        type: what happened.
        ts: Unix time when it was recorded.
        attempt: which attempt of the task it belongs to (0 before the first start).
        data: type-specific details, JSON-serialisable.
        log_pos: its position in the whole log (all principals), for the notifier's own
            fan-out; never sent to a client (0 where unknown, e.g. decoded from the wire).
    """

    seq: int
    task_id: str
    principal: str
    type: EventType
    ts: float
    attempt: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    log_pos: int = field(default=0, compare=False)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS
