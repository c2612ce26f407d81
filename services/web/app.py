"""The HTTP API: `make_app` wires the routes to the ledger, the queue and the wake-ups.

Choices a client can rely on:
- Request bodies are JSON. `Content-Type` must be `application/json` (or `...+json`);
  anything else, or none, is 415 `unsupported_media_type`. Bodies over 1 MiB are 413
  `too_large`; a body not sent in full within `BODY_TIMEOUT` is 408 `request_timeout`.
  Arguments that are text but not valid Unicode (a lone surrogate) or integers beyond
  +-2^53 are 422 field errors; keys that are not valid Unicode are echoed with U+FFFD.
- Times in task JSON are ISO 8601 UTC strings with milliseconds ("...Z") or null. Events
  are the WebSocket envelope exactly (`services.core.envelope.encode_event`, so "ts" is
  Unix time there, as on the WebSocket) and can be decoded with the same codec.
- Cancelling a task that already finished is 409 `already_finished`, with the task in the
  body next to the error. Cancelling a running task twice is harmless (202 again).
- An `Idempotency-Key` already used by the caller answers 200 with the original task and
  `Idempotent-Replayed: true`; no second task is created. Reusing a key with a different
  task or arguments is 409 `idempotency_conflict`.
- A task of another principal is indistinguishable from a task that does not exist (404).
- A principal sees in the catalog, and may submit, only the tasks it is allowed (else 403
  `forbidden`, naming the capability); a path argument is resolved and must lie under its
  folders (else 403 `forbidden`), and never in Herald's own files, whoever asks (else 422
  `validation_failed` with the field). `GET /api/me` says who the caller is and what it may do.
- A write the data disk refuses is 507 `disk_full` (or `storage_error`): nothing was
  recorded, and the same request can succeed later. A submit is 202 once its task is in the
  ledger, even if the queue then refused its message: the message is enqueued again here
  with backoff (and the worker looks for queued tasks without one).

Reads of the ledger are short SQLite queries on the event loop (a WAL reader never waits
for a lock). Writes never run on the loop: another service may hold the write lock, and
waiting for it there would stall every request. They go to the process's one writer
thread (`services.store.writer.GroupWriter`), which commits every write pending at once
in one transaction, enqueues the new tasks, and answers each request's future.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from services import landlock
from services.access import check_paths, check_task, protected_dirs
from services.auth import Authenticator, Capabilities
from services.config import load_config
from services.core import search
from services.core.envelope import encode_event
from services.core.errors import HeraldError, ValidationFailed
from services.core.events import Event, EventType
from services.core.params import args_schema, shown, validate_args
from services.core.states import TaskState
from services.core.taskschema import FIELD_NAMES, task_links
from services.core.taskview import iso
from services.layout import DataLayout
from services.store.activity import OUTCOMES
from services.store.backend import Backend, EventWaker, open_backend
from services.store.failures import DiskWatch
from services.store.sqlite import TaskRecord, TaskStore
from services.store.writer import GroupWriter
from services.tasks.catalog import Catalog, TaskSpec
from services.web.browser import BrowserAuth, notifier_url
from services.web.errors import JSON_HEADERS, dumps, error_middleware, error_response
from services.web.limits import connection_middleware, read_body
from services.web.openapi import MAX_CURSOR, openapi_document
from services.web.page import Page
from services.web.security import PRINCIPAL, security_middleware
from services.web.sse import EventFeed

log = logging.getLogger(__name__)

MAX_BODY = 1024**2
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 200
EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX = 1000, 1000
_IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,200}")
_SUBMIT_KEYS = frozenset({"task", "args", "timeout"})
_JSON_TYPES = ("application/json",)
WRITER = web.AppKey("writer", GroupWriter)  # the app's writer (for tests and the bench)
BROWSER = web.AppKey("browser", BrowserAuth)  # the app's sign-in and sessions (for tests)
QUEUED_NOTIFY_DELAY = 0.05  # seconds (see TaskApi._wake_notifier_soon)
# Enqueueing again a task whose message the queue refused: first wait, and the longest.
ENQUEUE_RETRY_FIRST, ENQUEUE_RETRY_MAX = 0.2, 2.0
# GET /api/activity: each window's length and default bucket (s), the buckets it takes.
ACTIVITY_WINDOWS = {"hour": (3600, 60), "day": (86400, 3600)}
ACTIVITY_BUCKETS = (60, 300, 900, 3600)
MAX_TZ_OFFSET = 14 * 60  # minutes (UTC+14 is the furthest any zone is)


class Waker(Protocol):
    """What wakes another service (a `services.wake.WakeSender`)."""

    def wake(self, payload: bytes = ...) -> None: ...


class Queue(Protocol):
    """Where task ids go to be run (a `services.queue.TaskQueue`)."""

    def enqueue(self, task_id: str) -> None: ...

    def enqueue_many(self, task_ids: list[str]) -> None: ...


def herald_version() -> str:
    """The installed Herald version, or "0+unknown" when running from a bare checkout."""
    try:
        return version("herald")
    except PackageNotFoundError:
        return "0+unknown"


# How each field of the task JSON (services.core.taskschema, in its order) comes from the
# ledger's record.
_TASK_VALUES: dict[str, Any] = {
    "id": lambda r: r.id,
    "task": lambda r: r.name,
    "args": lambda r: r.args,
    "state": lambda r: r.state.value,
    "progress": lambda r: r.progress,
    "message": lambda r: r.message,
    "result": lambda r: r.result,
    "error": lambda r: r.error,
    "attempt": lambda r: r.attempt,
    "max_attempts": lambda r: r.shown_max_attempts,
    "lost_attempts": lambda r: r.lost,
    "next_attempt_at": lambda r: iso(r.next_attempt_at),
    "timeout": lambda r: r.timeout,
    "cancel_requested": lambda r: r.cancel_requested,
    "created_at": lambda r: iso(r.created_at),
    "started_at": lambda r: iso(r.started_at),
    "finished_at": lambda r: iso(r.finished_at),
    "updated_at": lambda r: iso(r.updated_at),
    "links": lambda r: task_links(r.id),
}
if tuple(_TASK_VALUES) != FIELD_NAMES:  # pragma: no cover - caught at import, in every test
    raise ImportError("task_json and services.core.taskschema name different fields")
_TASK_GETTERS = tuple(_TASK_VALUES.items())


def task_json(rec: TaskRecord) -> dict[str, Any]:
    """A task as the API shows it to its owner (the fields of services.core.taskschema)."""
    return {name: get(rec) for name, get in _TASK_GETTERS}


def bad_request(message: str, fields: dict[str, str] | None = None) -> HeraldError:
    return HeraldError("bad_request", message, 400, fields)


def _not_found() -> HeraldError:
    return HeraldError("not_found", "No such task.", 404)


ID_LENGTH = 32  # a task id: 32 lowercase hex digits
MIN_ID_PREFIX = 4  # the shortest id prefix taken for an id
AMBIGUOUS_SHOWN = 10  # candidates named by an ambiguous_id error


def _is_hex(text: str) -> bool:
    return bool(text) and text.isascii() and all(ch in "0123456789abcdefABCDEF" for ch in text)


class AmbiguousId(HeraldError):
    """An id prefix that several of the caller's tasks share (HTTP 409; the body lists
    the `candidates`)."""

    def __init__(self, prefix: str, candidates: list[str], more: str = "") -> None:
        super().__init__("ambiguous_id", f"The id prefix {prefix} is ambiguous: it is shared by "
                         f"{', '.join(candidates)}{more}.", 409)  # fmt: skip
        self.candidates = candidates


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# NaN and Infinity are not JSON. One decoder: json.loads with options builds one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in [low, high]; 400 with a field error otherwise."""
    text = request.query.get(name)
    if text is None:
        return default
    # Digits only, and not so many that int() has to work hard (2^62 has 19).
    if not (text.isascii() and text.isdigit() and len(text) <= 24) or not low <= int(text) <= high:
        raise bad_request(
            "Invalid query parameter.", {name: f"must be an integer from {low} to {high}"}
        )
    return int(text)


def _query_text(request: web.Request, name: str, most: int) -> str | None:
    """A text query parameter of at most `most` characters, given once (400 otherwise)."""
    values = request.query.getall(name, ())
    if not values:
        return None
    if len(values) > 1:
        raise bad_request("Invalid query parameter.", {name: "must be given once"})
    if len(values[0]) > most or "\x00" in values[0]:
        raise bad_request("Invalid query parameter.",
                          {name: f"must be at most {most} characters, without NUL"})  # fmt: skip
    return values[0]


def _query_time(request: web.Request, name: str) -> float | None:
    """An ISO 8601 time query parameter ("2026-12-01", "2026-12-01T10:00:00Z"; no zone:
    UTC) as Unix time; 400 with a field error otherwise."""
    text = _query_text(request, name, 64)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        raise bad_request("Invalid query parameter.", {
            name: "must be an ISO 8601 date or time, e.g. 2026-12-01T10:00:00Z"}) from None


def _query_states(request: web.Request) -> list[TaskState]:
    """`state` filters: repeatable and/or comma separated; an empty one is refused (as
    the OpenAPI document says: each is one of the states)."""
    states: list[TaskState] = []
    for raw in request.query.getall("state", ()):
        for part in raw.split(","):
            part = part.strip()
            try:
                state = TaskState(part)
            except ValueError:
                known = ", ".join(s.value for s in TaskState)
                raise bad_request(
                    "Invalid query parameter.", {"state": f"unknown state; one of: {known}"}
                ) from None
            if state not in states:
                states.append(state)
    return states


class TaskApi:
    """The route handlers, holding what they need (passed in, never looked up).

    Args:
        layout: the data dir (for the services' status file).
        catalog: the tasks that may be submitted.
        store: the ledger and event log.
        queue: where submitted task ids are enqueued.
        worker_wake: wakes the worker for a new task (b"!" and its id, once it is
            enqueued; coalesced, see services.wake) or a cancel request (b"cancel").
        notifier_wake: wakes the notifier after every recorded event.
        max_lost: the cap on the attempts a task may lose with their process (the
            config's worker.max_attempts).
        authenticator: what each principal may do (its capabilities).
        runtime_dir: the runtime dir, one of Herald's own folders no task may touch.
        backend: the storage (services.store.backend; default: the data dir's SQLite).
    """

    def __init__(
        self,
        layout: DataLayout,
        catalog: Catalog,
        store: TaskStore,
        queue: Queue,
        worker_wake: Waker,
        notifier_wake: Waker,
        max_lost: int,
        authenticator: Authenticator | None = None,
        runtime_dir: Path | str | None = None,
        backend: Backend | None = None,
    ) -> None:
        backend = backend or open_backend(None, layout)
        self.backend = backend
        self.layout = layout
        self.authenticator = authenticator or Authenticator(layout)
        self.protected = protected_dirs(layout, runtime_dir)
        self.catalog = catalog
        self.store = store
        self.queue = queue
        self.writer = backend.writer(store, queue)  # every write of this loop
        self.worker_wake = worker_wake
        self.notifier_wake = notifier_wake
        # Events recorded here, told to the notifier(s): per principal where each has a
        # log of its own (services.store.backend.EventWaker).
        self.notify = EventWaker(notifier_wake, per_principal=None if backend.global_log
                                 else getattr(notifier_wake, "wake_principal", None))
        self._soon: list[Event] = []  # "queued" events to tell it of shortly
        self.max_lost = max_lost
        self._notifier_pending = False
        self.disk = DiskWatch(layout.root)
        self._unqueued: dict[str, None] = {}  # in the ledger, not in the queue yet (in order)
        self._enqueue_retry: asyncio.TimerHandle | None = None
        self._enqueueing = False  # the writer is enqueueing some of _unqueued
        self._enqueue_delay = ENQUEUE_RETRY_FIRST
        self.version = herald_version()
        # The catalog does not change while the service runs: encode its views once.
        self._catalog_bodies: dict[frozenset[str], bytes] = {}
        self._openapi_body = dumps(openapi_document(catalog, self.version))
        # The browser's sign-in and sessions, and the event stream as Server-Sent Events.
        config = load_config(layout)
        self.browser = BrowserAuth(layout, self.authenticator, notifier_wake,
                                   idle=config.session_idle, max_age=config.session_max_age)
        self.events = EventFeed(store, self.authenticator, errors=backend.errors,
                                global_log=backend.global_log)
        self.browser.signed_out.append(self.events.recheck)

    # ------------------------------------------------------------------ tasks

    async def submit(self, request: web.Request) -> web.Response:
        """POST /api/tasks: validate, record, enqueue, wake."""
        principal = request[PRINCIPAL]
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
            raise bad_request(
                "Invalid Idempotency-Key header.",
                {"Idempotency-Key": "must be 1-200 printable ASCII characters"},
            )
        name, args, timeout = await self._read_submit(request)
        spec = self.catalog.get(name)
        if spec is None:
            raise HeraldError("unknown_task", f"There is no task named {name[:100]!r}.", 404)
        caps = self._capabilities(principal)
        check_task(spec, caps)
        try:
            # Where the paths lead is checked before whether they exist: what a principal
            # learns of folders it may not read is "forbidden", nothing more.
            check_paths(spec, validate_args(spec.params, args), caps, self.protected)
            clean = spec.validate(args)
        except ValidationFailed as exc:
            # Both at once when they cannot be mistaken for each other (a task may have a
            # parameter named "timeout" of its own: its error comes first then).
            if not any(p.name == "timeout" for p in spec.params):
                try:
                    spec.check_timeout(timeout)
                except ValidationFailed as bad_timeout:
                    exc.fields = {**(exc.fields or {}), **(bad_timeout.fields or {})}
            raise exc from None
        seconds = spec.check_timeout(timeout)
        enqueue = not self._unqueued and not self._enqueueing  # else behind those waiting
        created = await self.writer.create_task(
            enqueue=enqueue,
            principal=principal,
            name=name,
            args=clean,
            max_attempts=1 + spec.retries,
            max_lost=min(spec.max_lost, self.max_lost),
            timeout=seconds,
            idempotency_key=key,
        )
        rec, event = created.record, created.event
        headers = {**JSON_HEADERS, "Location": "/api/tasks/" + rec.id}
        if event is None:  # the key was used before: answer with the original task
            if rec.name != name or rec.args != clean or rec.timeout != seconds:
                raise HeraldError(
                    "idempotency_conflict",
                    "This Idempotency-Key was already used for a different submit.",
                    409,
                )
            headers["Idempotent-Replayed"] = "true"
            return web.Response(body=dumps(task_json(rec)), status=200, headers=headers)
        # The wake-up goes after the enqueue has committed (the writer enqueued it before
        # answering), never before (services.wake: a worker that read the queue in between
        # and slept would miss the task). It names the task ("!" + id), so that an idle
        # worker claims it before it reads the queue; while the worker has a wake-up
        # pending or is awake, none is sent at all (one per burst): it reads the whole
        # queue before it sleeps. A task enqueued later wakes it then.
        if created.queue_error is not None:
            self._queue_failed(created.queue_error)
            self._enqueue_later(rec.id)
        elif not enqueue:
            self._enqueue_later(rec.id, soon=True)
        else:
            self.worker_wake.wake(b"!" + rec.id.encode())
        self._wake_notifier_soon(event)
        return web.Response(body=dumps(task_json(rec)), status=202, headers=headers)

    def _enqueue_later(self, task_id: str, *, soon: bool = False) -> None:
        """Enqueue a task recorded in the ledger that the queue refused (a full disk), or
        that would have gone ahead of those it refused, once the queue takes messages
        again: it is accepted either way, since the ledger is the truth."""
        self._unqueued[task_id] = None  # behind those waiting already: order is kept
        if self._enqueue_retry is None and not self._enqueueing:
            self._enqueue_retry = asyncio.get_running_loop().call_later(
                0 if soon else self._enqueue_delay, self._enqueue_waiting)

    def _queue_failed(self, exc: Exception) -> None:
        problem = self.disk.classify(exc)
        if problem is not None:
            if self.disk.failed(problem, exc):
                log.warning("the queue refused a message (%s); enqueueing it again later", exc)
        else:
            log.error("could not enqueue a task (%s); enqueueing it again later", exc,
                      exc_info=exc)  # fmt: skip

    def _enqueue_waiting(self) -> None:
        """Enqueue the tasks the queue refused, oldest first, in the writer's thread (the
        queue's lock is not waited for on the loop); back off while it refuses."""
        self._enqueue_retry = None
        self._enqueueing = True
        ids = list(self._unqueued)

        def done(future: asyncio.Future[None]) -> None:
            self._enqueueing = False
            exc = None if future.cancelled() else future.exception()
            if future.cancelled() or exc is not None:
                if isinstance(exc, Exception):
                    self._queue_failed(exc)
                self._enqueue_delay = min(ENQUEUE_RETRY_MAX, self._enqueue_delay * 2)
                self._enqueue_retry = asyncio.get_running_loop().call_later(
                    self._enqueue_delay, self._enqueue_waiting)
                return
            for task_id in ids:
                del self._unqueued[task_id]
            log.info("enqueued %d task(s) the queue had refused", len(ids))
            self.worker_wake.wake()
            self._enqueue_delay = ENQUEUE_RETRY_FIRST
            if self._unqueued:  # recorded meanwhile
                self._enqueue_retry = asyncio.get_running_loop().call_later(
                    0, self._enqueue_waiting)

        try:
            future = self.writer.call(lambda: self.queue.enqueue_many(ids))
        except RuntimeError:  # the writer is closed: the service is stopping
            self._enqueueing = False
            return
        future.add_done_callback(done)

    def _wake_notifier_soon(self, event: Event) -> None:
        """Wake the notifier for a "queued" event a moment later, one wake-up for every
        submit of that moment. The worker wakes it within milliseconds anyway when it
        starts the task (which pushes the "queued" event too); this one is for a task that
        waits for a free slot. Waking it at once would have the notifier and its clients
        compete for the CPU with the worker and this response."""
        self._soon.append(event)
        if self._notifier_pending:
            return
        self._notifier_pending = True

        def wake() -> None:
            self._notifier_pending = False
            events, self._soon = self._soon, []
            self.notify.recorded(events)

        asyncio.get_running_loop().call_later(QUEUED_NOTIFY_DELAY, wake)

    async def _read_submit(self, request: web.Request) -> tuple[str, dict[str, Any], Any]:
        """The task name, raw arguments and raw timeout (None if absent) of a submit body."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise HeraldError("too_large", "The request body is too large.", 413)
        if "Content-Type" not in request.headers or not (
            request.content_type in _JSON_TYPES or request.content_type.endswith("+json")
        ):
            raise HeraldError(
                "unsupported_media_type", "The request body must be application/json.", 415
            )
        raw = await read_body(request)  # 413 past client_max_size (chunked bodies), 408
        try:
            body = _DECODER.decode(raw.decode())
        except (ValueError, RecursionError):
            raise bad_request("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.")
        extra = body.keys() - _SUBMIT_KEYS
        if extra:
            raise bad_request(
                "Unknown members in the request body.",
                {shown(k): "unknown member" for k in sorted(extra)[:20]},
            )
        name = body.get("task")
        if not isinstance(name, str) or not name:
            raise bad_request("The request body needs a task name.", {"task": "must be a string"})
        args = body.get("args", {})
        if not isinstance(args, dict):
            raise bad_request("Invalid task arguments.", {"args": "must be a JSON object"})
        return name, args, body.get("timeout")

    async def list_tasks(self, request: web.Request) -> web.Response:
        """GET /api/tasks: the caller's tasks, newest first, a page at a time; `q` searches
        the whole history (`services.core.search`), `task`, `since` and `until` filter it."""
        limit = _query_int(request, "limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)
        before = None
        if "before" in request.query:
            before = _query_int(request, "before", 0, 0, MAX_CURSOR)
        states = _query_states(request)
        text = _query_text(request, "q", search.MAX_QUERY_CHARS)
        try:
            query = search.parse(text or "")
        except search.SearchSyntaxError as exc:
            raise bad_request(f"Invalid search: {exc}", {"q": str(exc)}) from None
        name = _query_text(request, "task", 200)
        since, until = _query_time(request, "since"), _query_time(request, "until")
        recs = self.store.list_tasks(
            request[PRINCIPAL], states=states or None, before=before, limit=limit + 1,
            query=query or None, name=name or None, since=since, until=until,
        )  # fmt: skip
        next_link = None
        if len(recs) > limit:
            recs = recs[:limit]
            query_args: list[tuple[str, Any]] = [("limit", limit), ("before", recs[-1].pn)]
            if states:
                query_args.append(("state", ",".join(s.value for s in states)))
            for key in ("q", "task", "since", "until"):
                if request.query.get(key):
                    query_args.append((key, request.query[key]))
            next_link = "/api/tasks?" + urlencode(query_args, safe=",")
        return web.Response(
            body=dumps({"tasks": [task_json(r) for r in recs], "next": next_link}),
            headers=JSON_HEADERS,
        )

    async def get_task(self, request: web.Request) -> web.Response:
        """GET /api/tasks/{task_id}: by its id, or a unique prefix of it (4 to 31 hex
        digits, like git's) among the caller's own tasks."""
        task_id = request.match_info["task_id"]
        principal = request[PRINCIPAL]
        rec = self.store.get_task(task_id, principal)
        if rec is None and _is_hex(task_id) and len(task_id) < ID_LENGTH:
            try:
                rec = self._by_prefix(task_id.lower(), principal)
            except AmbiguousId as exc:
                return error_response(exc, candidates=exc.candidates)
        if rec is None:
            raise _not_found()
        return web.Response(body=dumps(task_json(rec)), headers=JSON_HEADERS)

    def _by_prefix(self, prefix: str, principal: str) -> TaskRecord | None:
        """The one task of `principal` whose id starts with `prefix` (None if none).

        Raises:
            HeraldError: 400 for a prefix too short to mean anything, 409 ambiguous_id
                (with the candidates) if several tasks share it.
        """
        if len(prefix) < MIN_ID_PREFIX:
            raise bad_request(f"A task id prefix needs at least {MIN_ID_PREFIX} characters.",
                              {"task_id": f"give at least {MIN_ID_PREFIX} hex digits"})  # fmt: skip
        ids = self.store.tasks_by_id_prefix(prefix, principal, limit=AMBIGUOUS_SHOWN + 1)
        if len(ids) > 1:
            more = "" if len(ids) <= AMBIGUOUS_SHOWN else " and more"
            raise AmbiguousId(prefix, ids[:AMBIGUOUS_SHOWN], more)
        return self.store.get_task(ids[0], principal) if ids else None

    async def task_events(self, request: web.Request) -> web.Response:
        """GET /api/tasks/{task_id}/events?after=N: the task's timeline, oldest first."""
        task_id = request.match_info["task_id"]
        if self.store.get_task(task_id, request[PRINCIPAL]) is None:
            raise _not_found()
        after = _query_int(request, "after", 0, 0, MAX_CURSOR)
        limit = _query_int(request, "limit", EVENTS_LIMIT_DEFAULT, 1, EVENTS_LIMIT_MAX)
        events = self.store.events_after(after, task_id=task_id, limit=limit + 1)
        next_link = None
        if len(events) > limit:
            events = events[:limit]
            query = urlencode([("after", events[-1].seq), ("limit", limit)])
            next_link = f"/api/tasks/{task_id}/events?{query}"
        # Each event is the WebSocket envelope's own text: spliced in, not re-encoded.
        body = (
            '{"task":'
            + json.dumps(task_id)
            + ',"events":['
            + ",".join(encode_event(e) for e in events)
            + '],"next":'
            + json.dumps(next_link)
            + "}"
        )
        return web.Response(body=body.encode(), headers=JSON_HEADERS)

    async def cancel(self, request: web.Request) -> web.Response:
        """POST /api/tasks/{task_id}/cancel: queued -> cancelled; running -> asked to stop."""
        task_id, principal = request.match_info["task_id"], request[PRINCIPAL]
        rec, event = await self.writer.write(lambda s: s.request_cancel(task_id, principal))
        if rec is None:
            raise _not_found()
        if event is not None:
            if event.type is EventType.CANCEL_REQUESTED:
                self.worker_wake.wake(b"cancel")
            self.notify.recorded([event])
        elif rec.state.terminal:
            return error_response(
                HeraldError("already_finished", f"The task has already {rec.state.value}.", 409),
                task=task_json(rec),
            )
        return web.Response(body=dumps(task_json(rec)), status=202, headers=JSON_HEADERS)

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/tasks/{task_id}: forget a finished task ("clear finished")."""
        task_id, principal = request.match_info["task_id"], request[PRINCIPAL]
        rec = await self.writer.write(lambda s: s.delete_task(task_id, principal))
        if rec is None:
            raise _not_found()
        if not rec.state.terminal:
            return error_response(
                HeraldError("task_active", "Only a finished task can be deleted; cancel it "
                            "first.", 409),  # fmt: skip
                task=task_json(rec),
            )
        return web.Response(status=204)

    async def activity(self, request: web.Request) -> web.Response:
        """GET /api/activity?window=hour|day&bucket=S&tz_offset=M: the caller's tasks
        finished in the last hour or day, counted per bucket and outcome, and each task
        type's counts and p50/p95 run durations (the activity view)."""
        window = request.query.get("window", "hour")
        if window not in ACTIVITY_WINDOWS:
            raise bad_request("Invalid query parameter.",
                              {"window": "must be one of: " + ", ".join(ACTIVITY_WINDOWS)})
        length, default_bucket = ACTIVITY_WINDOWS[window]
        bucket = _query_int(request, "bucket", default_bucket, 1, max(ACTIVITY_BUCKETS))
        if bucket not in ACTIVITY_BUCKETS:
            raise bad_request("Invalid query parameter.", {"bucket": "must be one of: " +
                              ", ".join(map(str, ACTIVITY_BUCKETS)) + " (seconds)"})
        text = request.query.get("tz_offset", "0")
        digits = text[1:] if text[:1] in ("-", "+") else text
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 4
                and abs(int(text)) <= MAX_TZ_OFFSET):
            raise bad_request("Invalid query parameter.", {"tz_offset": "must be an integer "
                              f"from -{MAX_TZ_OFFSET} to {MAX_TZ_OFFSET} (minutes east of UTC)"})
        # Buckets end on the caller's local clock (a day in hours ends at the next full
        # hour); the last one is the current, partial one.
        offset = int(text) * 60
        end = (time.time() + offset) // bucket * bucket + bucket - offset
        # A day of a busy principal is tens of ms of SQLite: off the loop, on its own
        # connection, so no other request waits for it.
        act = await asyncio.to_thread(self.store.activity, request[PRINCIPAL],
                                      end - length, end, bucket)  # fmt: skip
        body = {
            "window": window,
            "bucket": bucket,
            "start": iso(act.start),
            "end": iso(act.end),
            "outcomes": list(OUTCOMES),
            "buckets": [{"start": iso(b.start), **b.counts} for b in act.buckets],
            "totals": act.totals,
            "tasks": [{"task": t.name, "n": t.n, **t.counts, "timed": t.timed, "p50": t.p50,
                       "p95": t.p95, "max": t.max} for t in act.tasks],  # fmt: skip
        }
        return web.Response(body=dumps(body), headers=JSON_HEADERS)

    # --------------------------------------------------------------- the rest

    def _capabilities(self, principal: str) -> Capabilities:
        caps = self.authenticator.capabilities(principal)
        if caps is None:  # revoked between its token check and now
            raise HeraldError("unauthorized", "A valid bearer token is required.", 401)
        return caps

    async def catalog_view(self, request: web.Request) -> web.Response:
        """GET /api/catalog: every task the caller may submit, with its parameters and the
        JSON Schema of its arguments."""
        caps = self._capabilities(request[PRINCIPAL])
        names = frozenset(spec.name for spec in self.catalog if caps.may_run(spec.name))
        body = self._catalog_bodies.get(names)
        if body is None:  # the catalog does not change while the service runs
            body = dumps({"tasks": [catalog_entry(s) for s in self.catalog if s.name in names]})
            if len(self._catalog_bodies) < 64:
                self._catalog_bodies[names] = body
        return web.Response(body=body, headers=JSON_HEADERS)

    async def me(self, request: web.Request) -> web.Response:
        """GET /api/me: the caller's principal and its capabilities."""
        caps = self._capabilities(request[PRINCIPAL])
        body = {
            "principal": caps.principal,
            "owner": caps.owner,
            "tasks": [spec.name for spec in self.catalog if caps.may_run(spec.name)],
            "allow": None if caps.owner or caps.allow is None else sorted(caps.allow),
            "roots": list(caps.roots),
            "read_roots": list(caps.read_roots),
            "network": caps.network,
        }
        return web.Response(body=dumps(body), headers=JSON_HEADERS)

    async def openapi(self, request: web.Request) -> web.Response:
        """GET /api/openapi.json."""
        return web.Response(body=self._openapi_body, headers=JSON_HEADERS)

    async def health(self, request: web.Request) -> web.Response:
        """GET /api/health: ok when every service the supervisor knows is ready; disk_full
        (or storage_error) while the data disk refuses writes.

        The supervisor cannot write its status file to a full disk: what this says of the
        disk comes from this service itself (its own failed writes, the free space now).

        Without a (valid) token it says only the overall status and each service's state
        name: PIDs, ports, messages, paths and the version are for principals."""
        services = self._services_status()
        ready = all(isinstance(s, dict) and s.get("state") == "ready" for s in services.values())
        problem = self.disk.problem()
        status = "ok" if ready else "degraded"
        if problem is not None:
            status = problem[0].value
        if PRINCIPAL not in request:
            states = {str(name): {"state": str(s.get("state")) if isinstance(s, dict) else
                                  "unknown"} for name, s in services.items()}  # fmt: skip
            return web.Response(body=dumps({"status": status, "services": states}),
                                headers=JSON_HEADERS)  # fmt: skip
        body: dict[str, Any] = {
            "status": status,
            "version": self.version,
            "services": services,
            "problems": self.catalog.problems,
            # Whether attempts run confined by the kernel ("landlock ABI 7") or why not.
            "sandbox": landlock.support().describe(),
            # Where this principal's live channel is, as clients reach it (remote ones too).
            "ws": notifier_url(self.layout, request),
        }
        if problem is not None:
            body["detail"] = problem[1]
        return web.Response(body=dumps(body), headers=JSON_HEADERS)

    def _services_status(self) -> dict[str, Any]:
        """The supervisor's status file, or just this service when there is none."""
        try:
            data = json.loads(self.layout.status_file.read_bytes())
            services = data["services"]
            if isinstance(services, dict) and services:
                return services
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable status file %s: %s", self.layout.status_file, exc)
        return {"web": {"state": "ready"}}

    def routes(self) -> Iterable[web.RouteDef]:
        """Every route; `openapi.PATHS` documents exactly these (a test holds them equal)."""
        return [
            web.get("/api/health", self.health, allow_head=False),
            web.get("/api/openapi.json", self.openapi, allow_head=False),
            web.get("/api/catalog", self.catalog_view, allow_head=False),
            web.get("/api/me", self.me, allow_head=False),
            web.get("/api/tasks", self.list_tasks, allow_head=False),
            web.post("/api/tasks", self.submit),
            web.get("/api/tasks/{task_id}", self.get_task, allow_head=False),
            web.delete("/api/tasks/{task_id}", self.delete),
            web.get("/api/tasks/{task_id}/events", self.task_events, allow_head=False),
            web.post("/api/tasks/{task_id}/cancel", self.cancel),
            web.get("/api/activity", self.activity, allow_head=False),
            *self.browser.routes(),  # /api/login-tickets, /login, /api/session, /api/logout
            web.get("/api/events", self.events.handle, allow_head=False),
            *Page(self.layout).routes(),  # / and /static/{name}: the browser page
        ]


def catalog_entry(spec: TaskSpec) -> dict[str, Any]:
    """A task as the catalog shows it: its declaration, and its arguments' JSON Schema."""
    return {**spec.to_json(), "schema": args_schema(spec.params)}


def make_app(
    layout: DataLayout,
    catalog: Catalog,
    store: TaskStore,
    queue: Queue,
    worker_wake: Waker,
    notifier_wake: Waker,
    max_lost: int = 3,
    *,
    authenticator: Authenticator | None = None,
    runtime_dir: Path | str | None = None,
    backend: Backend | None = None,
) -> web.Application:
    """The aiohttp application of the HTTP API, ready for an AppRunner.

    Args:
        layout: the data dir; its auth file is read unless `authenticator` is given.
        catalog, store, queue, worker_wake, notifier_wake, max_lost: see `TaskApi`.
        authenticator: resolves bearer tokens to principals and their capabilities.
        runtime_dir: the runtime dir (no task may touch it, nor the data dir).
        backend: see `TaskApi`.
    """
    authenticator = authenticator or Authenticator(layout)
    api = TaskApi(layout, catalog, store, queue, worker_wake, notifier_wake, max_lost,
                  authenticator, runtime_dir, backend)  # fmt: skip
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[connection_middleware, error_middleware(api.disk),
                     security_middleware(authenticator, api.browser)],
    )
    app.add_routes(api.routes())
    app[WRITER] = api.writer
    app[BROWSER] = api.browser

    async def close_writer(app: web.Application) -> None:
        await asyncio.to_thread(api.writer.close)  # what is pending is written first
        for waker in (api.worker_wake, api.notifier_wake):
            aclose = getattr(waker, "aclose", None)  # a sender on this loop (Redis's)
            if aclose is not None:
                await aclose()

    app.on_cleanup.append(close_writer)
    app.on_shutdown.append(api.events.close)  # open event streams end, clients resume
    return app
