"""`GET /api/events`: the event stream as Server-Sent Events, for clients that prefer HTTP.

The same messages as the notifier's WebSocket (`services.core.envelope`: welcome, reset,
event, caught_up), each the `data` of one SSE message; an event's SSE `id` is its seq and
`caught_up`'s is the cursor, so `Last-Event-ID` (what a browser's EventSource sends when it
reconnects) or `?since=N` resumes exactly after it, with the WebSocket's reset rules
(`services.core.delivery.plan_resume`; a reset when pruning deleted events not sent yet).
No resume point: live events only. Keep-alive comments every `PING_INTERVAL`.

It reads the durable log itself, never the notifier (which may be down): a stream follows
the log through one poller per process (`EventFeed`), not the notifier's wake-ups. Why
polling: a wake-up datagram has one receiver (the notifier binds it) and the worker, which
sends it, is not this service's to change; SQLite tells no other process of a commit. So
the feed looks at the log's head every `POLL_MIN` seconds after something new, backing
off to `POLL_MAX` while nothing happens, and only while a stream is open: an instance with
no SSE client does nothing at all. A live event thus reaches an SSE client at most
`POLL_MAX` after it was recorded; the WebSocket stays the low-latency channel.

Bounded per client: each stream pulls from the log at its own pace (the log is its
buffer), so what it holds is one page and the socket's buffer; a client that does not
read for `SEND_TIMEOUT` is cut off (aiohttp-sse aborts the connection; it resumes
losslessly from its Last-Event-ID). A stream whose principal is revoked, or whose session
ends (signed out, expired), is closed with a last comment saying why.

Why aiohttp-sse rather than a bare StreamResponse: it frames messages (id, data, retry),
sends the keep-alive comments, and times out a stalled client's writes, which a bare
StreamResponse would need written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from services.auth import Authenticator
from services.core.delivery import plan_resume
from services.core.envelope import (
    CLOSE_REVOKED,
    RESET_PRUNED,
    RESET_RECREATED,
    ProtocolError,
    encode_caught_up,
    encode_event,
    encode_reset,
    encode_welcome,
    parse_since,
)
from services.core.errors import HeraldError
from services.core.events import Event
from services.store.sqlite import TaskStore

log = logging.getLogger(__name__)

POLL_MIN = 0.02  # seconds between looks at the log after something new
POLL_MAX = 0.25  # ... doubling up to this while nothing happens
RECHECK = 5.0  # seconds between checks that each stream's token or session still holds
PING_INTERVAL = 15.0  # seconds between keep-alive comments
SEND_TIMEOUT = 30.0  # seconds a client may leave a write unread before it is cut off
RETRY_MS = 1000  # what EventSource waits before reconnecting
PAGE = 500  # events per read of the log
PAGE_BYTES = 1024 * 1024  # ... and about this much of their data at most (one event more)
REVOKED = "unauthorized: this token was revoked, or this browser session ended"


class _Stream:
    """One SSE client: its principal, what it authenticated with, where it is."""

    def __init__(self, resp: EventSourceResponse, principal: str, credential: str) -> None:
        self.resp = resp
        self.principal = principal
        self.credential = credential
        self.cursor = 0  # the last seq of its principal it was sent (or skipped over)
        self.reset_through = 0  # the pruning watermark its last reset was sent for
        self.revoked = False


class EventFeed:
    """Follows the log for every SSE stream of this process (one poller for all) and
    serves `GET /api/events`.

    Args:
        store: the event log (read on the loop: a WAL reader never waits).
        authenticator: checks that each stream's token or session still holds.
        poll_min, poll_max: see `POLL_MIN`, `POLL_MAX`.
    """

    def __init__(self, store: TaskStore, authenticator: Authenticator, *,
                 poll_min: float = POLL_MIN, poll_max: float = POLL_MAX,
                 errors: tuple[type[BaseException], ...] = (sqlite3.Error,),
                 global_log: bool = True) -> None:  # fmt: skip
        self._store = store
        self._errors = errors
        self._global_log = global_log
        self._auth = authenticator
        self._poll_min, self._poll_max = poll_min, poll_max
        self._streams: set[_Stream] = set()
        self._changed = asyncio.Event()  # set (and replaced) when the log moved
        self._poller: asyncio.Task[None] | None = None
        self._recheck_at = 0.0
        self._closing = False
        self.marks: dict[str, int] = {}  # pruning watermarks, as last read
        self.polls = 0  # looks at the log (for the tests and the bench)

    @property
    def streams(self) -> int:
        return len(self._streams)

    def recheck(self) -> None:
        """Check every stream's credential at the next look (after a sign-out)."""
        self._recheck_at = 0.0
        self._notify()

    async def close(self, app: web.Application | None = None) -> None:
        """End every stream (the service is stopping: clients reconnect and resume)."""
        self._closing = True
        self._notify()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

    # ------------------------------------------------------------------ poller

    def _heads(self) -> object:
        """Where the log is: its head (SQLite's one log), or the head of every streamed
        principal's own (a backend whose log is one per principal)."""
        if self._global_log:
            return self._store.head()
        return sorted((p, self._store.head(p)) for p in {s.principal for s in self._streams})

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _poll(self) -> None:
        delay = self._poll_min
        head = self._heads()
        self.marks = self._store.pruned_marks()
        while self._streams:
            await asyncio.sleep(delay)
            self.polls += 1
            try:
                now_head = self._heads()
                marks = self._store.pruned_marks()
            except self._errors as exc:  # a failing disk: look again later
                log.warning("cannot read the event log: %s", exc)
                delay = self._poll_max
                continue
            moved = now_head != head or marks != self.marks
            head, self.marks = now_head, marks
            if self._auth.reload() or time.monotonic() >= self._recheck_at:
                self._recheck_at = time.monotonic() + RECHECK
                for stream in self._streams:
                    if not self._auth.holds(stream.principal, stream.credential):
                        stream.revoked = True
                        moved = True
            if moved:
                delay = self._poll_min
                self._notify()
            else:
                delay = min(delay * 2, self._poll_max)

    # ------------------------------------------------------------------- route

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /api/events[?since=N]: this principal's events as Server-Sent Events."""
        from services.web.browser import CREDENTIAL
        from services.web.security import PRINCIPAL

        given = [*request.headers.getall("Last-Event-ID", ()), *request.query.getall("since", ())]
        since = None
        if given:
            try:
                values = {parse_since(v.strip()) for v in given}
            except ProtocolError:
                values = set()
            if len(values) != 1:
                raise HeraldError(
                    "bad_request",
                    "Invalid resume point.",
                    400,
                    {"since": "Last-Event-ID and since must be one non-negative integer"},
                )
            since = values.pop()
        resp = EventSourceResponse(send_timeout=SEND_TIMEOUT, ping_interval=PING_INTERVAL,
                                   headers={"Cache-Control": "no-store"})  # fmt: skip
        if self._closing:
            raise HeraldError("unavailable", "The web service is stopping.", 503)
        await resp.prepare(request)
        stream = _Stream(resp, request[PRINCIPAL], request[CREDENTIAL])
        self._streams.add(stream)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            await self._serve(stream, since)
        except (ConnectionResetError, TimeoutError, RuntimeError):
            pass  # gone, or cut off for not reading: it resumes from its Last-Event-ID
        except self._errors as exc:
            log.warning("cannot read the event log for %s: %s", stream.principal, exc)
        finally:
            self._streams.discard(stream)
            with contextlib.suppress(RuntimeError):
                resp.stop_streaming()
        return resp

    async def _serve(self, stream: _Stream, since: int | None) -> None:
        resp, principal, store = stream.resp, stream.principal, self._store
        head = store.head(principal)
        through = 0 if since is None else store.pruned_through(principal)
        plan = plan_resume(since, head, through)
        await resp.send(encode_welcome(principal, head, plan.reset), retry=RETRY_MS)
        if plan.reload:
            await self._send_reset(stream, RESET_RECREATED if plan.reset else RESET_PRUNED,
                                   through)  # fmt: skip
        stream.cursor = plan.after
        await self._send_new(stream)
        if since and not plan.reload:  # (since 0 saw nothing that could be gone)
            through = store.pruned_through(principal)  # pruned while it replayed
            if through > since and through > stream.reset_through:
                await self._send_reset(stream, RESET_PRUNED, through)
        await resp.send(encode_caught_up(stream.cursor), id=str(stream.cursor))
        while resp.is_connected() and not self._closing:
            changed = self._changed
            if stream.revoked:
                log.info("%s: token revoked or session ended; closing its event stream",
                         principal)  # fmt: skip
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await resp.write(f": closed {CLOSE_REVOKED} {REVOKED}\r\n\r\n".encode())
                return
            through = self.marks.get(principal, 0)
            if through > max(stream.cursor, stream.reset_through):
                # Pruning deleted events of its own that it had not been sent yet.
                await self._send_reset(stream, RESET_PRUNED, through)
            await self._send_new(stream)
            waiter = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({waiter, _ping_task(resp)},
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            finally:
                waiter.cancel()

    async def _send_new(self, stream: _Stream) -> None:
        """Send every event of the stream's principal after its cursor, page by page (at
        the client's pace: each send waits for the socket to take it)."""
        while True:
            page = self._store.events_after(stream.cursor, principal=stream.principal,
                                            limit=PAGE, max_bytes=PAGE_BYTES)  # fmt: skip
            if not page:
                return
            if page[0].seq > stream.cursor + 1:
                # A gap: deleted by pruning since the last read (seqs are consecutive per
                # principal, but for events recorded before that numbering)? Read after
                # the events, the watermark covers whatever the read did not find.
                through = self._store.pruned_through(stream.principal)
                if through > stream.cursor and through > stream.reset_through:
                    await self._send_reset(stream, RESET_PRUNED, through)
            await self._send_events(stream, page)

    @staticmethod
    async def _send_events(stream: _Stream, events: list[Event]) -> None:
        for ev in events:
            await stream.resp.send(encode_event(ev), id=str(ev.seq))
            stream.cursor = ev.seq

    @staticmethod
    async def _send_reset(stream: _Stream, reason: str, through: int) -> None:
        stream.reset_through = max(stream.reset_through, through)
        await stream.resp.send(encode_reset(reason, through + 1))


def _ping_task(resp: EventSourceResponse) -> Any:
    """What ends when the client is gone (aiohttp-sse's keep-alive task)."""
    # (aiohttp-sse's own `wait()` awaits this task; a task can be waited on with another)
    task = resp._ping_task
    assert task is not None
    return task
