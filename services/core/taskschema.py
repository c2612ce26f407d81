"""The task as the HTTP API shows it, defined once: its fields in order, each with its JSON
Schema and the value a task has before its first event says more.

Derived from this: the OpenAPI document's `Task` schema (`services.web.openapi`), the web's
`task_json` (which must give exactly these fields: it checks itself against `FIELD_NAMES`
when imported), and the clients' `taskview.new_task`. A test holds all three equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.core.states import TaskState

NULLABLE_TIME: dict[str, Any] = {"type": ["string", "null"], "format": "date-time"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
LINK_NAMES = ("self", "cancel", "events")


@dataclass(frozen=True, slots=True)
class TaskField:
    """One member of the task JSON."""

    name: str
    schema: dict[str, Any]
    initial: Any = None  # in a queued task built from its "queued" event


TASK_FIELDS: tuple[TaskField, ...] = (
    TaskField("id", {"type": "string"}),
    TaskField("task", {"type": "string", "description": "The task's name in the catalog"}),
    TaskField("args", {"type": "object"}),
    TaskField("state", {"type": "string", "enum": [s.value for s in TaskState]},
              TaskState.QUEUED.value),  # fmt: skip
    TaskField("progress", {"type": ["number", "null"], "description": "0..1, or null if unknown"}),
    TaskField("message", {"type": ["string", "null"]}),
    TaskField("result", {"description": "The task's result once it succeeded (any JSON)"}),
    TaskField("error", {"type": ["object", "null"]}),
    TaskField("attempt", {"type": "integer", "minimum": 0,
                          "description": "The current or last attempt (1 for the first run)"},
              0),  # fmt: skip
    TaskField("max_attempts", {"type": "integer", "minimum": 1, "description":
                               "Attempts it may get: 1 + its retries, plus attempts re-run "
                               "because their process was lost or stopped"}),  # fmt: skip
    TaskField("lost_attempts", {"type": "integer", "minimum": 0, "description":
                                "Attempts lost with their process (it fails worker_lost after "
                                "the worker's limit)"}, 0),  # fmt: skip
    TaskField("next_attempt_at", {**NULLABLE_TIME, "description":
                                  "When a retry waiting for its time runs (state queued)"}),
    TaskField("timeout", {"type": ["number", "null"], "exclusiveMinimum": 0,
                          "description": "Each attempt's time limit in seconds, if any"}),
    TaskField("cancel_requested", {"type": "boolean"}, False),
    TaskField("created_at", _TIME),
    TaskField("started_at", NULLABLE_TIME),
    TaskField("finished_at", NULLABLE_TIME),
    TaskField("updated_at", _TIME),
    TaskField("links", {
        "type": "object",
        "required": list(LINK_NAMES),
        "properties": {k: {"type": "string"} for k in LINK_NAMES},
    }),  # fmt: skip
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in TASK_FIELDS)


def task_links(task_id: str) -> dict[str, str]:
    """The `links` of a task: its URL, its cancel URL and its events URL."""
    self_link = "/api/tasks/" + task_id
    return {"self": self_link, "cancel": self_link + "/cancel", "events": self_link + "/events"}


def task_schema() -> dict[str, Any]:
    """The JSON Schema of a task (the OpenAPI document's `Task`): every field is required."""
    return {
        "type": "object",
        "required": list(FIELD_NAMES),
        "properties": {f.name: dict(f.schema) for f in TASK_FIELDS},
    }


def initial_task() -> dict[str, Any]:
    """Every field at its initial value (the caller fills in id, task, args, times, links)."""
    return {f.name: f.initial for f in TASK_FIELDS}
