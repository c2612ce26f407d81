"""What a running task is handed: report progress, emit output, check for cancellation,
register what to remove if it is killed, ask for a retry.

`TaskContext` keeps what it was told in memory, which is all a test of a task needs; the
executor's subclass sends each report to the dispatcher, which records it in the event log.
Progress reports are merged so that at most `progress_interval` seconds pass between
recorded ones (the last one always counts when the task ends); output lines are grouped
the same way, and a line longer than MAX_LINE characters is split.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from services.core.errors import TaskCancelled, TaskFailure

MAX_LINE = 64 * 1024  # characters of one output line; longer ones are split
MAX_PENDING_LINES = 1000  # lines held before they are sent even within progress_interval


class TaskContext:
    """Handed to every task function as its first argument.

    Args:
        task_id: the task's id.
        attempt: which attempt this is (1 for the first run).
        progress_interval: minimum seconds between two recorded progress reports.

    Task authors call `progress()`, `output()`, `check_cancelled()` and `sleep()`; each of
    `progress()`, `check_cancelled()` and `sleep()` is a checkpoint that raises
    `TaskCancelled` once cancellation was requested, so a task stops cleanly there. A task
    that does not reach a checkpoint in time is killed with everything it started; what
    it registered with `temp_path()` is then removed for it.

    Attributes:
        timeout: this attempt's time limit in seconds, or None.
        temp_paths: the paths registered with `temp_path()` and not yet kept.
    """

    def __init__(self, task_id: str = "local", attempt: int = 1,
                 progress_interval: float = 0.1, timeout: float | None = None) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.progress_interval = progress_interval
        self.timeout = timeout
        self._started = time.monotonic()
        self.temp_paths: set[str] = set()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._last_flush = 0.0
        self._pending_progress: tuple[float | None, str | None] | None = None
        self._pending_lines: list[str] = []
        self.last_progress: tuple[float | None, str | None] | None = None
        # Everything recorded, in order: ("progress", (fraction, message)) / ("output", [lines])
        self.reports: list[tuple[str, Any]] = []

    # -------------------------------------------------------------- for tasks

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested. Looking is also when output held back for
        `progress_interval` is sent: a program that prints one line and then goes quiet
        shows it now, not when it ends."""
        self._flush_due()
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """A checkpoint: raise TaskCancelled if cancellation was requested (and send output
        held back long enough)."""
        self._flush_due()
        if self._cancel.is_set():
            raise TaskCancelled()

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once (with TaskCancelled) if cancellation is requested."""
        if self._cancel.wait(max(0.0, seconds)):
            raise TaskCancelled()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block until cancellation is requested (True) or the timeout passes (False)."""
        return self._cancel.wait(timeout)

    def progress(self, fraction: float | None, message: str | None = None) -> None:
        """Report progress: `fraction` in 0..1 (None when unknown) and a short message.

        Also a checkpoint (raises TaskCancelled when cancelled).
        """
        if fraction is not None:
            fraction = min(1.0, max(0.0, float(fraction)))
        with self._lock:
            self._pending_progress = (fraction, message)
        self._maybe_flush()
        self.check_cancelled()

    def output(self, line: str) -> None:
        """Emit one line of output (without its newline)."""
        line = str(line)
        with self._lock:
            if len(line) <= MAX_LINE:
                self._pending_lines.append(line)
            else:
                self._pending_lines.extend(line[i:i + MAX_LINE]
                                           for i in range(0, len(line), MAX_LINE))  # fmt: skip
            full = len(self._pending_lines) >= MAX_PENDING_LINES
        if full:
            self.flush()
        else:
            self._maybe_flush()

    def time_left(self) -> float | None:
        """Seconds until this attempt's time limit, or None without one."""
        if self.timeout is None:
            return None
        return max(0.0, self.timeout - (time.monotonic() - self._started))

    def temp_path(self, path: str) -> str:
        """Register a file or folder the task is about to create and that must not outlive
        it if the attempt is killed; returns `path`. Call `keep(path)` once it is complete
        (or removed by the task itself)."""
        path = str(path)
        with self._lock:
            self.temp_paths.add(path)
        self._record_cleanup(path, True)
        return path

    def keep(self, path: str) -> None:
        """`path` no longer needs removing if the attempt is killed."""
        path = str(path)
        with self._lock:
            if path not in self.temp_paths:
                return
            self.temp_paths.discard(path)
        self._record_cleanup(path, False)

    def retry(self, after: float | None = None, reason: str = "asked for a retry") -> None:
        """End this attempt and ask for another one, `after` seconds from now (None: as the
        task's backoff says), within the task's `retries`. Never returns."""
        raise TaskFailure(reason, code="retry_requested", retry=True, retry_after=after)

    # ---------------------------------------------------------- for the worker

    def request_cancel(self) -> None:
        """Ask the task to stop at its next checkpoint."""
        self._cancel.set()

    def flush(self) -> None:
        """Record whatever is pending now (called by the worker when the task ends)."""
        with self._lock:
            progress, self._pending_progress = self._pending_progress, None
            lines, self._pending_lines = self._pending_lines, []
            self._last_flush = time.monotonic()
        if lines:
            self.reports.append(("output", lines))
            self._record_output(lines)
        if progress is not None:
            self.last_progress = progress
            self.reports.append(("progress", progress))
            self._record_progress(*progress)

    def _flush_due(self) -> None:
        if self._pending_lines or self._pending_progress is not None:
            self._maybe_flush()

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.progress_interval:
            self.flush()

    def _record_progress(self, fraction: float | None, message: str | None) -> None:
        """Hook: record one progress report (the worker writes it to the event log)."""

    def _record_output(self, lines: list[str]) -> None:
        """Hook: record output lines (the worker writes them to the event log)."""

    def _record_cleanup(self, path: str, add: bool) -> None:
        """Hook: a path was registered for removal (add) or kept (not add)."""
