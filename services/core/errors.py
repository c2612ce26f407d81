"""Errors that cross a boundary as values: an HTTP error body or a WebSocket close."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The codes of a failed task's `error` that Herald itself chooses (a task's own
    `TaskFailure` may use any other code)."""

    TASK_FAILED = "task_failed"  # a TaskFailure without a code of its own
    EXCEPTION = "exception"  # the task raised something else (with its traceback)
    BAD_RESULT = "bad_result"  # the task returned something that is not JSON
    UNKNOWN_TASK = "unknown_task"  # the worker has no task of that name
    TIMEOUT = "timeout"  # its time limit passed; the attempt was stopped
    MEMORY_LIMIT = "memory_limit"  # it needed more memory than its limit
    WORKER_LOST = "worker_lost"  # the process running it died too many times
    SANDBOX = "sandbox_failed"  # its process could not be confined, so it did not run
    EXIT_STATUS = "exit_status"  # a program it ran exited with a code it does not accept


class HeraldError(Exception):
    """An error with a stable machine-readable code, a message and an HTTP status.

    Args:
        code: stable identifier, e.g. "validation_failed".
        message: human-readable explanation.
        status: the HTTP status it maps to.
        fields: per-field messages, for validation errors.
    """

    def __init__(
        self, code: str, message: str, status: int = 400, fields: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields

    def to_body(self) -> dict[str, Any]:
        """The JSON error body: {"error": {"code", "message", "fields"?}}."""
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            err["fields"] = self.fields
        return {"error": err}


class ValidationFailed(HeraldError):
    """Task arguments do not match the task's declared parameters (HTTP 422)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(
            "validation_failed", "Some arguments are not valid for this task.", 422, fields
        )


class TaskCancelled(Exception):
    """Raised inside a task at a checkpoint when its cancellation was requested."""


class TaskFailure(Exception):
    """Raised by a task to fail with a clear message and code (no traceback shown).

    Args:
        message: what went wrong, for people.
        code: a stable identifier for programs.
        retry: ask for another attempt (within the task's `retries`); by default a
            TaskFailure is final, unless its class is named in the task's `retry_on`.
        retry_after: seconds to wait before that attempt (implies `retry`); None: the
            task's backoff decides.
        detail: JSON-able facts for programs and the detail pane (the error's `detail`),
            e.g. a program's exit code and its last output lines.
    """

    def __init__(self, message: str, code: str = ErrorCode.TASK_FAILED, *,
                 retry: bool = False, retry_after: float | None = None,
                 detail: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.detail = detail
        self.retry_after = retry_after
        self.retry = retry or retry_after is not None


class StorageFull(HeraldError):
    """Nothing could be recorded: the data disk is full, or failed the write (HTTP 507
    Insufficient Storage). Nothing was done; the same request can succeed later.

    Args:
        code: "disk_full" (no room) or "storage_error" (the disk failed the write).
    """

    def __init__(self, code: str = "disk_full") -> None:
        if code == "disk_full":
            message = ("Herald's data disk is full: nothing was recorded. Free some space "
                       "and try again.")  # fmt: skip
        else:
            message = ("Herald's data disk failed a write: nothing was recorded. Try again "
                       "later.")  # fmt: skip
        super().__init__(code, message, 507)
