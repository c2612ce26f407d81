"""Errors that cross a boundary as values: an HTTP error body or a WebSocket close."""

from __future__ import annotations

from typing import Any


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
    """Raised by a task to fail with a clear message and code (no traceback shown)."""

    def __init__(self, message: str, code: str = "task_failed") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
