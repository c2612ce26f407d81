"""What every client says about attempts, retries, time limits and cancels, in words.

One wording for the command line and the desktop app (its table, detail pane and timeline).
Inputs are the API's task dicts, catalog entries and events; pure.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

from services.core.events import Event
from services.core.retry import DEFAULT_CANCEL_GRACE, MAX_TIMEOUT, format_seconds
from services.core.taskview import parse_time


def attempt_text(attempt: int, max_attempts: int | None) -> str:
    """"2 of 3"; just "2" while the number of attempts is not known."""
    return f"{attempt} of {max_attempts}" if max_attempts else str(attempt)


def waiting_attempt(task: dict[str, Any]) -> int | None:
    """The attempt a task that is queued again after an attempt (a retry, a lost worker)
    runs next; None for a task that is not waiting to be tried again."""
    attempt = task.get("attempt") or 0
    if task.get("state") != "queued" or attempt < 1:
        return None
    return int(attempt) + 1


def retry_in(task: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds until a task waiting for a retry's time runs again (0 once it is due); None
    when it waits for no time (not waiting, or queued again to run at once)."""
    if task.get("state") != "queued":
        return None
    at = parse_time(task.get("next_attempt_at"))
    if at is None:
        return None
    return max(0.0, at - (time.time() if now is None else now))


def countdown(seconds: float) -> str:
    """A wait shown once a second, in whole seconds: "in 8 s", "in 2 min", "now"."""
    whole = math.ceil(seconds - 0.05)  # a tick that lands just late still reads "8 s"
    return f"in {format_seconds(whole)}" if whole > 0 else "now"


def attempt_line(task: dict[str, Any], now: float | None = None) -> str:
    """A task's attempts for people: "1 of 3"; "2 of 3, next try in 8 s (at 14:03:07)"
    while a retry waits for its time; "0 of 3 (not started yet)"."""
    most = task.get("max_attempts")
    waiting = waiting_attempt(task)
    if waiting is None:
        attempt = task.get("attempt") or 0
        text = attempt_text(attempt, most)
        return text + " (not started yet)" if attempt == 0 else text
    text = attempt_text(waiting, most)
    wait = retry_in(task, now)
    if wait is None:
        return f"{text}, queued again"
    at = (time.time() if now is None else now) + wait
    clock = datetime.fromtimestamp(at).strftime("%H:%M:%S")
    return f"{text}, next try {countdown(wait)} (at {clock})"


def cancel_text(grace: float | None) -> str:
    """What cancelling a running task does, given its catalog entry's `cancel_grace`."""
    if grace is None:
        return ("asked to stop; it stops at its next checkpoint, or is stopped by force if it "
                "does not stop in time")  # fmt: skip
    if grace <= 0:
        return "stopped by force now (this task gets no time to stop at a checkpoint)"
    return (f"asked to stop; if it does not stop at a checkpoint within "
            f"{format_seconds(grace)} it is stopped by force")  # fmt: skip


def error_text(error: Any) -> str:
    """A failed attempt's error in a few words: "timed out after 30 s", or its message."""
    if not isinstance(error, dict):
        return "unknown error"
    limit = error.get("timeout")
    if error.get("code") == "timeout" and isinstance(limit, int | float) and limit > 0:
        return f"timed out after {format_seconds(limit)}"
    return str(error.get("message") or error.get("code") or "unknown error")


def failure_text(task: dict[str, Any]) -> str:
    """Why a failed task failed: "task timed out after 30 s; the attempt was stopped",
    "task failed after 3 attempts: disk busy"."""
    error = task.get("error")
    attempts = task.get("attempt") or 0
    after = f" after {attempts} attempts" if attempts > 1 else ""
    if isinstance(error, dict) and error.get("code") == "timeout":
        return f"task {error_text(error)}{after}; the attempt was stopped"
    return f"task failed{after}: {error_text(error)}"


def retry_text(event: Event) -> str:
    """What a "retrying" event says: "attempt 1 failed: disk busy; retrying in 8 s (attempt
    2 of 3)", "worker lost (killed by SIGSEGV); retrying (attempt 2 of 4)"."""
    data = event.data
    reason = data.get("reason")
    upcoming = data.get("next_attempt") or event.attempt + 1
    of = attempt_text(upcoming, data.get("max_attempts"))
    delay = data.get("delay")
    retrying = (f"retrying in {format_seconds(delay)}"
                if isinstance(delay, int | float) and delay > 0 else "retrying")  # fmt: skip
    if reason == "worker_lost":
        detail = data.get("detail")
        return f"worker lost{f' ({detail})' if detail else ''}; {retrying} (attempt {of})"
    if reason == "worker_stopped":
        return f"the worker stopped; the task runs again when it is back (attempt {of})"
    error = error_text(data.get("error"))
    why = "asked to be tried again" if reason == "requested" else "failed"
    return f"attempt {event.attempt} {why}: {error}; {retrying} (attempt {of})"


def event_text(event: Event) -> str | None:
    """One sentence for the events people read about (started, cancel_requested, retrying,
    failed, cancelled); None for the others."""
    data = event.data
    etype = event.type.value
    if etype == "started":
        text = f"attempt {data.get('attempt', event.attempt)} started"
        limit = data.get("timeout")
        if isinstance(limit, int | float) and limit > 0:
            text += f" (time limit {format_seconds(limit)})"
        return text
    if etype == "cancel_requested":
        return "asked to stop"
    if etype == "retrying":
        return retry_text(event)
    if etype == "failed":
        error = data.get("error")
        if isinstance(error, dict) and error.get("code") == "timeout":
            return f"{error_text(error)}; the attempt was stopped"
        return f"failed: {error_text(error)}"
    if etype == "cancelled":
        return str(data.get("reason") or "cancelled")
    return None


def limits_text(spec: dict[str, Any]) -> str:
    """A catalog entry's time limit, retries and limits, those it sets: "time limit 30 s
    (up to 1 h), 2 retries, memory 512 MB, 1 at a time"; "" when it sets none."""
    parts = []
    limit, most = spec.get("timeout"), spec.get("max_timeout")
    if not isinstance(most, int | float):
        most = MAX_TIMEOUT
    capped = most < MAX_TIMEOUT
    if isinstance(limit, int | float):
        parts.append(f"time limit {format_seconds(limit)}"
                     + (f" (up to {format_seconds(most)})" if capped and most != limit else ""))
    elif capped:
        parts.append(f"time limit up to {format_seconds(most)}")
    retries = spec.get("retries") or 0
    if retries:
        parts.append(f"{retries} {'retry' if retries == 1 else 'retries'}")
    if spec.get("memory_limit"):
        parts.append(f"memory {spec['memory_limit']} MB")
    if spec.get("concurrency"):
        parts.append(f"{spec['concurrency']} at a time")
    grace = spec.get("cancel_grace")
    if isinstance(grace, int | float) and grace != DEFAULT_CANCEL_GRACE:
        parts.append(f"{format_seconds(grace)} to stop when cancelled")
    return ", ".join(parts)
