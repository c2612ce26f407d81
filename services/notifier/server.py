"""The notifier process: `herald service notifier --data-dir D [--port P] [--web-port W]`.

One `Notifier` serves WebSocket connections on 127.0.0.1 at the path /ws (or on `--host`,
reached by its `--allowed-host` names, over TLS with `--tls-cert`/`--tls-key`). Each connection
is one principal's `Subscription`: it is sent a welcome, the replay of the events it
missed, `caught_up`, then live events. What a connection is sent apart from live events
(and how its messages are answered) is its `ServerSession`'s to say
(`services.core.session`): this shell reads the log for it and writes what it says. Live
events are read from the log once per wake-up for everybody and fanned out by the core
`Router`, which groups the connections that get the same events: each group's events are
encoded and framed once, and the same bytes are written to each of its connections that is
live and caught up (nothing of its own waiting to be sent), without waiting for them to
drain, as websockets' `broadcast()` does: one write per connection per wake-up. A
connection that still has messages of its own queued (a replay, a welcome, a pong) gets
live events through its own outbox and sender task, in order after them; so a slow client
delays nobody else.

A connection may subscribe to some of its principal's tasks (`subscribe`, see
`services.core.envelope`): it is then sent only their events.

Hostile or broken clients are bounded: a connection's outbox holds at most `max_outbox`
bytes (8 MiB) of live messages (counting what is written to its socket's buffer and not
yet taken by the client), beyond which it is closed with 1013 (try again later; it
resumes losslessly from its last seq), and a replay reads pages of at most `PAGE_BYTES` at
the client's pace. A principal may hold at most `max_connections` (64) connections; one
more is closed with 4429 (`CLOSE_TOO_MANY_CONNECTIONS`) and a reason. The soft limit of
open files is raised to the hard one at start, so the cap, not the fd table, is what a
crowd of connections meets first.

Idle, the notifier sleeps: a connection's keepalive is one sweep for every connection, every
`ping_interval`, armed only while connections are open, that pings only the connections it
has heard nothing from (not even a ping of their own) for that long and closes those whose
ping went unanswered for `ping_timeout` (1011), as websockets' own keepalive would; a client
that pings (or sends anything) at least that often is never pinged. The fallback look at
the log (in case a wake-up was lost) backs off while nothing happens.

The notifier only reads the log. A read that fails (a disk that fails, or a full one that
the log's shared memory cannot grow on) is tried again with backoff from the same cursor,
and a client connecting meanwhile is closed with 1013 (try again later): nothing is lost,
nothing crashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import math
import resource
import signal
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from services.auth import Authenticator, bearer_token, hash_token, host_allowed, origin_allowed
from services.config import load_config
from services.core.delivery import Router, Subscription
from services.core.envelope import (
    CLOSE_GOING_AWAY,
    CLOSE_REVOKED,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TRY_AGAIN_LATER,
    ProtocolError,
    encode_event,
    parse_since,
)
from services.core.events import Event
from services.core.session import MAX_SUBSCRIBED, ServerSession
from services.runtime import (
    announce_ready,
    cannot_start,
    die_with_parent,
    is_loopback,
    layout_from,
    public_url,
    server_tls_context,
    service_arguments,
    setup_logging,
    watch_stdin,
)
from services.store.backend import Ledger, WakeSource, backend_of
from services.wake import PRUNED_WAKE, REVOKED_WAKE

log = logging.getLogger("herald.notifier")

PATH = "/ws"
PAGE = 1000  # events per read from the log
PAGE_BYTES = 4 * 1024 * 1024  # ... and at most about this much of their data (one event more)
PAGES_PER_TURN = 8  # a burst bigger than this is read over several loop turns
# Seconds between checks of the log's head in case a wake-up datagram was lost (rare on
# a local socket). Each check wakes an idle process, which is dearer than it looks: on a
# cold CPU a few-microsecond check costs milliseconds.
FALLBACK_INTERVAL = 10.0
# ... doubled after each look that found nothing new, up to this many times as long, while
# no wake-up comes (a wake-up brings it back to FALLBACK_INTERVAL): a datagram is lost, if
# ever, in a burst of them (a full socket), and after the burst the early looks find it.
FALLBACK_BACKOFF = 16
# Bytes of live messages queued for one client before it is closed (1013). The memory a
# connection can pin is about this, plus one message and the socket's buffers.
MAX_OUTBOX = 8 * 1024 * 1024
MAX_CONNECTIONS = 64  # per principal; one more is closed with CLOSE_TOO_MANY_CONNECTIONS
MAX_MESSAGE = 64 * 1024  # largest client message accepted
TOO_FAR_BEHIND = ("try again later: more than {} MiB of events queued for a client that does "
                  "not read them; reconnect with your last seq")  # fmt: skip
TOO_MANY = "too many connections: this principal already has {} open"
READ_FAILED = "try again later: the event log cannot be read right now"
REST_AFTER = 0.0005  # seconds: a fan-out longer than this is followed by a rest as long
READ_RETRY_FIRST, READ_RETRY_MAX = 0.1, 2.0  # seconds before reading again after a failure
SINCE_HEADER = "Herald-Since"
URL_TOKEN_PARAMS = ("token", "access_token")
REVOKED = "unauthorized: this token was revoked"


class _Connection(ServerConnection):
    """A connection that carries what its handshake established, and when the client was
    last heard from (for the keepalive)."""

    principal: str = ""
    token_sha256: str = ""
    since: int | None = None
    heard_at: float = 0.0  # loop time of the last bytes received
    ping_sent: float | None = None  # loop time of the keepalive ping not answered yet
    pong_due = math.inf  # ... by when it must be (its time runs once the ping is written)

    def data_received(self, data: bytes) -> None:
        self.heard_at = self.loop.time()
        super().data_received(data)


class _Client:
    """One connected client: its protocol session, its subscription once live, its outbox
    and the task that sends the outbox.

    Messages leave in the order they were queued. Replay pages are paced by `drained()`;
    live messages are refused (`queue_live` returns False) once the outbox would hold more
    than `max_outbox` bytes (as Python holds them: `sys.getsizeof`). An empty outbox takes
    any one message, so an event bigger than the limit still reaches a client that reads.
    """

    def __init__(self, ws: ServerConnection, principal: str, max_outbox: int) -> None:
        self.ws = ws
        self.principal = principal
        # What it is sent, apart from the live fan-out (the per-connection rules).
        self.session = ServerSession(principal, page=PAGE, page_bytes=PAGE_BYTES,
                                     max_subscribed=MAX_SUBSCRIBED)  # fmt: skip
        self.sub: Subscription | None = None  # routed live events (the session's, once live)
        self.closed = False
        self._max_outbox = max_outbox
        self._outbox: deque[str] = deque()
        self.queued_bytes = 0  # of what is in the outbox
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def queue(self, texts: Iterable[str]) -> None:
        if self.closed:
            return
        size = 0
        for text in texts:
            self._outbox.append(text)
            size += sys.getsizeof(text)
        self.queued_bytes += size
        self._idle.clear()
        self._ready.set()

    def flush(self) -> int:
        """Queue what the session has to send; returns how many messages."""
        texts = self.session.data_to_send()
        if texts:
            self.queue(texts)
        return len(texts)

    def queue_live(self, texts: list[str]) -> bool:
        """Queue live messages; False if that would put the client too far behind."""
        size = self.queued_bytes + sum(map(sys.getsizeof, texts))
        if size > self._max_outbox and (self._outbox or len(texts) > 1):
            return False
        self.queue(texts)
        return True

    def live_and_idle(self) -> bool:
        """Live (caught up) with nothing of its own queued or being sent: what the fan-out
        writes now reaches the socket in order."""
        return self.sub is not None and self._idle.is_set() and not self.closed

    def write_now(self, frames: bytes, count: int) -> bool:
        """Write `count` framed live messages straight to the socket's buffer (skipped
        when the connection is closing); False if that would put the client too far
        behind: the buffer counts as its outbox."""
        ws = self.ws
        if ws.protocol.state is not State.OPEN:
            return True
        transport = ws.transport
        buffered = transport.get_write_buffer_size()
        if buffered + len(frames) > self._max_outbox and (buffered or count > 1):
            return False
        transport.write(frames)
        return True

    async def drained(self) -> None:
        """Wait until everything queued has been handed to the connection (or it closed)."""
        await self._idle.wait()

    def stop(self) -> None:
        """Drop whatever is queued and let the sender task end."""
        self.closed = True
        self._outbox.clear()
        self.queued_bytes = 0
        self._ready.set()
        self._idle.set()

    async def run_sender(self) -> None:
        ws, outbox = self.ws, self._outbox
        try:
            while not self.closed:
                await self._ready.wait()
                self._ready.clear()
                while outbox:
                    text = outbox.popleft()
                    self.queued_bytes -= sys.getsizeof(text)
                    # Returns without yielding unless the socket's buffer is full.
                    await ws.send(text)
                self._idle.set()
        except ConnectionClosed:
            pass
        finally:
            self.stop()


class Notifier:
    """The WebSocket server and the fan-out of the event log to its connections.

    Args:
        store: the event log (read only).
        authenticator: maps tokens to principals.
        receiver: the wake-up socket that says "the log has grown".
        web_port: the web service's port, whose page's Origin is allowed (None: no page).
        host, port: where to listen (port 0: any free port; see `port` after `start`).
        allowed_hosts: the names a non-loopback bind is reached by, which the Host check
            accepts (with the port); the loopback names are accepted on a loopback bind.
        web_origins: the page's origins when the web is not on loopback or not on this
            host (they replace the loopback ones of `web_port`).
        ssl_context: serve wss with it (None: plain ws).
        fallback_interval: seconds between cheap checks of the log's head, in case a
            wake-up was lost, after a wake-up; doubled after each check that found nothing,
            up to `FALLBACK_BACKOFF` times as long.
        max_outbox: bytes of live messages queued for one client before it is closed
            with 1013.
        max_connections: connections one principal may hold at once; one more is closed
            with CLOSE_TOO_MANY_CONNECTIONS.
        ping_interval, ping_timeout: WebSocket keepalive, in seconds: a connection silent
            for `ping_interval` is pinged, and closed (1011) when nothing came back within
            `ping_timeout` (None: no keepalive; no timeout).
    """

    def __init__(
        self,
        store: Ledger,
        authenticator: Authenticator,
        receiver: WakeSource,
        *,
        web_port: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_hosts: tuple[str, ...] = (),
        web_origins: tuple[str, ...] = (),
        ssl_context: Any = None,
        fallback_interval: float = FALLBACK_INTERVAL,
        max_outbox: int = MAX_OUTBOX,
        max_connections: int = MAX_CONNECTIONS,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        errors: tuple[type[BaseException], ...] = (sqlite3.Error,),
        global_log: bool = True,
    ) -> None:
        self._store = store
        self._errors = errors
        # One log for all (SQLite: fan out from one cursor) or one per principal (Redis:
        # a cursor per principal with subscribers, read when a wake-up names it).
        self._global_log = global_log
        self._pcursors: dict[str, int] = {}  # principal -> seq fanned out through
        self._subs_of: dict[str, int] = {}  # principal -> live subscriptions
        self._due: set[str] = set()  # principals whose logs a wake-up said moved
        self._all_due = False  # ... or every subscribed principal's
        self._auth = authenticator
        self._receiver = receiver
        self._web_port = web_port
        self._host = host
        self._port = port
        self._names = tuple(n.lower() for n in allowed_hosts)
        self._loopback = is_loopback(host)
        self._web_origins = tuple(o.lower() for o in web_origins)
        self._ssl = ssl_context
        self._fallback_interval = fallback_interval
        self._max_outbox = max_outbox
        self._max_connections = max_connections
        self._open_by_principal: dict[str, int] = {}
        self._ping_interval, self._ping_timeout = ping_interval, ping_timeout
        self._open: set[_Connection] = set()  # past the handshake, served, not closed yet
        self._keepalive: asyncio.TimerHandle | None = None
        self._fallback_delay = fallback_interval  # until the next fallback look
        self._router = Router()
        self._client_of: dict[Subscription, _Client] = {}
        self._cursor = 0  # every event up to this log position has been fanned out
        self._pruned_seen: dict[str, int] = {}  # the pruning watermarks looked at
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pump_scheduled = False
        self._rest_until = 0.0  # loop time before which no fan-out starts (see _pump)
        self._after_rest: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None  # reading again after a failure
        self._retry_delay = READ_RETRY_FIRST
        self._tasks: set[asyncio.Task[None]] = set()
        # Counters of the fan-out (for the bench and the tests): events framed for the
        # shared path, writes of those frames to sockets, live messages queued instead.
        # Keepalive pings sent, and the fallback's looks at the log.
        self.stats = {"framed": 0, "writes": 0, "queued": 0, "pings": 0, "fallback_looks": 0}

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Where clients reach it (its first allowed name, when it has one)."""
        scheme = "wss" if self._ssl is not None else "ws"
        return public_url(scheme, self._host, self._names, self._port) + PATH

    @property
    def fallback_delay(self) -> float:
        """Seconds between the last fallback look at the log (or the last wake-up) and
        the next one."""
        return self._fallback_delay

    @property
    def connections(self) -> int:
        """How many clients are subscribed to live events."""
        return len(self._router)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen, and start following the log from its current head."""
        self._loop = asyncio.get_running_loop()
        self._cursor = self._store.head() if self._global_log else 0
        self._pruned_seen = self._store.pruned_marks()
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            process_request=self._check_handshake,
            create_connection=_Connection,
            # Small JSON messages on loopback: compression would cost CPU and memory only.
            compression=None,
            max_size=MAX_MESSAGE,
            # The keepalive is ours (`_on_keepalive`): one timer for every connection, not
            # a task and a timer each, and no ping to a client heard from anyway.
            ping_interval=None,
            ping_timeout=None,
            close_timeout=3,
            ssl=self._ssl,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._loop.add_reader(self._receiver.fileno(), self._on_wake)
        self._timer = self._loop.call_later(self._fallback_interval, self._on_timer)
        log.info("listening on %s", self.url)

    async def stop(self) -> None:
        """Close every connection with 1001 (going away) and stop listening."""
        if self._loop is not None:
            self._loop.remove_reader(self._receiver.fileno())
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._after_rest is not None:
            self._after_rest.cancel()
            self._after_rest = None
        if self._server is not None:
            self._server.close(code=CLOSE_GOING_AWAY, reason="notifier stopping")
            await self._server.wait_closed()
            self._server = None
        if self._tasks:
            await asyncio.wait(self._tasks)

    # ------------------------------------------------------------------ handshake

    def _check_handshake(self, ws: ServerConnection, request: Request) -> Response | None:
        """Refuse a handshake with the right HTTP status, or note who is connecting.

        A bearer token in the Authorization header, or, with none, the session cookie of
        a browser signed in through `herald open` (services/web/browser.py), from the
        page's own origin only."""
        from services.auth import browser_origins, cookie_value, session_cookie_name

        url = urlsplit(request.path)
        if url.path != PATH:
            return self._refuse(ws, http.HTTPStatus.NOT_FOUND, "Not found: the WebSocket is at /ws")
        headers = request.headers
        hosts = headers.get_all("Host")
        if len(hosts) != 1 or not host_allowed(hosts[0], self._port, self._names,
                                               self._loopback):  # fmt: skip
            return self._refuse(ws, http.HTTPStatus.FORBIDDEN, "Forbidden: unexpected Host")
        origins = headers.get_all("Origin")
        page = None if self._web_origins else self._web_port  # given origins replace its own
        if len(origins) > 1 or (origins and not origin_allowed(origins[0], page,
                                                               also=self._web_origins)):
            return self._refuse(ws, http.HTTPStatus.FORBIDDEN, "Forbidden: foreign Origin")
        query = parse_qs(url.query, keep_blank_values=True)
        if any(name in query for name in URL_TOKEN_PARAMS):
            # A token in a URL ends up in logs and histories: refuse it outright.
            return self._refuse(
                ws, http.HTTPStatus.UNAUTHORIZED,
                "Unauthorized: send the token in the Authorization header, not the URL",
            )  # fmt: skip
        auths = headers.get_all("Authorization")
        token = bearer_token(auths[0]) if len(auths) == 1 else None
        principal = self._auth.principal_for(token)
        credential = hash_token(token or "")
        if not auths and principal is None:
            # A browser: its session cookie, from Herald's page only (exactly its origin:
            # a cookie reaches every port of the host, whichever page made the request).
            session = self._auth.session_for(cookie_value(
                headers.get_all("Cookie"), session_cookie_name(self._web_port)))  # fmt: skip
            if session is not None:
                if len(origins) != 1 or origins[0].lower() not in (
                        self._web_origins or browser_origins(self._web_port)):  # fmt: skip
                    return self._refuse(ws, http.HTTPStatus.FORBIDDEN, "Forbidden: a browser "
                                        "session connects from Herald's own page only")
                principal, credential = session.principal, session.credential
        if principal is None:
            return self._refuse(
                ws, http.HTTPStatus.UNAUTHORIZED,
                "Unauthorized: send a valid token as 'Authorization: Bearer <token>'",
            )  # fmt: skip
        given = headers.get_all(SINCE_HEADER) + query.get("since", [])
        since = None
        if given:
            try:
                values = {parse_since(v) for v in given}
            except ProtocolError:
                values = set()
            if len(values) != 1:
                return self._refuse(
                    ws, http.HTTPStatus.BAD_REQUEST,
                    "Bad request: since must be one non-negative integer",
                )  # fmt: skip
            since = values.pop()
        conn = cast(_Connection, ws)
        conn.principal = principal
        conn.token_sha256 = credential  # a token's hash, or a session's (see holds())
        conn.since = since
        return None

    @staticmethod
    def _refuse(ws: ServerConnection, status: http.HTTPStatus, reason: str) -> Response:
        log.info("refused a handshake from %s: %d %s", ws.remote_address, status, reason)
        response = ws.respond(status, reason + "\n")
        if status == http.HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Bearer realm="herald"'
        return response

    # ---------------------------------------------------------------- connections

    async def _handle(self, ws: ServerConnection) -> None:
        conn = cast(_Connection, ws)
        principal = conn.principal
        held = self._open_by_principal.get(principal, 0)
        if held >= self._max_connections:
            log.warning("%s has %d connections already; closing one more from %s",
                        principal, held, ws.remote_address)  # fmt: skip
            await self._close_or_abort(ws, CLOSE_TOO_MANY_CONNECTIONS, TOO_MANY.format(held))
            return
        self._open_by_principal[principal] = held + 1
        conn.heard_at = asyncio.get_running_loop().time()
        self._open.add(conn)
        self._arm_keepalive()
        try:
            await self._serve_client(ws, principal, conn.since)
        finally:
            self._open.discard(conn)
            if not self._open and self._keepalive is not None:
                self._keepalive.cancel()  # nobody to keep alive: no timer
                self._keepalive = None
            left = self._open_by_principal[principal] - 1
            if left:
                self._open_by_principal[principal] = left
            else:
                del self._open_by_principal[principal]

    async def _serve_client(self, ws: ServerConnection, principal: str,
                            since: int | None) -> None:  # fmt: skip
        client = _Client(ws, principal, self._max_outbox)
        sender = asyncio.create_task(client.run_sender())
        log.info("%s connected from %s", client.principal, ws.remote_address)
        try:
            try:
                await self._stream(client, since)
            except self._errors as exc:
                log.warning("cannot replay the log to %s: %s", client.principal, exc)
                await ws.close(CLOSE_TRY_AGAIN_LATER, READ_FAILED)
                return
            session = client.session
            async for message in ws:
                try:
                    request = session.receive_text(message)
                    if request.type == "subscribe":
                        self._subscribe(client, request.tasks, request.since)
                except ProtocolError as exc:
                    client.flush()
                    await ws.close(exc.code, exc.reason)
                    break
                except self._errors as exc:
                    log.warning("cannot replay the log to %s: %s", client.principal, exc)
                    await ws.close(CLOSE_TRY_AGAIN_LATER, READ_FAILED)
                    break
                client.flush()  # a pong, or a subscribe's answer
                if request.type == "resume":
                    try:
                        await self._stream(client, request.since)
                    except self._errors as exc:
                        log.warning("cannot replay the log to %s: %s", client.principal, exc)
                        await ws.close(CLOSE_TRY_AGAIN_LATER, READ_FAILED)
                        break
        except ConnectionClosed:
            pass
        finally:
            self._unsubscribe(client)
            client.stop()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            log.info("%s disconnected (%s)", client.principal, ws.close_code)

    async def _stream(self, client: _Client, since: int | None) -> None:
        """Send a welcome, replay the client's events after `since`, then go live (the
        session says what to send; this reads the log for it, at the client's pace)."""
        self._unsubscribe(client)
        if client.closed:
            return
        session, principal, store = client.session, client.principal, self._store
        head = store.head(principal)
        session.open(since, head, 0 if since is None else store.pruned_through(principal))
        client.flush()
        while (after := session.replay_after()) is not None:
            page = store.events_after(after, principal=principal, limit=PAGE,
                                      max_bytes=PAGE_BYTES)  # fmt: skip
            session.replay_page(page)
            if client.flush() and session.replay_after() is not None:
                # A long replay goes at the client's pace. Events appended meanwhile are
                # found by the next read: the subscription is not routed yet.
                await client.drained()
                if client.closed:
                    return
        if session.needs_pruned_check():
            # Pruned while the replay went on: what was sent may have gaps.
            session.replay_done(store.pruned_through(principal))
        # No await since the last read: the live fan-out takes over exactly after the
        # replay's cursor (it reads events after its own cursor, and Subscription.accept
        # drops any seq the replay already sent).
        sub = session.go_live()
        if not self._global_log:
            # This principal's fan-out starts no later than the replay's start: what was
            # appended since is read again, and dropped by seq (Subscription.accept).
            self._pcursors.setdefault(principal, head)
            self._subs_of[principal] = self._subs_of.get(principal, 0) + 1
        self._router.add(sub)
        self._client_of[sub] = client
        client.sub = sub
        client.flush()

    def _subscribe(self, client: _Client, tasks: Iterable[str], since: int | None) -> None:
        """Narrow a live connection to some tasks (or add tasks to those it has); see
        `ServerSession.subscribe`. Cheap: one indexed read per added task."""
        if client.sub is None or client.closed:
            return
        principal, store = client.principal, self._store

        def read(after: int, task_id: str) -> list[Event]:
            return store.events_after(after, principal=principal, task_id=task_id, limit=PAGE)

        client.session.subscribe(tasks, since, store.head(principal), read)

    def _unsubscribe(self, client: _Client) -> None:
        if client.sub is not None:
            client.session.sub = None
            if not self._global_log:
                left = self._subs_of.get(client.principal, 0) - 1
                if left > 0:
                    self._subs_of[client.principal] = left
                else:
                    self._subs_of.pop(client.principal, None)
                    self._pcursors.pop(client.principal, None)
            self._router.remove(client.sub)
            self._client_of.pop(client.sub, None)
            client.sub = None

    # ------------------------------------------------------------------ keepalive

    def _arm_keepalive(self) -> None:
        """Arm the keepalive sweep, if it is not and a connection is open."""
        if self._keepalive is not None or not self._open or self._ping_interval is None:
            return
        period = self._ping_interval
        if self._ping_timeout is not None:
            period = min(period, self._ping_timeout)
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(period, self._on_keepalive)

    def _on_keepalive(self) -> None:
        """One sweep of every connection: a ping to those silent for `ping_interval` (one
        task for all of them), a close (1011) for those that left their ping unanswered for
        `ping_timeout`. Anything received from a client answers its ping: it is alive."""
        self._keepalive = None
        interval, timeout = self._ping_interval, self._ping_timeout
        assert interval is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Timers may run a hair early, and a client that pings every `interval` itself
        # must not lose the race with the sweep every time: 1 % of slack.
        slack = interval / 100
        quiet: list[_Connection] = []
        for conn in self._open:
            if conn.protocol.state is not State.OPEN:
                continue
            if conn.ping_sent is not None:
                if conn.heard_at >= conn.ping_sent:
                    conn.ping_sent = None  # answered (or anything else came: alive)
                elif now >= conn.pong_due - slack:
                    log.info("%s: no answer to a keepalive ping for %.0f s; closing",
                             conn.principal, now - conn.ping_sent)  # fmt: skip
                    conn.ping_sent = None
                    self._spawn(self._close_or_abort(conn, CloseCode.INTERNAL_ERROR,
                                                     "keepalive ping timeout"))  # fmt: skip
                    continue
                else:
                    continue  # its answer may still come
            if now - conn.heard_at >= interval - slack:
                conn.ping_sent, conn.pong_due = now, math.inf
                quiet.append(conn)
        if quiet:
            self.stats["pings"] += len(quiet)
            self._spawn(self._send_pings(quiet, timeout))
        self._arm_keepalive()

    @staticmethod
    async def _send_pings(conns: list[_Connection], timeout: float | None) -> None:
        loop = asyncio.get_running_loop()

        async def ping(conn: _Connection) -> None:
            with contextlib.suppress(ConnectionClosed):
                await conn.ping()  # its answer sets heard_at
                # As websockets' own keepalive: the time to answer runs from when the
                # ping left (behind what was queued before it), not from the sweep.
                if timeout is not None:
                    conn.pong_due = loop.time() + timeout

        # At once, not one after the other: a ping is written before it waits for the
        # client's buffer to drain, and a client that reads nothing must delay no other.
        await asyncio.gather(*map(ping, conns))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in a task the notifier waits for when it stops."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -------------------------------------------------------------------- fan-out

    def _on_wake(self) -> None:
        messages = self._receiver.drain()
        if not self._global_log:
            self._note_due(messages)
        if self._fallback_delay != self._fallback_interval and self._loop is not None:
            # Busy again: the fallback looks soon again (it had backed off while idle).
            self._fallback_delay = self._fallback_interval
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(self._fallback_delay, self._on_timer)
        self._pump()
        if PRUNED_WAKE in messages:
            self._check_pruned()
        if REVOKED_WAKE in messages:
            self._close_revoked()

    def _close_revoked(self) -> None:
        """Close, with CLOSE_REVOKED, every connection whose token auth.json no longer
        holds (its principal revoked, or given a new token)."""
        self._auth.reload(force=True)
        for ws in list(self._server.connections if self._server is not None else ()):
            conn = cast(_Connection, ws)
            if conn.principal and not self._auth.holds(conn.principal, conn.token_sha256):
                log.info("%s: token revoked; closing its connection", conn.principal)
                for client in [c for c in self._client_of.values() if c.ws is ws]:
                    self._unsubscribe(client)  # not one more event for it
                    client.stop()
                self._spawn(self._close_or_abort(ws, CLOSE_REVOKED, REVOKED))

    def _check_pruned(self) -> None:
        """After pruning: a live subscriber whose principal lost events it had not been
        sent yet (pruned before the fan-out read them) is told to reload ("reset").

        Cheap when nothing was pruned: one read of a table with a row per principal.
        """
        try:
            marks = self._store.pruned_marks()
        except self._errors:
            log.exception("cannot read the pruning watermarks")
            return
        raised = {p for p, t in marks.items() if t > self._pruned_seen.get(p, 0)}
        self._pruned_seen = marks
        if not raised:
            return
        for sub, client in list(self._client_of.items()):
            if sub.principal in raised:
                client.session.pruned(marks.get(sub.principal, 0))
                client.flush()

    def _note_due(self, messages: list[bytes]) -> None:
        """Which principals' logs to read, from wake-ups "principal P is at seq N"; any
        other look (or one that cannot be parsed) means every subscribed principal's."""
        from services.wake_redis import parse_principal_wake

        for m in messages:
            if m in (PRUNED_WAKE, REVOKED_WAKE):
                continue
            told = parse_principal_wake(m)
            if told is None:
                self._all_due = True
            elif told[1] > self._pcursors.get(told[0], told[1]):
                self._due.add(told[0])

    def _behind(self) -> bool:
        if self._global_log:
            return self._store.head() > self._cursor
        behind = False
        for principal, cursor in list(self._pcursors.items()):
            if self._store.head(principal) > cursor:
                self._due.add(principal)
                behind = True
        return behind

    def _on_timer(self) -> None:
        assert self._loop is not None
        self.stats["fallback_looks"] += 1
        try:
            behind = self._behind()
        except self._errors as exc:
            behind = True  # (not backing off while the log cannot be read)
            self._read_failed(exc)
            return
        finally:
            base = self._fallback_interval
            self._fallback_delay = base if behind else min(self._fallback_delay * 2,
                                                           base * FALLBACK_BACKOFF)  # fmt: skip
            self._timer = self._loop.call_later(self._fallback_delay, self._on_timer)
        if behind:
            self._pump()
        self._check_pruned()  # in case its wake-up was lost
        self._close_revoked()  # the same for a revocation's (a handshake may have re-read it)

    def _pump(self) -> None:
        """Read what was appended since the last time and hand it to the subscribers.

        A fan-out that took long (many connections) is followed by a rest as long (in
        CPU time), so that a stream of wake-ups is served in batches: each connection
        then gets one write per batch, not one per event, and the fan-out never takes
        more than about half the notifier's time. A cheap one (under `REST_AFTER`) rests
        not.
        """
        loop = self._loop
        if loop is not None:
            now = loop.time()
            if now < self._rest_until:
                if self._after_rest is None:
                    self._after_rest = loop.call_at(self._rest_until, self._on_rested)
                return
        self._pump_scheduled = False
        cpu = time.thread_time()
        try:
            more = self._read_turn()
        except self._errors as exc:
            self._read_failed(exc)  # read again shortly, from the same cursor
            return
        finally:
            # CPU time, not wall time: a fan-out preempted by the clients it wakes is
            # not made to rest for it.
            took = time.thread_time() - cpu
            if loop is not None and took > REST_AFTER:
                self._rest_until = loop.time() + took
        if self._retry_delay > READ_RETRY_FIRST:
            log.info("the event log can be read again")
            self._retry_delay = READ_RETRY_FIRST
        # A big burst: let connections breathe before reading on.
        if more and not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _on_rested(self) -> None:
        self._after_rest = None
        self._pump()

    def _read_turn(self) -> bool:
        """Fan out a few pages of the log; returns whether more may be waiting."""
        if not self._global_log:
            return self._read_principals()
        if not self._router:
            # Nobody to send to: skip the events (a subscriber replays its own).
            self._cursor = max(self._cursor, self._store.head())
            return False
        for _ in range(PAGES_PER_TURN):
            events = self._store.events_after(self._cursor, limit=PAGE)
            if events:
                self._cursor = events[-1].log_pos
                self._deliver(events)
            if len(events) < PAGE:
                return False
        return True

    def _read_principals(self) -> bool:
        """`_read_turn` where each principal has a log of its own: read the logs the
        wake-ups named (all of them after a plain look), each from its own cursor."""
        if self._all_due:
            self._all_due = False
            self._due.update(self._pcursors)
        due, self._due = self._due, set()
        more = False
        for principal in due:
            for _ in range(PAGES_PER_TURN):
                cursor = self._pcursors.get(principal)
                if cursor is None:  # no subscriber (any more)
                    break
                try:
                    events = self._store.events_after(cursor, principal=principal, limit=PAGE)
                except BaseException:
                    self._due.add(principal)  # read it again (after the retry's delay)
                    raise
                if events:
                    self._pcursors[principal] = events[-1].seq
                    self._deliver(events)
                if len(events) < PAGE:
                    break
            else:
                self._due.add(principal)
                more = True
        return more

    def _read_failed(self, exc: BaseException) -> None:
        """Reading the log failed: read again after a backoff (a wake-up may come first)."""
        if self._retry_delay == READ_RETRY_FIRST:
            log.warning("cannot read the event log (%s); trying again", exc)
        if self._retry is None and self._loop is not None:
            self._retry = self._loop.call_later(self._retry_delay, self._on_retry)
            self._retry_delay = min(READ_RETRY_MAX, self._retry_delay * 2)

    def _on_retry(self) -> None:
        self._retry = None
        self._pump()

    def _deliver(self, events: list[Event]) -> None:
        # Each event is encoded and framed once, whoever it goes to.
        texts: dict[int, str] = {}
        frames: dict[int, bytes] = {}

        # By the event object (alive for the whole call): a log position is not unique
        # across principals where each has a log of its own.
        def text_of(ev: Event) -> str:
            text = texts.get(id(ev))
            if text is None:
                text = texts[id(ev)] = encode_event(ev)
            return text

        def frame_of(ev: Event) -> bytes:
            frame = frames.get(id(ev))
            if frame is None:
                # What websockets' Protocol.send_text writes for a server (unmasked, no
                # extension: compression is off), made once instead of per connection.
                stats["framed"] += 1
                frame = frames[id(ev)] = Frame(Opcode.TEXT, text_of(ev).encode()).serialize(
                    mask=False, extensions=[])  # fmt: skip
            return frame

        stats = self.stats
        slow = []
        for evs, subs in self._router.route(events):
            blob: bytes | None = None
            queued: list[str] | None = None
            for sub in subs:
                client = self._client_of[sub]
                if client.live_and_idle():
                    if blob is None:
                        blob = b"".join(map(frame_of, evs))
                    ok = client.write_now(blob, len(evs))
                    stats["writes"] += 1
                else:
                    stats["queued"] += len(evs)
                    if queued is None:
                        queued = list(map(text_of, evs))
                    ok = client.queue_live(queued)
                if not ok:
                    slow.append(client)
        for client in slow:
            self._drop_slow(client)

    def _drop_slow(self, client: _Client) -> None:
        log.warning("%s is too far behind; closing its connection", client.principal)
        self._unsubscribe(client)
        client.stop()
        reason = TOO_FAR_BEHIND.format(self._max_outbox // (1024 * 1024))
        self._spawn(self._close_or_abort(client.ws, CLOSE_TRY_AGAIN_LATER, reason))

    @staticmethod
    async def _close_or_abort(ws: ServerConnection, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(5):
                await ws.close(code, reason)
        except TimeoutError:
            # It does not even read the close frame.
            ws.transport.abort()


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one (desktops often start services
    at 1,024); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1024 * 1024) if soft != resource.RLIM_INFINITY else soft
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
    log.info("open files limit: %d", soft)
    return soft


async def serve_until_stopped(notifier: Notifier, stop: asyncio.Event) -> None:
    """Run `notifier` until `stop` is set, announcing readiness once it listens."""
    await notifier.start()
    announce_ready("notifier", port=notifier.port, url=notifier.url)
    try:
        await stop.wait()
    finally:
        await notifier.stop()


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("notifier", argv)
    setup_logging("notifier", args.log_level)
    if not log.isEnabledFor(logging.DEBUG):
        # websockets logs every connection at INFO; ours says the same with the principal.
        logging.getLogger("websockets.server").setLevel(logging.WARNING)
    die_with_parent()
    layout = layout_from(args)
    raise_open_files_limit()
    try:
        ssl_context = (server_tls_context(args.tls_cert, args.tls_key)
                       if args.tls_cert is not None else None)  # fmt: skip
    except ValueError as exc:
        return cannot_start("notifier", exc)
    try:
        config = load_config(layout)
        backend = backend_of(args, layout)
        store = backend.store()
        receiver = backend.wake_source("notifier")
    except Exception as exc:
        return cannot_start("notifier", exc)
    if not is_loopback(args.host) and ssl_context is None:
        log.warning("serving plain ws on %s (--insecure-http): tokens cross the network in "
                    "clear", args.host)  # fmt: skip
    notifier = Notifier(
        store, Authenticator(layout, registry=backend.principals()), receiver,
        web_port=args.web_port, host=args.host, port=args.port,
        allowed_hosts=tuple(args.allowed_host), web_origins=tuple(args.web_origin),
        ssl_context=ssl_context,
        max_outbox=config.notifier_max_outbox, max_connections=config.notifier_max_connections,
        errors=backend.errors, global_log=backend.global_log,
    )  # fmt: skip

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        def on_eof() -> None:
            # The watcher runs in a thread: hand the request to the loop's own thread
            # (which may already be gone if we stopped for another reason).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

        watch_stdin(on_eof)
        await serve_until_stopped(notifier, stop)

    try:
        asyncio.run(run())
    except OSError as exc:  # the port is taken, most likely
        return cannot_start("notifier", exc, args.port)
    finally:
        receiver.close()
        with contextlib.suppress(*backend.errors):
            store.close()
    log.info("notifier stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
