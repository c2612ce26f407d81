"""The OpenAPI 3.1 document of the HTTP API, built from the routes' contract and the catalog.

The submit body is a `oneOf` over the catalog's tasks, discriminated by `task`, each with
its own `args` schema: `services.core.params.args_schema`, the one the catalog serves as
each task's `schema`. A test holds the document's paths and methods equal to the aiohttp
router's routes.
"""

from __future__ import annotations

import re
from typing import Any

from services.core.events import EventType
from services.core.params import JSON_SCHEMA_DIALECT, Param, args_schema
from services.core.search import MAX_QUERY_CHARS
from services.core.states import TaskState
from services.core.taskschema import task_schema
from services.tasks.catalog import Catalog, TaskSpec

MAX_CURSOR = 2**62  # the largest `before`/`after` the API takes (SQLite's integers)

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


def _response(
    description: str, schema: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _content(_ref(schema))}
    if headers:
        out["headers"] = headers
    return out


def _errors(*statuses: int) -> dict[str, Any]:
    """Error responses: the given statuses plus the ones every route can answer."""
    texts = {
        400: "Bad request: malformed body, query (a search it cannot understand) or "
             "header, or a Host, Origin or Authorization header given twice (code "
             "bad_request)",
        401: "Missing or invalid bearer token (code unauthorized)",
        403: "Host, Origin or an absolute-form request target refused (code forbidden_host "
             "/ forbidden_origin); on a submit, also a task or a folder the caller may not "
             "use (code forbidden, naming the capability it lacks: task:NAME, read:PATH or "
             "write:PATH, with fields)",
        408: "The request head or body did not arrive within 10 s (code request_timeout)",
        404: "Not found (code not_found / unknown_task)",
        409: "Conflict (code already_finished / idempotency_conflict)",
        413: "Body over 1 MiB (code too_large)",
        414: "The request line is over 8190 bytes (code uri_too_long)",
        415: "Body is not application/json, or has no Content-Type (code "
             "unsupported_media_type)",
        422: "Task arguments or timeout are not valid (code validation_failed, with "
             "fields), e.g. a path in Herald's own files, which no task may touch",
        431: "A header line is over 8191 bytes (code header_too_large)",
        500: "Unexpected server error (code internal)",
        503: "Every connection the server allows is busy (code too_many_connections)",
        507: "The data disk is full, or failed the write: nothing was recorded; the same "
             "request can succeed later (code disk_full / storage_error)",
    }
    out: dict[str, Any] = {}
    # What any request can get, before it reaches its route (the guard, the HTTP parser,
    # the connection cap).
    for status in sorted({*statuses, 400, 403, 414, 431, 500, 503}):
        out[str(status)] = _response(texts[status], "Error")
    if 401 in statuses:
        out["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out


_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_TASK_ID_OR_PREFIX = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "description": "The task's id, or a unique prefix of it: 4 to 31 hex digits (a shorter "
                   "one is a 400)",  # fmt: skip
    "schema": {"type": "string", "minLength": 4},
}
_LOCATION = {"Location": {"description": "The task's URL", "schema": {"type": "string"}}}
_HEALTH_STATUS = {"type": "string", "enum": ["ok", "degraded", "disk_full", "storage_error"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "task": _ref("Task"),
            "candidates": {"type": "array", "items": {"type": "string"},
                           "description": "ambiguous_id: the ids the prefix matches"},  # fmt: skip
        },
    },
    "Task": task_schema(),  # defined once, in services.core.taskschema
    "TaskList": {
        "type": "object",
        "required": ["tasks", "next"],
        "properties": {
            "tasks": {"type": "array", "items": _ref("Task")},
            "next": {"type": ["string", "null"], "description": "The next page, if any"},
        },
    },
    "Event": {
        "type": "object",
        "description": "Exactly the WebSocket event envelope ('ts' is Unix time).",
        "required": ["v", "type", "seq", "task", "event", "ts", "attempt", "data"],
        "properties": {
            "v": {"const": 1},
            "type": {"const": "event"},
            "seq": {"type": "integer", "minimum": 1},
            "task": {"type": "string"},
            "event": {"type": "string", "enum": [e.value for e in EventType]},
            "ts": {"type": "number"},
            "attempt": {"type": "integer", "minimum": 0},
            "data": {"type": "object"},
        },
    },
    "EventList": {
        "type": "object",
        "required": ["task", "events", "next"],
        "properties": {
            "task": {"type": "string"},
            "events": {"type": "array", "items": _ref("Event")},
            "next": {"type": ["string", "null"]},
        },
    },
    "Catalog": {
        "type": "object",
        "required": ["tasks"],
        "properties": {
            "tasks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "title", "description", "params", "timeout",
                                 "max_timeout", "retries", "cancel_grace", "memory_limit",
                                 "concurrency", "schema"],  # fmt: skip
                    "properties": {
                        "name": {"type": "string"},
                        "title": {"type": "string"},
                        "description": {"type": "string"},
                        "params": {"type": "array", "items": {"type": "object"}},
                        "timeout": {"type": ["number", "null"],
                                    "description": "Default time limit of an attempt (s)"},
                        "max_timeout": {"type": "number",
                                        "description": "The largest `timeout` a submit may set"},
                        "retries": {"type": "integer", "minimum": 0,
                                    "description": "How many times a failure is retried"},
                        "cancel_grace": {"type": "number", "description":
                                         "Seconds a cancelled attempt has before it is killed"},
                        "memory_limit": {"type": ["integer", "null"],
                                         "description": "MB an attempt may use"},
                        "concurrency": {"type": ["integer", "null"],
                                        "description": "Attempts of it that may run at once"},
                        "display": {"type": ["object", "null"], "description":
                                    "How its result reads: a summary template, typed fields "
                                    "and actions (services/core/resultview.py)"},
                        "schema": {
                            "type": "object",
                            "description": "A JSON Schema (draft 2020-12) of its `args`: "
                                           "valid exactly when the server's validation "
                                           "accepts them, but for what its own "
                                           "`description` says no schema can (the file "
                                           "system, the caller's folders, integers "
                                           "beyond 2^53 in a number). Each property's "
                                           "title and description label a form's field; "
                                           "a 422's `fields` name the property (or the "
                                           "missing or unknown key) its error is about.",
                            "required": ["$schema", "type", "properties",
                                         "additionalProperties"],
                            "properties": {"$schema": {"const": JSON_SCHEMA_DIALECT},
                                           "type": {"const": "object"}},
                        },
                    },
                },
            }
        },
    },
    "Health": {
        "description": "With a valid bearer token: everything (HealthFull). Without one: the "
                       "overall status and each service's state name only (HealthPublic).",
        "anyOf": [_ref("HealthFull"), _ref("HealthPublic")],
    },
    "HealthPublic": {
        "type": "object",
        "required": ["status", "services"],
        "additionalProperties": False,
        "properties": {
            "status": _HEALTH_STATUS,
            "services": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["state"],
                    "additionalProperties": False,
                    "properties": {"state": {"type": "string"}},
                },
            },
        },
    },
    "HealthFull": {
        "type": "object",
        "required": ["status", "version", "services", "problems"],
        "properties": {
            "status": _HEALTH_STATUS,
            "detail": {"type": "string", "description":
                       "Why the data disk refuses writes (status disk_full, storage_error)"},
            "version": {"type": "string"},
            "ws": {"type": ["string", "null"], "description":
                   "The notifier's WebSocket URL as clients reach it (null: none known)"},
            "services": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "state": {"type": "string"},
                        # The worker listens on no port; a stopped service has no pid.
                        "port": {"type": ["integer", "null"]},
                        "pid": {"type": ["integer", "null"]},
                        "url": {"type": ["string", "null"]},
                        "restarts": {"type": "integer"},
                        "message": {"type": "string"},
                        "since": {"type": "number", "description": "epoch s, of the state"},
                        "last_exit": {"type": ["integer", "null"]},
                        "reason": {"type": "string", "description": "why it last ended"},
                        "next_try": {"type": ["number", "null"],
                                     "description": "epoch s of its next start"},
                    },
                },
            },
            "problems": {
                "type": "array",
                "items": {"type": "string"},
                "description": "task plug-ins that could not be loaded",
            },
            "sandbox": {"type": "string", "description":
                        "How attempts are confined: 'landlock ABI N', or 'unavailable: why' "
                        "(then only the checks at submit apply)"},
        },
    },
    "Me": {
        "type": "object",
        "required": ["principal", "owner", "tasks", "allow", "roots", "read_roots", "network"],
        "properties": {
            "principal": {"type": "string", "description": "Who the token says the caller is"},
            "owner": {"type": "boolean", "description":
                      "The install's own principal: every task, every folder but Herald's own"},
            "tasks": {"type": "array", "items": {"type": "string"},
                      "description": "The tasks of the catalog it may run"},
            "allow": {"type": ["array", "null"], "items": {"type": "string"},
                      "description": "The tasks it was allowed by name ('*': all); null: "
                                     "every task but process.run (or, for the owner, all)"},
            "roots": {"type": "array", "items": {"type": "string"},
                      "description": "Folders its tasks may read and write under"},
            "read_roots": {"type": "array", "items": {"type": "string"},
                           "description": "Folders its tasks may only read under"},
            "network": {"type": "boolean",
                        "description": "Whether its tasks may open network connections"},
        },
    },
}

_OUTCOMES = ("succeeded", "failed", "cancelled")  # GET /api/activity's counts
_COUNTS = {o: {"type": "integer", "minimum": 0} for o in _OUTCOMES}

PATHS: dict[str, dict[str, Any]] = {
    "/api/health": {
        "get": {
            "operationId": "health",
            "summary": "Whether every service is ready (no token needed; with one, the "
                       "details: PIDs, ports, reasons, problems)",
            # The token is optional here: {} is "no authentication".
            "security": [{}, {"bearer": []}],
            "responses": {"200": _response("The services' health", "Health"), **_errors()},
        }
    },
    "/api/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": _content({"type": "object"})},
                **_errors(401),
            },
        }
    },
    "/api/catalog": {
        "get": {
            "operationId": "catalog",
            "summary": "The tasks the caller may submit, with their parameters",
            "responses": {"200": _response("The catalog", "Catalog"), **_errors(401)},
        }
    },
    "/api/me": {
        "get": {
            "operationId": "me",
            "summary": "Who the caller is, and what it may do (its capabilities)",
            "responses": {"200": _response("The caller's principal", "Me"), **_errors(401)},
        }
    },
    "/api/tasks": {
        "get": {
            "operationId": "listTasks",
            "summary": "The caller's tasks, newest first",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                },
                {
                    "name": "before",
                    "in": "query",
                    "description": "Opaque cursor: use the `next` link of the previous page",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR},
                },
                {
                    "name": "state",
                    "in": "query",
                    "style": "form",
                    "explode": True,
                    "description": "Only tasks in these states (repeat it, or separate by commas)",
                    "schema": {
                        "type": "array",
                        "items": {"type": "string", "enum": [s.value for s in TaskState]},
                    },
                },
                {
                    "name": "q",
                    "in": "query",
                    "description": "Search the whole history: tasks with every word in their "
                                   "name, id, arguments, message (once finished) or result; "
                                   "the last word is a prefix, as is a word ending in *; "
                                   "\"double quotes\" make a phrase. A bad search is 400.",
                    # The one syntax error: an odd number of double quotes (and no NUL).
                    "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS,
                               "pattern": '^[^"\\x00]*("[^"\\x00]*"[^"\\x00]*)*$'},
                },
                {
                    "name": "task",
                    "in": "query",
                    "description": "Only tasks of this name (exactly)",
                    "schema": {"type": "string", "maxLength": 200, "pattern": "^[^\\x00]*$"},
                },
                {
                    "name": "since",
                    "in": "query",
                    "description": "Only tasks submitted at or after this time (ISO 8601; a "
                                   "date alone, or a time without a zone, is UTC)",
                    "schema": {"type": "string", "format": "date-time", "maxLength": 64},
                },
                {
                    "name": "until",
                    "in": "query",
                    "description": "Only tasks submitted before this time (ISO 8601)",
                    "schema": {"type": "string", "format": "date-time", "maxLength": 64},
                },
            ],
            "responses": {"200": _response("A page of tasks", "TaskList"),
                          **_errors(400, 401, 507)},
        },
        "post": {
            "operationId": "submitTask",
            "summary": "Submit a task",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "description": "Submitting again with the same key returns the same task",
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 200,
                        "pattern": "^[ -~]+$",
                    },
                },
            ],
            "requestBody": {"required": True, "content": _content(_ref("SubmitRequest"))},
            "responses": {
                "202": _response("Accepted and queued", "Task", _LOCATION),
                "200": _response(
                    "Replay of an earlier submit with the same Idempotency-Key",
                    "Task",
                    {**_LOCATION, "Idempotent-Replayed": {"schema": {"const": "true"}}},
                ),
                **_errors(400, 401, 404, 408, 409, 413, 415, 422, 507),
            },
        },
    },
    "/api/tasks/{task_id}": {
        "get": {
            "operationId": "getTask",
            "summary": "One of the caller's tasks, by its id or a unique prefix of at least "
                       "4 hex digits (409 ambiguous_id lists the candidates)",
            "parameters": [_TASK_ID_OR_PREFIX],
            "responses": {"200": _response("The task", "Task"),
                          **_errors(400, 401, 404, 409, 507)},  # fmt: skip
        },
        "delete": {
            "operationId": "deleteTask",
            "summary": "Forget a finished task (its events stay in the log)",
            "parameters": [_TASK_ID],
            "responses": {"204": {"description": "Deleted"}, **_errors(401, 404, 409, 507)},
        },
    },
    "/api/tasks/{task_id}/events": {
        "get": {
            "operationId": "taskEvents",
            "summary": "The task's events after a sequence number, oldest first",
            "parameters": [
                _TASK_ID,
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_CURSOR,
                               "default": 0},  # fmt: skip
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000},
                },
            ],
            "responses": {
                "200": _response("The task's events", "EventList"),
                **_errors(400, 401, 404, 507),
            },
        }
    },
    "/api/tasks/{task_id}/cancel": {
        "post": {
            "operationId": "cancelTask",
            "summary": "Cancel a queued task, or ask a running one to stop",
            "parameters": [_TASK_ID],
            "responses": {
                "202": _response("Cancelled, or cancellation requested", "Task"),
                **_errors(401, 404, 409, 507),
            },
        }
    },
    "/api/activity": {
        "get": {
            "operationId": "activity",
            "summary": "The caller's tasks finished in the last hour or day: counts per "
                       "bucket and outcome, and each task type's counts and run durations",
            "description": "Computed from the whole ledger (every task of the caller that "
                           "finished in the window), not from a page of tasks. Buckets are "
                           "[start, start + bucket), oldest first; the last one is the "
                           "current, partial one. A run's duration is its last attempt's, "
                           "from its start to its end, whatever its outcome (a task cancelled "
                           "before it started has none); p50/p95 are nearest-rank over the "
                           "newest 20,000 runs of the window (`timed` says how many of a "
                           "type's), the counts are exact.",
            "parameters": [
                {"name": "window", "in": "query",
                 "schema": {"type": "string", "enum": ["hour", "day"], "default": "hour"}},
                {"name": "bucket", "in": "query",
                 "description": "Seconds per bucket (default 60 for an hour, 3600 for a day)",
                 "schema": {"type": "integer", "enum": [60, 300, 900, 3600]}},
                {"name": "tz_offset", "in": "query",
                 "description": "The caller's UTC offset in minutes (east positive): buckets "
                                "start on its local clock's full minutes, quarters or hours",
                 "schema": {"type": "integer", "minimum": -840, "maximum": 840, "default": 0}},
            ],
            "responses": {
                "200": {"description": "The activity", "content": _content({
                    "type": "object",
                    "required": ["window", "bucket", "start", "end", "outcomes", "buckets",
                                 "totals", "tasks"],
                    "properties": {
                        "window": {"type": "string", "enum": ["hour", "day"]},
                        "bucket": {"type": "integer", "description": "Seconds per bucket"},
                        "start": {"type": "string", "format": "date-time"},
                        "end": {"type": "string", "format": "date-time"},
                        "outcomes": {"type": "array", "items": {"type": "string"},
                                     "description": "The outcomes counted, in stacking "
                                                    "order"},
                        "buckets": {"type": "array", "items": {
                            "type": "object",
                            "required": ["start", *_OUTCOMES],
                            "properties": {"start": {"type": "string", "format": "date-time"},
                                           **_COUNTS},
                        }},
                        "totals": {"type": "object", "required": list(_OUTCOMES),
                                   "properties": _COUNTS},
                        "tasks": {"type": "array", "description": "Busiest first", "items": {
                            "type": "object",
                            "required": ["task", "n", *_OUTCOMES, "timed", "p50", "p95",
                                         "max"],
                            "properties": {
                                "task": {"type": "string"},
                                "n": {"type": "integer", "minimum": 1,
                                      "description": "Its tasks finished in the window"},
                                **_COUNTS,
                                "timed": {"type": "integer", "minimum": 0, "description":
                                          "The runs whose durations p50/p95 are over"},
                                **{k: {"type": ["number", "null"], "minimum": 0,
                                       "description": f"{k} of the run durations (s)"}
                                   for k in ("p50", "p95", "max")},
                            },
                        }},
                    },
                })},
                **_errors(400, 401, 507),
            },
        }
    },
}

# Browser sign-in (services/web/browser.py) and the event stream as Server-Sent Events
# (services/web/sse.py). A browser session's cookie stands for the bearer token on every
# route; with it, POST/PUT/PATCH/DELETE also need the page's Origin and X-Herald-CSRF.
PATHS.update({
    "/api/login-tickets": {
        "post": {
            "operationId": "createLoginTicket",
            "summary": "A one-time sign-in link for the caller's principal (valid 60 s, "
                       "once; with the bearer token only, not a browser session)",
            "responses": {
                "201": {"description": "The ticket and its link (`url`, to open in a "
                                       "browser), and `expires_in` seconds",
                        "content": _content({"type": "object", "required": ["ticket", "url"],
                                             "properties": {
                                                 "ticket": {"type": "string"},
                                                 "url": {"type": "string"},
                                                 "expires_in": {"type": "number"}}})},
                "429": _response("Too many sign-in links outstanding (code "
                                 "too_many_tickets)", "Error"),
                **_errors(401),
            },
        }
    },
    "/login": {
        "get": {
            "operationId": "login",
            "summary": "Spend a sign-in ticket: a session cookie (HttpOnly, SameSite=Strict) "
                       "and a redirect to the page",
            "security": [{}],
            "parameters": [{"name": "ticket", "in": "query", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {
                "303": {"description": "Signed in: the cookie is set, Location is /",
                        "headers": {"Location": {"schema": {"type": "string"}},
                                    "Set-Cookie": {"schema": {"type": "string"}}}},
                "403": {"description": "The ticket is unknown, used or expired (code "
                                       "invalid_ticket; an HTML page when HTML is accepted)",
                        "content": {**_content(_ref("Error")),
                                    "text/html": {"schema": {"type": "string"}}}},
                **{k: v for k, v in _errors().items() if k != "403"},
            },
        }
    },
    "/api/session": {
        "get": {
            "operationId": "session",
            "summary": "The browser session: principal, CSRF token, when it ends if unused, "
                       "the notifier's WebSocket URL (csrf and expires are null for a token)",
            "responses": {"200": {"description": "The session", "content": _content({
                "type": "object", "required": ["principal", "csrf", "expires", "ws"],
                "properties": {"principal": {"type": "string"},
                               "csrf": {"type": ["string", "null"]},
                               "expires": {"type": ["string", "null"]},
                               "ws": {"type": ["string", "null"]}}})},
                **_errors(401)},
        }
    },
    "/api/logout": {
        "post": {
            "operationId": "logout",
            "summary": "End the browser session the request was made with (and its live "
                       "connections)",
            "responses": {"204": {"description": "Signed out; the cookie is cleared"},
                          **_errors(401)},  # 403 no_session: made with a token
        }
    },
    # The page (services/web/page.py): for a browser, not for API clients.
    "/": {
        "get": {
            "operationId": "page",
            "summary": "The browser page (with a browser session), or how to sign in (without)",
            "security": [{}],
            "responses": {"200": {"description": "An HTML page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}},
                          **{k: v for k, v in _errors().items() if k != "401"}},
        }
    },
    "/static/{name}": {
        "get": {
            "operationId": "pageFile",
            "summary": "One of the page's files (its modules, its style sheet); ETag and "
                       "If-None-Match",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The file", "content": {
                              "text/javascript": {"schema": {"type": "string"}},
                              "text/css": {"schema": {"type": "string"}},
                              "text/html": {"schema": {"type": "string"}}}},
                          "304": {"description": "Not modified (If-None-Match)"},
                          "404": _response("No such file (code not_found)", "Error"),
                          **_errors(401)},
        }
    },
    "/api/events": {
        "get": {
            "operationId": "events",
            "summary": "The caller's events as Server-Sent Events (the WebSocket's messages; "
                       "each event's id is its seq): Last-Event-ID or since resumes after it",
            "parameters": [{"name": "since", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0,
                                       "maximum": 10**18 - 1}}],
            "responses": {"200": {"description": "An endless stream of messages",
                                  "content": {"text/event-stream": {"schema": {
                                      # each message: its data (a JSON text) and id (a seq)
                                      "type": "object", "required": ["data"],
                                      "properties": {"data": {"type": "string"},
                                                     "id": {"type": "string"}}}}}},
                          **_errors(401)},
        }
    },
})


def _args_schema(params: tuple[Param, ...]) -> dict[str, Any]:
    """A task's `args` schema inside this document (whose dialect is 2020-12's already:
    `$schema` belongs at a schema resource's root)."""
    schema = args_schema(params)
    del schema["$schema"]
    return schema


def _schema_name(spec: TaskSpec) -> str:
    return "Submit." + re.sub(r"[^A-Za-z0-9._-]", "_", spec.name)


def submit_schemas(catalog: Catalog) -> dict[str, Any]:
    """`SubmitRequest` (a oneOf discriminated by `task`) and one schema per task."""
    schemas: dict[str, Any] = {}
    mapping: dict[str, str] = {}
    for spec in catalog:
        args = _args_schema(spec.params)
        timeout = {
            "type": ["number", "null"], "exclusiveMinimum": 0, "maximum": spec.max_timeout,
            "description": "This attempt's time limit in seconds"
            + (f" (default {spec.timeout:g})" if spec.timeout is not None else " (default none)"),
        }  # fmt: skip
        body: dict[str, Any] = {
            "type": "object",
            "title": spec.title,
            "description": spec.description,
            "properties": {"task": {"const": spec.name}, "args": args, "timeout": timeout},
            "required": ["task", "args"] if "required" in args else ["task"],
            "additionalProperties": False,
        }
        name = _schema_name(spec)
        schemas[name] = body
        mapping[spec.name] = f"#/components/schemas/{name}"
    if mapping:
        schemas["SubmitRequest"] = {
            "oneOf": [{"$ref": ref} for ref in mapping.values()],
            "discriminator": {"propertyName": "task", "mapping": mapping},
        }
    else:  # an empty catalog: nothing can be submitted, but the shape stays documented
        schemas["SubmitRequest"] = {
            "type": "object",
            "required": ["task"],
            "properties": {"task": {"type": "string"}, "args": {"type": "object"},
                           "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0}},
            "additionalProperties": False,
        }
    return schemas


def openapi_document(catalog: Catalog, version: str) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Herald",
            "version": version,
            "description": "Run slow jobs in the background; their events are pushed on the "
            'notifier\'s WebSocket. Every error body is {"error": {"code", "message", '
            '"fields"?}}.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**SCHEMAS, **submit_schemas(catalog)},
        },
    }
