"""The one client of a running Herald: its HTTP API and its event stream.

`AsyncHeraldClient` (aiohttp, one keep-alive session) and `AsyncEventStream` (websockets)
are the client; the desktop bridge and the benchmark use them on their own event loop.
`HeraldClient` and `EventStream` are a blocking facade over the very same objects for the
command line and the tests: they run them on a private event loop in a daemon thread.

The stream follows the client side of the protocol (`services.core.session.ClientSession`,
the rules the browser's JavaScript client follows too): each event is yielded once, in seq
order, across reconnects; a dropped connection is re-established by the stream itself with
a capped, jittered backoff, resuming from the last seq it saw. Messages are decoded by
`services.core.envelope`, the codec the notifier encodes with.

aiohttp and websockets are imported when first needed: `herald --version` and a command
that only talks HTTP do not pay for what they do not use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from embedded.instance import InstanceInfo, read_instance
from services.core.envelope import (
    CLOSE_INVALID_PAYLOAD,
    ProtocolError,
    ServerMessage,
    decode_server_message,
)
from services.core.events import Event
from services.core.session import ClientSession
from services.core.stream import StreamState, reconnect_delays

if TYPE_CHECKING:
    import ssl

    import aiohttp
    from websockets.asyncio.client import ClientConnection

__all__ = [
    "ApiError",
    "AsyncEventStream",
    "AsyncHeraldClient",
    "EventStream",
    "HeraldClient",
    "NotRunning",
    "ServiceUnavailable",
    "StreamClosed",
    "StreamState",
    "TaskPage",
    "TlsFailure",
    "tls_context",
]

log = logging.getLogger("herald.client")

T = TypeVar("T")
StateCallback = Callable[[StreamState, float | None], None]

SINCE_HEADER = "Herald-Since"
MAX_MESSAGE = 2**24  # a task's output or result can be large
_WS_REFUSALS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}


_CONNECTION_CLOSED: type[Exception] | None = None


def _connection_closed() -> type[Exception]:
    """websockets' ConnectionClosed, imported once (an import statement per message is a
    lookup through every import hook: ~6 µs each with PySide6's)."""
    global _CONNECTION_CLOSED
    if _CONNECTION_CLOSED is None:
        from websockets.exceptions import ConnectionClosed

        _CONNECTION_CLOSED = ConnectionClosed
    return _CONNECTION_CLOSED


# ------------------------------------------------------------------------------ errors


class NotRunning(RuntimeError):
    """No Herald instance runs for this data dir."""


class ServiceUnavailable(ConnectionError):
    """Herald cannot be reached: refused, dropped or silent connections, on HTTP or the
    WebSocket. An OSError, so callers that catch those keep working."""


class TlsFailure(ServiceUnavailable):
    """The server was reached but its TLS certificate could not be verified (self-signed
    without its CA file, another host's name, expired), or the TLS handshake failed."""


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext | None:
    """The TLS context for an https/wss server: one that trusts `ca_file` (a PEM file of
    the CA that signed a self-signed server's certificate) and nothing else, or None
    for the libraries' default (the system's trust store, host names checked).

    Raises:
        OSError, ssl.SSLError: the CA file cannot be read or holds no certificate.
    """
    if not ca_file:
        return None
    import ssl as ssl_module  # here: plain-HTTP commands never load OpenSSL

    return ssl_module.create_default_context(cafile=str(ca_file))


def _tls_failure(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a failed TLS handshake or certificate check."""
    try:
        import ssl as ssl_module
    except ImportError:  # a process that hides OpenSSL speaks no TLS
        return False
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl_module.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class StreamClosed(Exception):
    """The event stream was closed by its owner (iteration just ends)."""


class ApiError(RuntimeError):
    """The API answered with an error body (or the WebSocket refused the handshake).

    Attributes:
        status: the HTTP status.
        code: the stable machine-readable code, e.g. "validation_failed".
        message: the human-readable explanation.
        fields: per-field messages (validation errors), else empty.
        body: the whole decoded body (a 409 on cancel carries the task too).
    """

    def __init__(self, status: int, code: str, message: str,
                 fields: dict[str, str] | None = None, body: Any = None) -> None:  # fmt: skip
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}
        self.body = body

    @classmethod
    def from_body(cls, status: int, body: Any) -> ApiError:
        """The error an error body describes (tolerating a body that is not one)."""
        err = body.get("error") if isinstance(body, dict) else None
        if not isinstance(err, dict):
            err = {}
        fields = err.get("fields")
        return cls(status, str(err.get("code", f"http_{status}")),
                   str(err.get("message", "request failed")),
                   fields if isinstance(fields, dict) else None, body)  # fmt: skip


class TaskPage(NamedTuple):
    """One page of the task list, newest first; `next_before` is the cursor of the next
    page (pass it as `before`), None on the last page."""

    tasks: list[dict[str, Any]]
    next_before: int | None


def _instance(data_dir: Path) -> InstanceInfo:
    info = read_instance(data_dir)
    if info is None:
        raise NotRunning(
            f"Herald is not running for {data_dir}. Start it with `herald serve` (or `make serve`)."
        )
    return info


def _next_before(link: str | None) -> int | None:
    """The `before` cursor of a list's `next` link."""
    if not link:
        return None
    values = parse_qs(urlsplit(link).query).get("before")
    return int(values[0]) if values else None


def _event_of(obj: Any) -> Event:
    """An event of a timeline body: the WebSocket envelope, decoded by the same codec."""
    event = decode_server_message(json.dumps(obj)).event
    if event is None:
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "a timeline entry is not an event")
    return event


# ------------------------------------------------------------------------- async client


def output_lines(events: Iterable[Event]) -> list[str]:
    """The output lines of `events` (output events), in order."""
    return [str(line) for ev in events if ev.type.value == "output"
            for line in ev.data.get("lines") or ()]  # fmt: skip


class AsyncHeraldClient:
    """Talks to one instance's web service over one keep-alive HTTP session.

    Create it anywhere; the session is opened on first use, on the running loop, and
    reopened after `close()`. Requests may run concurrently.

    Args:
        api: the API's base URL, e.g. http://127.0.0.1:PORT.
        ws: the event stream's URL, e.g. ws://127.0.0.1:PORT/ws.
        token: the principal's bearer token.
        timeout: seconds a request may take in all before ServiceUnavailable.
        max_connections: concurrent HTTP connections kept to the API.
        tls: for an https/wss server: the context to verify it with (`tls_context()`:
            its CA file); None: the system's trust store. Unused for http/ws.
    """

    def __init__(self, api: str, ws: str, token: str, *, timeout: float = 30.0,
                 max_connections: int = 8, tls: ssl.SSLContext | None = None) -> None:  # fmt: skip
        self.api = api.rstrip("/")
        self.ws = ws
        self.token = token
        self.timeout = timeout
        self.max_connections = max_connections
        self.tls = tls
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path, **kwargs: Any) -> AsyncHeraldClient:
        """A client of the instance serving `data_dir` (from its runtime file).

        Raises:
            NotRunning: no instance serves it.
        """
        info = _instance(data_dir)
        return cls(info.api, info.ws, info.token, **kwargs)

    # --------------------------------------------------------------------- HTTP

    def _open_session(self) -> aiohttp.ClientSession:
        import aiohttp

        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
            # Longer than the server's own keep-alive (75 s): the server decides when an
            # idle connection goes, and the loop notices before the connection is reused.
            connector=aiohttp.TCPConnector(
                limit=self.max_connections, keepalive_timeout=120,
                ssl=self.tls if self.tls is not None else True,
            ),  # fmt: skip
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )
        return self._session

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None, *,
                      retry: bool = False) -> tuple[int, Any]:  # fmt: skip
        """Send a request to `path` (e.g. "/api/tasks?limit=5"); return (status, decoded
        JSON body). Error statuses are returned, not raised.

        Args:
            retry: send once more if a kept-alive connection turns out to be dead. GET
                requests are retried anyway; pass True only for requests that are safe to
                repeat (a cancel, a submit with an Idempotency-Key).

        Raises:
            ServiceUnavailable: the API cannot be reached or did not answer in time.
        """
        import aiohttp

        session = self._session or self._open_session()
        data = None
        hdrs = headers
        if body is not None:
            data = json.dumps(body).encode()
            hdrs = {"Content-Type": "application/json", **(headers or {})}
        url = self.api + path
        for attempt in (0, 1):
            try:
                async with session.request(method, url, data=data, headers=hdrs) as resp:
                    raw = await resp.read()
                    status = resp.status
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if isinstance(exc, aiohttp.ClientSSLError) or _tls_failure(exc):
                    raise TlsFailure(f"TLS failed with {self.api}: {exc}") from exc
                if attempt or not retry or isinstance(exc, aiohttp.ClientConnectorError):
                    raise ServiceUnavailable(f"cannot reach Herald at {self.api}: {exc}") from exc
            except aiohttp.ClientError as exc:
                if isinstance(exc, aiohttp.ClientSSLError) or _tls_failure(exc):
                    raise TlsFailure(f"TLS failed with {self.api}: {exc}") from exc
                raise ServiceUnavailable(f"cannot reach Herald at {self.api}: {exc}") from exc
            except TimeoutError as exc:
                raise ServiceUnavailable(
                    f"Herald at {self.api} did not answer within {self.timeout:g} s"
                ) from exc
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = {"error": {"code": "bad_response",
                                 "message": raw[:200].decode(errors="replace")}}  # fmt: skip
        return status, decoded

    async def _ok(self, method: str, path: str, body: Any = None,
                  headers: dict[str, str] | None = None, retry: bool = False) -> Any:  # fmt: skip
        status, decoded = await self.request(method, path, body, headers, retry=retry)
        if status >= 400:
            raise ApiError.from_body(status, decoded)
        return decoded

    async def submit(self, task: str, args: dict[str, Any] | None = None,
                     idempotency_key: str | None = None, *,
                     timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Submit a task; returns it as the API shows it (state "queued").

        Args:
            timeout: each attempt's time limit in seconds; None: the task's default. (Not
                the request's own timeout, which the client was created with.)

        Raises:
            ApiError: e.g. 404 unknown_task, 422 validation_failed (with `fields`; a time
                limit above the task's `max_timeout` is `fields["timeout"]`).
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body: dict[str, Any] = {"task": task, "args": args or {}}
        if timeout is not None:
            body["timeout"] = timeout
        task_json: dict[str, Any] = await self._ok(
            "POST", "/api/tasks", body, headers, retry=idempotency_key is not None,
        )  # fmt: skip
        return task_json

    async def get(self, task_id: str) -> dict[str, Any]:
        """One task (ApiError 404 if it does not exist or is another principal's)."""
        task_json: dict[str, Any] = await self._ok("GET", "/api/tasks/" + quote(task_id, safe=""))
        return task_json

    async def list_tasks(self, state: str | Iterable[str] | None = None, limit: int = 50,
                         before: int | None = None) -> TaskPage:  # fmt: skip
        """One page of the caller's tasks, newest first.

        Args:
            state: only tasks in these states ("running", "queued,running" or a list).
            limit: tasks per page (1-200).
            before: the cursor of a previous page's `next_before`.
        """
        query = [("limit", str(limit))]
        if before is not None:
            query.append(("before", str(before)))
        if state:
            query.append(("state", state if isinstance(state, str) else ",".join(state)))
        body = await self._ok("GET", "/api/tasks?" + urlencode(query, safe=","))
        return TaskPage(body["tasks"], _next_before(body.get("next")))

    async def iter_tasks(self, state: str | Iterable[str] | None = None,
                         page_size: int = 100) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        """Every task of the caller, newest first, a page at a time."""
        before = None
        while True:
            page = await self.list_tasks(state, page_size, before)
            for task in page.tasks:
                yield task
            if page.next_before is None:
                return
            before = page.next_before

    async def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a task: a queued one is cancelled at once, a running one asked to stop.
        A task that already finished is returned as it is (the API's 409 carries it)."""
        status, body = await self.request(
            "POST", f"/api/tasks/{quote(task_id, safe='')}/cancel", retry=True
        )
        if status == 409 and isinstance(body, dict) and isinstance(body.get("task"), dict):
            task_json: dict[str, Any] = body["task"]
            return task_json
        if status >= 400:
            raise ApiError.from_body(status, body)
        return body  # type: ignore[no-any-return]

    async def delete(self, task_id: str) -> None:
        """Forget a finished task ("clear finished"); an unknown one is already gone.

        Raises:
            ApiError: 409 task_active for a task that has not finished.
        """
        status, body = await self.request(
            "DELETE", f"/api/tasks/{quote(task_id, safe='')}", retry=True
        )
        if status >= 400 and status != 404:
            raise ApiError.from_body(status, body)

    async def catalog(self) -> list[dict[str, Any]]:
        """The tasks this instance can run, with their parameters."""
        body = await self._ok("GET", "/api/catalog")
        return body["tasks"]  # type: ignore[no-any-return]

    async def me(self) -> dict[str, Any]:
        """Who the token says the caller is, and what it may do (`GET /api/me`)."""
        body: dict[str, Any] = await self._ok("GET", "/api/me")
        return body

    async def health(self) -> dict[str, Any]:
        """The instance's health: status ok, degraded or disk_full (with a detail), version
        and each service's state."""
        body: dict[str, Any] = await self._ok("GET", "/api/health")
        return body

    async def timeline(self, task_id: str, after: int = 0) -> list[Event]:
        """A task's recorded events, oldest first (every page), as the stream sends them."""
        path: str | None = f"/api/tasks/{quote(task_id, safe='')}/events?after={after}"
        events: list[Event] = []
        while path:
            body = await self._ok("GET", path)
            events.extend(_event_of(obj) for obj in body["events"])
            path = body.get("next")
        return events

    async def output(self, task_id: str) -> list[str]:
        """Every output line a task printed, from the event log (all pages)."""
        return output_lines(await self.timeline(task_id))

    def events(self, since: int | None = None, *, on_state: StateCallback | None = None,
               give_up_after: float | None = None) -> AsyncEventStream:  # fmt: skip
        """The principal's event stream (not connected yet); see `AsyncEventStream`."""
        return AsyncEventStream(self.ws, self.token, since, on_state=on_state,
                                give_up_after=give_up_after, tls=self.tls)  # fmt: skip

    async def close(self) -> None:
        """Close the HTTP session (the client may be used again: a new one opens)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            # The sockets' close callbacks run on the next loop turn: let them, so a loop
            # stopped right after leaves no socket unclosed.
            await asyncio.sleep(0)

    async def __aenter__(self) -> AsyncHeraldClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ------------------------------------------------------------------------- async stream


class AsyncEventStream:
    """The principal's events, each once and in order, across reconnects of the notifier.

    `open()` connects and returns the welcome; iterating (or `recv()`) yields every later
    decoded message: events, "caught_up", the welcome of each reconnection (its
    "reset" says the log was recreated) and "reset" messages: events of this principal
    after the resume point were deleted (retention pruned finished tasks, or the log was
    recreated), so the caller must reload its tasks from the API (`iter_tasks`); the
    events that remain still follow, each once. Iterating a stream that was not opened opens it
    and yields its welcome first. When the connection drops the stream reconnects by
    itself after the delays of `reconnect_delays()`, sending the last seq it saw, and
    drops any event it already yielded; closed with 4401 (its token was revoked) it does not
    reconnect but raises ApiError (401). The rules are `ClientSession`'s (docs/protocol.md);
    this moves text between it and a websockets connection. `close()` (from any task of
    the loop) ends the iteration. One task at a time may iterate.

    Args:
        url: the notifier's WebSocket URL.
        token: the principal's bearer token.
        since: the last seq already seen (the server replays every later event); None for
            live events only.
        on_state: called with (StreamState, retry_in seconds or None) at each change of
            state: CONNECTING for each attempt, CONNECTED at each welcome, RECONNECTING
            while waiting `retry_in` seconds before the next attempt, CLOSED at the end.
        give_up_after: seconds without a connection after which to stop trying and raise
            ServiceUnavailable; None (the default) tries for ever, 0 tries once.
        open_timeout: seconds one connection attempt may take (handshake and welcome).
        delays: makes the schedule of waits between attempts (a fresh one after each
            successful connection).
        tls: for a wss URL: the context to verify the server with (see
            `AsyncHeraldClient`); None: the system's trust store.
    """

    def __init__(
        self,
        url: str,
        token: str,
        since: int | None = None,
        *,
        on_state: StateCallback | None = None,
        give_up_after: float | None = None,
        open_timeout: float = 10.0,
        delays: Callable[[], Iterator[float]] = reconnect_delays,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.tls = tls
        self.token = token
        self.on_state = on_state
        self.give_up_after = give_up_after
        self.open_timeout = open_timeout
        # The protocol's rules: dedupe, cursor, subscriptions, backoff.
        self._session = ClientSession(since, delays=delays)
        self._conn: ClientConnection | None = None
        self._welcome: ServerMessage | None = None  # to be yielded by the next recv()
        self._retry_in: float | None = None  # before the next attempt (None: at once)
        self._closing = False
        self._closed_event: asyncio.Event | None = None
        self.state = StreamState.CLOSED  # until opened
        self._state_reported: tuple[StreamState, float | None] | None = None

    @property
    def resets(self) -> int:
        """How many "reset" messages came: reloads the caller was asked for."""
        return self._session.resets

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event yielded (or the head at the first welcome)."""
        return self._session.last_seq

    @property
    def closed(self) -> bool:
        """Closed by its owner, or it gave up: it yields nothing more."""
        return self._closing

    # ----------------------------------------------------------------- lifecycle

    async def open(self) -> ServerMessage:
        """Connect (retrying as configured) and return the welcome.

        Raises:
            ServiceUnavailable: gave up (see `give_up_after`).
            ApiError: the notifier refused the handshake (e.g. 401: a bad token).
            StreamClosed: closed meanwhile.
        """
        if self._closing:
            raise StreamClosed("the event stream is closed")
        if self._conn is None:
            await self._connect()
        welcome, self._welcome = self._welcome, None
        if welcome is None:
            raise RuntimeError("open() called on a stream that is already open")
        return welcome

    async def recv(self) -> ServerMessage:
        """The next message, reconnecting as needed.

        Raises:
            StreamClosed: the stream was closed (before or while waiting).
            ServiceUnavailable: gave up reconnecting (the stream is closed then).
            ApiError: the notifier refused a reconnection, or closed the connection with
                4401 because its token was revoked (the stream is closed then).
        """
        while True:
            if self._welcome is not None:
                welcome, self._welcome = self._welcome, None
                return welcome
            if self._closing:
                raise StreamClosed("the event stream is closed")
            conn = self._conn
            if conn is None:
                await self._connect()
                continue
            try:
                text = await conn.recv()
            except _connection_closed() as exc:
                self._conn = None
                if not self._closing:
                    self._dropped(exc)
                continue
            try:
                msg = self._session.receive_text(text)
            except ProtocolError as exc:  # (only a connection's first message raises)
                log.warning("ignoring a message the client cannot decode: %s", exc)
                continue
            if msg is not None:
                return msg

    def _dropped(self, exc: Exception) -> None:
        """The connection closed: wait as the session says, or give up (revoked)."""
        rcvd = getattr(exc, "rcvd", None)
        code = rcvd.code if rcvd is not None else None
        self._retry_in = self._session.connection_lost(code)
        if self._retry_in is not None:
            log.info("event stream dropped (%s); reconnecting", exc)
            return
        self._give_up()
        reason = rcvd.reason if rcvd is not None and rcvd.reason else "token revoked"
        raise ApiError(401, "unauthorized", reason)

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> ServerMessage:
        try:
            return await self.recv()
        except StreamClosed:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        """Close the connection and end the iteration (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._closed().set()  # ends a wait between attempts, or an attempt
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        self._set_state(StreamState.CLOSED)

    async def subscribe(self, task_ids: Iterable[str]) -> None:
        """From now on yield only the events of these tasks (added to those subscribed
        before; a task is dropped after its terminal event), for as long as the stream
        lives, reconnections included. Subscribe to a task as soon as it is submitted: the
        notifier then sends the events it had of it, so none is missed, however far the
        stream went meanwhile. `subscribe(())` yields nothing until a first task is
        added."""
        self._session.subscribe(task_ids)
        await self._send_pending()

    async def _send_pending(self) -> None:
        """Send what the session has to send on the current connection (if it drops, the
        reconnection sends again what is still wanted)."""
        from websockets.exceptions import ConnectionClosed

        texts = self._session.data_to_send()
        conn = self._conn
        if conn is None:
            return
        try:
            for text in texts:
                await conn.send(text)
        except ConnectionClosed:
            pass

    async def ping(self) -> float | None:
        """Ping the notifier on the current connection and wait for its pong: the round
        trip in seconds, or None when not connected or the connection closed first.
        (Cancel it to stop waiting: a notifier that stopped answering never pongs.)"""
        from websockets.exceptions import ConnectionClosed

        conn = self._conn
        if conn is None:
            return None
        try:
            pong = await conn.ping()
            return float(await pong)
        except ConnectionClosed:
            return None

    async def __aenter__(self) -> AsyncEventStream:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- connecting

    def _closed(self) -> asyncio.Event:
        # Made on first use, inside the loop that runs the stream.
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
            if self._closing:
                self._closed_event.set()
        return self._closed_event

    def _set_state(self, state: StreamState, retry_in: float | None = None) -> None:
        """The one place where the stream changes state: logged, and reported."""
        if self._state_reported == (state, retry_in):
            return
        self.state = state
        self._state_reported = (state, retry_in)
        if retry_in is None:
            log.debug("event stream %s", state.value)
        else:
            log.debug("event stream %s in %.2f s", state.value, retry_in)
        if self.on_state is not None:
            try:
                self.on_state(state, retry_in)
            except Exception:
                log.exception("the event stream's on_state callback failed")

    async def _connect(self) -> None:
        """Connect, waiting between attempts, until connected, closed or out of time.

        After a dropped connection it waits before the first attempt too (as long as the
        session says): the server it lost is most likely restarting.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        error: Exception | None = None
        while True:
            delay, self._retry_in = self._retry_in, None
            if delay is not None:
                if (self.give_up_after is not None
                        and loop.time() + delay - started > self.give_up_after):  # fmt: skip
                    self._give_up()
                    reason = error or "the connection was lost"
                    gave_up = TlsFailure if isinstance(error, TlsFailure) else ServiceUnavailable
                    raise gave_up(
                        f"no event stream from {self.url} for "
                        f"{loop.time() - started:.1f} s: {reason}"
                    ) from error
                self._set_state(StreamState.RECONNECTING, delay)
                try:
                    await asyncio.wait_for(self._closed().wait(), delay)
                except TimeoutError:
                    pass
            if self._closing:
                raise StreamClosed("the event stream is closed")
            self._set_state(StreamState.CONNECTING)
            try:
                conn, welcome = await self._attempt_unless_closed()
            except ServiceUnavailable as exc:
                log.debug("event stream attempt failed: %s", exc)
                error = exc
                self._retry_in = self._session.attempt_failed()
                continue
            except ApiError:
                self._give_up()
                raise
            self._conn = conn
            self._welcome = welcome
            await self._send_pending()  # the subscriptions, narrowing the new connection
            self._set_state(StreamState.CONNECTED)
            return

    def _give_up(self) -> None:
        self._closing = True
        self._closed().set()
        self._set_state(StreamState.CLOSED)

    async def _attempt_unless_closed(self) -> tuple[ClientConnection, ServerMessage]:
        """One attempt, abandoned (its connection closed) if the stream is closed first or
        the caller is cancelled."""
        attempt = asyncio.ensure_future(self._attempt())
        closer = asyncio.ensure_future(self._closed().wait())
        try:
            await asyncio.wait((attempt, closer), return_when=asyncio.FIRST_COMPLETED)
            if not self._closing:
                return attempt.result()
        except BaseException:
            await self._abandon(attempt)
            raise
        finally:
            closer.cancel()
        await self._abandon(attempt)
        raise StreamClosed("the event stream is closed")

    @staticmethod
    async def _abandon(attempt: asyncio.Future[tuple[ClientConnection, ServerMessage]]) -> None:
        """Stop an attempt; drop the connection it may have made meanwhile."""
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        if not attempt.cancelled() and attempt.exception() is None:
            attempt.result()[0].transport.abort()

    async def _attempt(self) -> tuple[ClientConnection, ServerMessage]:
        """One connection: the handshake (resuming from the cursor) and the welcome."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        headers = {"Authorization": f"Bearer {self.token}"}
        session = self._session
        since = session.since
        if since is not None:
            headers[SINCE_HEADER] = str(since)
        conn: ClientConnection | None = None
        # websockets refuses an ssl context for a ws:// URL; wss:// without one verifies
        # with the system's trust store.
        tls = self.tls if self.url.startswith("wss:") else None
        try:
            async with asyncio.timeout(self.open_timeout):
                conn = await connect(
                    self.url, additional_headers=headers, open_timeout=None,
                    max_size=MAX_MESSAGE, compression=None, proxy=None, close_timeout=2,
                    ssl=tls,
                )  # fmt: skip
                session.connection_made()
                welcome = session.receive_text(await conn.recv())
            assert welcome is not None  # (the first message is a welcome, or it raised)
            return conn, welcome
        except InvalidStatus as exc:
            status = exc.response.status_code
            reason = exc.response.body.decode(errors="replace").strip() if exc.response.body \
                else exc.response.reason_phrase  # fmt: skip
            if status in _WS_REFUSALS:
                raise ApiError(status, _WS_REFUSALS[status], reason) from None
            raise ServiceUnavailable(f"cannot connect to {self.url}: {status} {reason}") from exc
        except (OSError, TimeoutError, WebSocketException, ProtocolError) as exc:
            if conn is not None:
                conn.transport.abort()
            if _tls_failure(exc):
                raise TlsFailure(f"TLS failed with {self.url}: {exc}") from exc
            raise ServiceUnavailable(f"cannot connect to {self.url}: {exc or type(exc).__name__}"
                                     ) from exc  # fmt: skip
        except BaseException:
            if conn is not None:  # cancelled between the handshake and the welcome
                conn.transport.abort()
            raise


# ------------------------------------------------------------------- blocking facade

_SLICE = 0.1  # seconds: how long the main thread blocks before it can see a Ctrl-C


def _wait(fut: concurrent.futures.Future[Any], timeout: float | None) -> bool:
    """Wait for `fut` in short slices, so a Ctrl-C reaches the waiting main thread at
    once; True when it is done, False when `timeout` passed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        slice_ = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
        if slice_ <= 0:
            return fut.done()
        try:
            fut.exception(timeout=slice_)  # never raises the coroutine's own error
            return True
        except concurrent.futures.CancelledError:
            return True
        except TimeoutError:
            continue
        except RuntimeError as exc:
            # A Ctrl-C that lands inside Condition.wait just after it released its lock
            # (CPython runs the handler there) leaves `with condition:` to release it
            # again: "cannot release un-acquired lock" hides the KeyboardInterrupt. The
            # lock is free either way; the Ctrl-C is what happened.
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise


class _LoopThread:
    """A private event loop in a daemon thread: where the facade's async objects live."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="herald-client", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and wait for it; a Ctrl-C while waiting cancels it."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking client call from its own loop (an on_state callback?)")
        fut = self.submit(coro)
        try:
            _wait(fut, None)
        except BaseException:
            fut.cancel()
            raise
        return fut.result()

    def stop(self) -> None:
        """Cancel what is left on the loop, stop it, join the thread, close the loop."""
        if self.loop.is_closed():
            return

        async def finish() -> None:
            current = asyncio.current_task()
            leftovers = [t for t in asyncio.all_tasks() if t is not current]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            await self.loop.shutdown_asyncgens()
            await self.loop.shutdown_default_executor()

        try:
            self.run(finish())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
            self.loop.close()


class HeraldClient:
    """A blocking client of one instance: `AsyncHeraldClient`'s methods, run on a private
    event loop in a daemon thread (started on first use, stopped by `close()`).

    Meant for the command line and the tests; use it from one thread at a time. A Ctrl-C
    while a call waits cancels that call. The client may be used again after `close()`.
    """

    def __init__(self, api: str, ws: str, token: str, timeout: float = 30.0) -> None:
        self._async = AsyncHeraldClient(api, ws, token, timeout=timeout)
        self.api, self.ws, self.token = self._async.api, ws, token
        self._runner: _LoopThread | None = None
        self._lock = threading.Lock()
        self._streams: set[EventStream] = set()

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> HeraldClient:
        """A client of the instance serving `data_dir` (from its runtime file).

        Raises:
            NotRunning: no instance serves it.
        """
        info = _instance(data_dir)
        return cls(info.api, info.ws, info.token)

    @property
    def async_client(self) -> AsyncHeraldClient:
        """The async client underneath (to be used on this facade's loop only)."""
        return self._async

    def _loop(self) -> _LoopThread:
        with self._lock:
            if self._runner is None:
                self._runner = _LoopThread()
            return self._runner

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop().run(coro)

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
        """Send a request; return (status, decoded JSON body). See AsyncHeraldClient."""
        return self._run(self._async.request(method, path, body, headers))

    def submit(self, task: str, args: dict[str, Any] | None = None,
               idempotency_key: str | None = None, *,
               timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Submit a task (see `AsyncHeraldClient.submit`; `timeout` is the attempts' time
        limit in seconds, None for the task's default)."""
        return self._run(self._async.submit(task, args, idempotency_key, timeout=timeout))

    def get(self, task_id: str) -> dict[str, Any]:
        return self._run(self._async.get(task_id))

    def list_tasks(self, state: str | Iterable[str] | None = None, limit: int = 50,
                   before: int | None = None) -> TaskPage:  # fmt: skip
        return self._run(self._async.list_tasks(state, limit, before))

    def iter_tasks(self, state: str | Iterable[str] | None = None,
                   page_size: int = 100) -> Iterator[dict[str, Any]]:  # fmt: skip
        """Every task of the caller, newest first, fetched a page at a time."""
        before = None
        while True:
            page = self.list_tasks(state, page_size, before)
            yield from page.tasks
            if page.next_before is None:
                return
            before = page.next_before

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._run(self._async.cancel(task_id))

    def delete(self, task_id: str) -> None:
        self._run(self.async_client.delete(task_id))

    def catalog(self) -> list[dict[str, Any]]:
        return self._run(self._async.catalog())

    def health(self) -> dict[str, Any]:
        return self._run(self._async.health())

    def me(self) -> dict[str, Any]:
        return self._run(self._async.me())

    def timeline(self, task_id: str, after: int = 0) -> list[Event]:
        return self._run(self._async.timeline(task_id, after))

    def output(self, task_id: str) -> list[str]:
        return self._run(self._async.output(task_id))

    def events(self, since: int | None = None, *, on_state: StateCallback | None = None,
               give_up_after: float | None = None) -> EventStream:  # fmt: skip
        """The principal's event stream (not connected yet); see `EventStream`.
        `on_state` is called on the client's loop thread."""
        stream = EventStream(self, self._async.events(since, on_state=on_state,
                                                      give_up_after=give_up_after))  # fmt: skip
        self._streams.add(stream)
        return stream

    def close(self) -> None:
        """Close open streams and the HTTP session; stop the loop thread."""
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            for stream in list(self._streams):
                stream._close_on(runner)
            runner.run(self._async.close())
        finally:
            runner.stop()

    def __enter__(self) -> HeraldClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStream:
    """A blocking view of an `AsyncEventStream`, on its client's loop thread.

    Iterate `messages(timeout)`: it yields decoded messages, and None whenever `timeout`
    passes with nothing new (so the caller can check deadlines or react to Ctrl-C). A
    Ctrl-C while it waits loses nothing: the next `messages()` picks up the same message.
    Reconnecting is the underlying stream's job; the iteration ends when the stream is
    closed.
    """

    def __init__(self, client: HeraldClient, stream: AsyncEventStream) -> None:
        self._client = client
        self._stream = stream
        self._next: concurrent.futures.Future[ServerMessage] | None = None

    @property
    def last_seq(self) -> int | None:
        return self._stream.last_seq

    @property
    def state(self) -> StreamState:
        return self._stream.state

    def open(self) -> ServerMessage:
        """Connect and return the welcome."""
        return self._client._run(self._stream.open())

    def messages(self, timeout: float = 0.5) -> Iterator[ServerMessage | None]:
        """Messages as they come; None after each `timeout` seconds without one.

        Raises:
            ServiceUnavailable, ApiError: the stream gave up (see AsyncEventStream).
        """
        runner = self._client._loop()
        while True:
            if self._next is None:
                self._next = runner.submit(self._stream.recv())
            if not _wait(self._next, timeout):
                yield None
                continue
            fut, self._next = self._next, None
            try:
                msg = fut.result()
            except (StreamClosed, concurrent.futures.CancelledError):
                return
            yield msg

    def close(self) -> None:
        """Close the connection (idempotent)."""
        runner = self._client._runner
        if runner is not None:
            self._close_on(runner)
        self._client._streams.discard(self)

    def _close_on(self, runner: _LoopThread) -> None:
        try:
            runner.run(self._stream.close())
        finally:
            self._client._streams.discard(self)
            fut, self._next = self._next, None
            if fut is not None:
                _wait(fut, 5.0)  # the pending recv ends with StreamClosed

    def __enter__(self) -> EventStream:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
