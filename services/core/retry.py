"""When a failed attempt is tried again: the backoff between attempts, and what a retry says.

Pure, so the worker (which decides), the store (which records) and every client (which
shows it) agree. A task declares how many times a failure is retried (`retries`), which
errors count (`retry_on`) and its `Backoff`; a task may also name the delay itself
(`TaskFailure(..., retry_after=S)`). Attempts lost because the process running them died are
counted apart from failures, against their own limit (the worker's `max_attempts`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

MAX_TIMEOUT = 7 * 24 * 3600.0  # the longest time limit anyone may set (a week)
DEFAULT_CANCEL_GRACE = 5.0  # seconds a cancelled attempt has to stop before it is killed


class RetryReason(StrEnum):
    """Why a task is queued again (the `reason` of a "retrying" event)."""

    FAILED = "failed"  # the attempt failed with a retryable error
    REQUESTED = "requested"  # the task asked for another attempt
    WORKER_LOST = "worker_lost"  # the process running it died
    WORKER_STOPPED = "worker_stopped"  # the worker stopped cleanly and gave it back

    @property
    def charged(self) -> bool:
        """Whether the attempt counts against the task's `retries` (its own failure)."""
        return self in (RetryReason.FAILED, RetryReason.REQUESTED)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: the n-th retry waits about `base * factor**(n-1)`
    seconds, at most `maximum`, less a random part of up to `jitter` of it (so many tasks
    failing together do not all come back at the same moment).

    Args:
        base: seconds before the first retry.
        factor: growth per retry.
        maximum: the longest wait.
        jitter: the fraction (0..1) of each wait that is random.
    """

    base: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if not (self.base >= 0 and self.factor >= 1 and self.maximum >= self.base
                and 0 <= self.jitter <= 1):  # fmt: skip
            raise ValueError(f"invalid backoff: {self}")

    def ceiling(self, retry: int) -> float:
        """The wait before retry number `retry` (1 for the first) without jitter."""
        try:
            value = self.base * self.factor ** max(0, retry - 1)
        except OverflowError:
            return self.maximum
        return min(self.maximum, value)

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number `retry`: in [ceiling * (1 - jitter), ceiling]."""
        top = self.ceiling(retry)
        return top * (1 - self.jitter * rand())

    def to_json(self) -> dict[str, float]:
        return {"base": self.base, "factor": self.factor, "maximum": self.maximum,
                "jitter": self.jitter}  # fmt: skip


def retry_message(reason: str, error_message: str | None = None) -> str:
    """The task's `message` while it waits for its next attempt (ledger and clients alike)."""
    if reason == RetryReason.WORKER_LOST:
        return "Worker lost; retrying"
    if reason == RetryReason.WORKER_STOPPED:
        return "Worker stopped; will run again"
    return f"Will retry: {error_message}" if error_message else "Will retry"


def format_seconds(seconds: float) -> str:
    """A time limit or a delay for people: "0.5 s", "30 s", "2 min", "1 h 30 min"."""
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
