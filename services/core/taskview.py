"""The client-side view of a task: a task dict (the HTTP API's task JSON) kept current by events.

Every client (the desktop model, the command line, a test) holds tasks as the dicts the API
returns and applies the events the notifier pushes with `apply_event`, so they all agree on
what an event does to a task. The rules mirror the ledger's writes in `services.store`: a
task reloaded from the API after some events looks the same as one kept current by them.

Which events a dict already reflects is tracked by its "seq" key: the seq of the last event
applied, or None for a dict taken from the API (a snapshot). Events with a seq at or below
it are duplicates. A snapshot knows no seq, so it is judged by its attempt and its time
instead: an event of an earlier attempt, or recorded before the snapshot's `updated_at`, is
already in it. A finished task reflects every event of its own (it never changes again).

Also the small formatting helpers every client needs to show a task on one line.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from services.core.events import STATE_AFTER, Event, EventType
from services.core.retry import format_seconds, retry_message
from services.core.states import TERMINAL_STATES, TaskState
from services.core.taskschema import initial_task, task_links

# The messages the ledger writes itself (services.store), so a reload shows the same text.
CANCELLED_MESSAGE = "Cancelled"
CANCELLED_QUEUED_MESSAGE = "Cancelled before it started"


def cancelled_message(data: dict[str, Any]) -> str:
    """The message of a task that was cancelled while running, by its "cancelled" event's
    data: "Stopped by force after 5 s" when it had to be killed."""
    grace = data.get("grace")
    if data.get("forced") and isinstance(grace, int | float):
        return f"Stopped by force after {format_seconds(grace)}"
    return CANCELLED_MESSAGE

# Keys a later snapshot can fill in on a dict built from events, which never carry them.
_STATIC_KEYS = ("task", "args", "max_attempts", "created_at", "links")

_ELLIPSIS = "…"


def iso(ts: float | None) -> str | None:
    """Unix time as the API writes it: ISO 8601 UTC with milliseconds, e.g. ...T12:00:00.000Z."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(text: str | None) -> float | None:
    """Unix time of an ISO 8601 string ("...Z" or "+00:00"); None for None or garbage."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def is_terminal(state: str | TaskState | None) -> bool:
    """Whether a task in this state is finished (succeeded, failed or cancelled)."""
    return state in TERMINAL_STATES


def new_task(task_id: str, name: str, args: dict[str, Any], ts: float,
             timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
    """A queued task dict with the API's keys, as a "queued" event at `ts` describes it."""
    when = iso(ts)
    task = initial_task()
    task.update(id=task_id, task=name, args=args, timeout=timeout, created_at=when,
                updated_at=when, links=task_links(task_id))  # fmt: skip
    task["seq"] = None
    return task


def is_stale(task: dict[str, Any], event: Event) -> bool:
    """Whether `task` already reflects `event` (or anything later), so applying it is wrong."""
    state = task.get("state")
    if is_terminal(state):
        return True
    seq = task.get("seq")
    if seq is not None:
        return event.seq <= seq
    # A snapshot. Its attempt orders events without clocks: an event of an earlier attempt,
    # the task's creation and the start (or loss) of the attempt it shows are all in it.
    attempt = task.get("attempt") or 0
    if event.attempt < attempt or event.type is EventType.QUEUED:
        return True
    if event.type is EventType.STARTED and event.attempt <= attempt:
        return True  # the start that counted this attempt
    if event.type is EventType.RETRYING and state == TaskState.QUEUED.value:
        return event.attempt <= attempt
    # Otherwise by time. updated_at is cut to milliseconds, so an event of that very write
    # is not older than it and is applied again, which changes nothing.
    updated = parse_time(task.get("updated_at"))
    return updated is not None and event.ts < updated


def apply_event(task: dict[str, Any] | None, event: Event) -> dict[str, Any] | None:
    """The task after `event`.

    Args:
        task: the task dict, or None if the client does not know the task yet.
        event: an event of that task.

    Returns:
        A new dict when the event applies; `task` itself (the same object) when it is
        stale; None when the task is unknown and the event is not the "queued" event that
        describes it (the client should fetch the task from the API).
    """
    data = event.data
    if task is None:
        if event.type is not EventType.QUEUED:
            return None
        timeout = data.get("timeout")
        new = new_task(event.task_id, str(data.get("name", "")), dict(data.get("args") or {}),
                       event.ts, timeout if isinstance(timeout, int | float) else None)
        most = data.get("max_attempts")
        if isinstance(most, int) and not isinstance(most, bool) and most > 0:
            new["max_attempts"] = most
        new["seq"] = event.seq
        return new
    if is_stale(task, event):
        return task
    new = dict(task)
    new["seq"] = event.seq
    when = iso(event.ts)
    etype = event.type
    if event.attempt > (new.get("attempt") or 0):
        new["attempt"] = event.attempt
    if etype is EventType.OUTPUT:
        return new  # the ledger keeps no output and does not touch updated_at for it
    new["updated_at"] = when
    if etype is EventType.QUEUED:
        new["task"] = new.get("task") or str(data.get("name", ""))
        if new.get("args") is None:
            new["args"] = dict(data.get("args") or {})
    elif etype is EventType.STARTED:
        new.update(progress=None, message=None, result=None, error=None, started_at=when,
                   finished_at=None, next_attempt_at=None)  # fmt: skip
        new["attempt"] = int(data.get("attempt") or new.get("attempt") or 0)
    elif etype is EventType.PROGRESS:
        new["progress"] = data.get("fraction")
        new["message"] = data.get("message")
    elif etype is EventType.CANCEL_REQUESTED:
        new["cancel_requested"] = True
    elif etype is EventType.RETRYING:
        error = data.get("error")
        new["error"] = error if isinstance(error, dict) else None
        new["message"] = retry_message(str(data.get("reason", "")),
                                       error.get("message") if isinstance(error, dict) else None)
        at = data.get("at")
        new["next_attempt_at"] = iso(at) if isinstance(at, int | float) else None
        for key in ("max_attempts", "lost_attempts"):
            if isinstance(data.get(key), int):
                new[key] = data[key]
    elif etype is EventType.SUCCEEDED:
        new.update(result=data.get("result"), error=None, progress=1.0, finished_at=when)
    elif etype is EventType.FAILED:
        error = data.get("error")
        new["error"] = error
        new["message"] = error.get("message") if isinstance(error, dict) else None
        new["finished_at"] = when
    elif etype is EventType.CANCELLED:
        if task.get("state") == TaskState.QUEUED.value:
            new["message"] = CANCELLED_QUEUED_MESSAGE
            new["cancel_requested"] = True
        else:
            new["message"] = cancelled_message(data)
        new["finished_at"] = when
    state = STATE_AFTER[etype]
    if state is not None:
        new["state"] = state.value
    return new


def merge_snapshot(current: dict[str, Any] | None, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The task after the API returned `snapshot` of it, `current` being what the client had.

    The snapshot wins when it is newer (a later `updated_at`, or finished while `current` is
    not); otherwise `current` stays, with the keys events never carry filled in from it.
    """
    if current is None:
        new = dict(snapshot)
        new["seq"] = None
        return new
    cur_done, snap_done = is_terminal(current.get("state")), is_terminal(snapshot.get("state"))
    cur_updated = parse_time(current.get("updated_at"))
    snap_updated = parse_time(snapshot.get("updated_at"))
    newer = snap_updated is not None and (cur_updated is None or snap_updated > cur_updated)
    if not cur_done and (snap_done or newer):
        new = dict(snapshot)
        new["seq"] = None
        return new
    new = dict(current)
    for key, value in snapshot.items():
        if key not in new or (key in _STATIC_KEYS and new[key] is None):
            new[key] = value
    return new


def duration(task: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds from start to finish, or to `now` (default: the clock) while running.

    None when the task never started, or waits for a retry.
    """
    start = parse_time(task.get("started_at"))
    if start is None:
        return None
    end = parse_time(task.get("finished_at"))
    if end is None:
        if task.get("state") != TaskState.RUNNING.value:
            return None
        end = time.time() if now is None else now
    return max(0.0, end - start)


def format_duration(seconds: float | None) -> str:
    """A duration for a table cell: "0.4 s", "42 s", "3 min 4 s", "2 h 5 min"; "" for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def format_submitted(text: str | None, now: float | None = None) -> str:
    """A submission time in local time: "15:25:36" if it is today, else "2026-11-26 15:25"."""
    ts = parse_time(text)
    if ts is None:
        return ""
    when = datetime.fromtimestamp(ts).astimezone()
    today = datetime.fromtimestamp(time.time() if now is None else now).astimezone().date()
    if when.date() == today:
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M")


def shorten(text: str, width: int) -> str:
    """`text` cut to at most `width` characters, ending in an ellipsis when cut."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + _ELLIPSIS


def summarize_result(result: Any, width: int = 40) -> str:
    """A one-line summary of a task result for a table cell.

    42 -> "42"; a text -> its first line; an object with a "path" -> the file or folder
    name ({"path": "/x/y.zip", ...} -> "y.zip"); anything else -> compact JSON. Cut to
    `width` characters with an ellipsis.
    """
    if result is None:
        return ""
    if isinstance(result, str):
        lines = result.strip().splitlines()
        text = lines[0] if lines else ""
        if len(lines) > 1:
            text += " " + _ELLIPSIS
        return shorten(text, width)
    if isinstance(result, dict) and isinstance(result.get("path"), str) and result["path"]:
        path = result["path"].rstrip("/\\") or result["path"]
        return shorten(path.replace("\\", "/").rsplit("/", 1)[-1], width)
    try:
        text = json.dumps(result, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(result)
    return shorten(text, width)
