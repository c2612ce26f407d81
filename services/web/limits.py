"""Bounds on slow and hostile clients: time to send a request, connections at once, sizes.

A local client without a token can still open sockets. Without bounds, 1,100 connections
that each send a header byte a second hold 1,100 file descriptors for ever, and at the usual
desktop limit of 1,024 the web service then accepts nobody. So:

- The soft `RLIMIT_NOFILE` is raised to the hard limit at start (`raise_fd_limit`).
- A request head must arrive in full within `HEAD_TIMEOUT` of the connection's start, or
  of its first byte after the previous response; a body within `BODY_TIMEOUT` (408).
  An idle kept-alive connection goes after `KEEPALIVE_TIMEOUT`: not by a timer of its own
  (aiohttp's, which also fires once early for a connection used since it was made), but by
  the guard's one sweep, armed only while connections wait, which closes every connection
  idle that long at once, up to `KEEPALIVE_GRACE` later: a burst's connections go in one
  wake-up, not one each.
- At most `connection_cap()` connections are open at once, below the fd limit. The site
  accepts a connection only when it has room for one (accepted sockets still on their way
  to the app are counted): at the cap, it first closes the connection that has waited
  longest without a request in progress (idle, or sending a head), and while every
  connection is busy it accepts none (the kernel queues them). A connection whose request
  is being answered is never closed for another. A fresh client that sends its request at
  once is thus served, whatever else is open, and `accept()` never meets EMFILE (which
  would make asyncio stop accepting for a second).
- A request line over `MAX_REQUEST_LINE` bytes is 414, a header line over `MAX_HEADER_LINE`
  is 431, any other malformed request 400: each with the JSON error body, logged at INFO in
  one line (a client's mistake, not the server's).

`GuardedSite` accepts connections itself (asyncio's own accept loop takes up to a backlog
of sockets at once, whatever the fd budget) and serves an `AppRunner`'s server through
`GuardedConnection`s (a subclass of aiohttp's `RequestHandler`); `connection_middleware`
tells a connection when its request is being handled (the app puts it first, so that it
sees every response).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import resource
import socket
from collections import OrderedDict
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_request import BaseRequest

from services.core.errors import HeraldError
from services.core.params import shown
from services.web.errors import Handler, dumps

log = logging.getLogger(__name__)

HEAD_TIMEOUT = 10.0  # seconds to send a whole request head
BODY_TIMEOUT = 10.0  # seconds to send a whole request body, once the head is in
KEEPALIVE_TIMEOUT = 75.0  # an idle kept-alive connection is closed after this
KEEPALIVE_GRACE = 5.0  # ... and up to this much later, with those idle as long by then
LINGER = 2.0  # seconds a body the handler did not read is still read and dropped
MAX_REQUEST_LINE = 8190
# One more than the request line's limit: the parser's LineTooLong says only its limit, so
# that is how a long header line (431) is told from a long request line (414).
MAX_HEADER_LINE = 8191
# Descriptors kept free of connections: the databases and their WAL files, the logs, the
# wake-up sockets, the listening socket.
FD_RESERVE = 128
LISTEN_BACKLOG = 1024  # connections the kernel queues while none can be accepted
ACCEPT_RETRY = 0.1  # seconds before accepting again after accept() failed (EMFILE, say)
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds a TLS handshake may take (as a request head: 10 s)
# With no hard limit, the soft one is raised this far.
FD_TARGET = 65536


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target,
                        exc)  # fmt: skip
    return FD_TARGET if soft == resource.RLIM_INFINITY else soft


def connection_cap(fd_limit: int) -> int:
    """The connections open at once for a process that may open `fd_limit` files."""
    return max(8, fd_limit - min(FD_RESERVE, fd_limit // 4))


async def read_body(request: web.Request) -> bytes:
    """The request's body, read within `BODY_TIMEOUT`.

    Raises:
        HeraldError: 408 `request_timeout` when the client did not send it in time (and
            413 past the app's client_max_size, from aiohttp).
    """
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise HeraldError("request_timeout", f"The request body did not arrive within "
                          f"{BODY_TIMEOUT:g} s.", 408) from None  # fmt: skip


def _raw_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response with the JSON error body, closing the connection."""
    body = dumps(HeraldError(code, message, status).to_body())
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode() + body


class ConnectionGuard:
    """Counts a server's connections and bounds them (see the module's docstring).

    Args:
        cap: the most connections open at once.
        head_timeout: seconds to send a request head.
        keepalive_timeout: seconds a connection may wait for its next request (idle)
            before it is closed; `keepalive_grace`: how much later at most, so that the
            connections idle about as long are closed together.
    """

    def __init__(self, cap: int, head_timeout: float = HEAD_TIMEOUT,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT,
                 keepalive_grace: float = KEEPALIVE_GRACE) -> None:  # fmt: skip
        self.cap = cap
        self.head_timeout = head_timeout
        self.keepalive_timeout = keepalive_timeout
        self.keepalive_grace = keepalive_grace
        self.open = 0  # connections made and not yet lost (closing ones included)
        self.accepting = 0  # sockets accepted, their connection not made yet
        self.evicted = 0  # closed for a newcomer, since start
        self.timed_out = 0  # closed for a head not sent in time, since start
        self.idle_closed = 0  # closed after keepalive_timeout idle, since start
        self.sweeps = 0  # wake-ups of the keepalive sweep, since start
        # Connections without a request in progress, the longest waiting first, with the
        # loop time each began waiting.
        self._waiting: OrderedDict[GuardedConnection, float] = OrderedDict()
        self._room = asyncio.Event()
        self._sweep: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the server's, once it serves

    def has_room(self) -> bool:
        """Whether one more socket may be accepted."""
        return self.open + self.accepting < self.cap

    async def room(self) -> None:
        """Wait until one more socket may be accepted, closing the connection that has
        waited longest for it (if every connection is busy, until one ends)."""
        while not self.has_room():
            self._room.clear()
            if self._waiting:
                oldest, _ = self._waiting.popitem(last=False)
                self.evicted += 1
                if self.evicted in (1, 100) or self.evicted % 10000 == 0:
                    log.warning("%d connections open, the most allowed: closing the one "
                                "waiting longest for each newcomer (%d so far)", self.open,
                                self.evicted)  # fmt: skip
                oldest.drop()
            await self._room.wait()

    def opened(self, conn: GuardedConnection) -> bool:
        """Count a new connection; False if it must be refused (no room: a connection made
        other than by `GuardedSite`'s accept loop)."""
        if self.open >= self.cap:
            return False
        self.open += 1
        self._wait(conn)
        return True

    def connected(self) -> None:
        """An accepted socket became a connection (counted in `open`), or failed to."""
        self.accepting -= 1
        if self.has_room():
            self._room.set()

    def closed(self, conn: GuardedConnection) -> None:
        self.open -= 1
        self._waiting.pop(conn, None)
        if not self._waiting:
            self.stop()
        if self.has_room():
            self._room.set()

    def busy(self, conn: GuardedConnection) -> None:
        self._waiting.pop(conn, None)

    def idle(self, conn: GuardedConnection) -> None:
        self._wait(conn)

    def stop(self) -> None:
        """Disarm the keepalive sweep (nothing waits, or the server stops)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def _wait(self, conn: GuardedConnection) -> None:
        """`conn` waits for its next request from now on (once per request: cheap)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._waiting[conn] = self._loop.time()
        self._waiting.move_to_end(conn)
        if self._sweep is None:
            self._arm()

    def _arm(self) -> None:
        loop = self._loop
        if loop is None or not self._waiting or math.isinf(self.keepalive_timeout):
            return
        oldest = next(iter(self._waiting.values()))
        # Not sooner than `keepalive_grace` from now: the oldest may be sending a head
        # (its own clock closes it, not this).
        when = max(oldest + self.keepalive_timeout, loop.time()) + self.keepalive_grace
        self._sweep = loop.call_at(when, self._on_sweep)

    def _on_sweep(self) -> None:
        """Close every connection idle for `keepalive_timeout` by now, then arm again for
        the one that has waited longest after them."""
        self._sweep = None
        self.sweeps += 1
        assert self._loop is not None
        limit = self._loop.time() - self.keepalive_timeout
        for conn, since in list(self._waiting.items()):
            if since > limit:
                break
            if conn.head_started:
                continue  # a head is on its way: its own clock bounds it
            self.idle_closed += 1
            del self._waiting[conn]  # now: its connection_lost comes later
            conn.force_close()
        if self._sweep is None:
            self._arm()


class GuardedConnection(web.RequestHandler):
    """aiohttp's connection handler, under a `ConnectionGuard`: it times the request head,
    lets the guard close it for a newcomer while no request of it is in progress, and
    answers malformed requests with the JSON error body."""

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.counted = False
        self.in_request = False
        self.head_started = False  # a byte of the next head has arrived
        self._head_timer: asyncio.TimerHandle | None = None
        self._socket: asyncio.Transport | None = None

    # ------------------------------------------------------------ the protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._socket = transport
        if not self.guard.opened(self):
            transport.write(_raw_error(503, "Service Unavailable", "too_many_connections",
                                       "Too many connections are open; try again."))  # fmt: skip
            transport.close()
            return
        self.counted = True
        super().connection_made(transport)
        # The clock runs from the start: a connection that never sends a byte is the
        # cheapest way to hold a descriptor.
        self._start_head_clock()

    def data_received(self, data: bytes) -> None:
        if not self.counted:
            return
        if not self.in_request and not self.head_started:
            self._start_head_clock()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_clock()
        self._socket = None
        if not self.counted:
            return
        self.counted = False
        self.guard.closed(self)
        super().connection_lost(exc)

    # ------------------------------------------------------- the request cycle

    def request_started(self) -> None:
        """The head is in and the app handles the request: no clock, not closable."""
        self.in_request = True
        self._stop_head_clock()
        if self.counted:
            self.guard.busy(self)

    def request_finished(self) -> None:
        """The app answered: the connection waits for its next request."""
        self.in_request = False
        if self.counted:
            self.guard.idle(self)

    def drop(self) -> None:
        """Close the connection now (the guard needs its descriptor)."""
        self._stop_head_clock()
        if self._socket is not None:
            self._socket.abort()

    def _start_head_clock(self) -> None:
        self._stop_head_clock()
        self.head_started = True
        self._head_timer = asyncio.get_running_loop().call_later(
            self.guard.head_timeout, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        self.head_started = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.in_request or self._socket is None:
            return
        self.guard.timed_out += 1
        if self.guard.timed_out in (1, 100) or self.guard.timed_out % 10000 == 0:
            log.info("closed a connection that sent no whole request head within %g s "
                     "(%d so far)", self.guard.head_timeout, self.guard.timed_out)  # fmt: skip
        transport = self._socket
        transport.write(_raw_error(408, "Request Timeout", "request_timeout",
                                   f"The request head did not arrive within "
                                   f"{self.guard.head_timeout:g} s."))  # fmt: skip
        transport.close()

    # ----------------------------------------------------------------- errors

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request the parser refused: the JSON error body, one INFO line; the rest (an
        exception no middleware caught) as aiohttp does."""
        if not isinstance(exc, http_exceptions.HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was sent already")
        if isinstance(exc, http_exceptions.LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == self.max_line_size:
                error = HeraldError("uri_too_long", f"The request line is longer than "
                                    f"{self.max_line_size} bytes.", 414)  # fmt: skip
            else:
                error = HeraldError("header_too_large", f"A header line is longer than "
                                    f"{self.max_field_size} bytes.", 431)  # fmt: skip
        else:
            said = " ".join(shown(getattr(exc, "message", ""), 200).split())
            error = HeraldError("bad_request", "The request is not valid HTTP/1.1"
                                + (f": {said}" if said else "."), 400)  # fmt: skip
        log.info("refused a malformed request from %s (%d): %s", request.remote,
                 error.status, " ".join(str(exc).split())[:200])  # fmt: skip
        resp = web.Response(body=dumps(error.to_body()), status=error.status,
                            content_type="application/json", charset="utf-8")  # fmt: skip
        resp.force_close()
        return resp


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell a guarded connection that its request is being handled, and when it is done."""
    conn = request.protocol
    if not isinstance(conn, GuardedConnection):
        return await handler(request)
    conn.request_started()
    try:
        return await handler(request)
    finally:
        conn.request_finished()


class GuardedSite(web.BaseSite):
    """A TCP site serving a runner's server through `GuardedConnection`s, accepting a
    connection only when the guard has room for it.

    Args:
        runner: an AppRunner, set up.
        host, port: where to listen (port 0: any free one; `port` is the bound one once
            started).
        guard: the bounds; by default a cap below this process's fd limit.
        backlog: connections the kernel queues before they are accepted.
        access_log: where each request is logged (None: nowhere).
        ssl_context: serve TLS with it (None: plain HTTP); a handshake must end within
            `TLS_HANDSHAKE_TIMEOUT`, as a request head must arrive in time.
    """

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 guard: ConnectionGuard | None = None, backlog: int = LISTEN_BACKLOG,
                 access_log: logging.Logger | None = None,
                 ssl_context: Any = None) -> None:  # fmt: skip
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self.host = host
        self.port = port
        self.access_log = access_log
        if guard is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            guard = ConnectionGuard(connection_cap(
                FD_TARGET if soft == resource.RLIM_INFINITY else soft))  # fmt: skip
        self.guard = guard
        self._listen_backlog = backlog
        self._acceptor: asyncio.Task[None] | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        listener = socket.create_server((self.host, self.port), backlog=self._listen_backlog)
        listener.setblocking(False)
        # An asyncio Server that does not serve: it holds the listening socket for the
        # runner (its addresses, its closing); the accepting is ours.
        self._server = await loop.create_server(self._connection, sock=listener,
                                                start_serving=False)  # fmt: skip
        self.port = listener.getsockname()[1]
        self._acceptor = loop.create_task(self._accept(listener))

    async def stop(self) -> None:
        self.guard.stop()
        if self._acceptor is not None:
            self._acceptor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._acceptor
            self._acceptor = None
        await super().stop()

    def _connection(self) -> GuardedConnection:
        server = self._runner.server
        assert server is not None
        return GuardedConnection(
            self.guard, server, loop=asyncio.get_running_loop(),
            # aiohttp's own timer per connection never fires: the guard's sweep closes
            # idle connections (see ConnectionGuard).
            keepalive_timeout=math.inf, lingering_time=LINGER,
            max_line_size=MAX_REQUEST_LINE, max_field_size=MAX_HEADER_LINE,
            access_log=self.access_log, debug=False,
        )  # fmt: skip

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        guard = self.guard
        while True:
            if not guard.has_room():
                # Make room only for a connection that is there to take it.
                await _readable(listener)
                await guard.room()
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:  # out of descriptors after all (another thread's), say
                log.warning("cannot accept a connection: %s", exc)
                await asyncio.sleep(ACCEPT_RETRY)
                continue
            guard.accepting += 1
            task = loop.create_task(self._connect(sock))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, sock: socket.socket) -> None:
        try:
            if self._ssl_context is None:
                await asyncio.get_running_loop().connect_accepted_socket(self._connection, sock)
            else:
                await asyncio.get_running_loop().connect_accepted_socket(
                    self._connection, sock, ssl=self._ssl_context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)  # fmt: skip
        except OSError:  # the client went away already, or its TLS handshake failed
            sock.close()
        finally:
            self.guard.connected()


async def _readable(sock: socket.socket) -> None:
    """Wait until `sock` is readable (a listening socket: a connection waits in its queue)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())
