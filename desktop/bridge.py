"""The client bridge: Herald's HTTP API and event stream, turned into Qt signals.

Uses the one client (`embedded.client`) on the app's qasync loop. On open it connects the
event stream first (so nothing that happens meanwhile is missed), then loads the catalog
and the task history, then applies live events. When the notifier drops, the stream
reconnects by itself with the last seq it saw and the missed events arrive in order; when
the app reopens the bridge (after "Restart services") it resumes from that seq too.

A watchdog keeps the live light honest: a notifier that stopped answering (frozen, or its
machine asleep) keeps its TCP connection open, so the stream alone would say "connected" for
as long as the kernel keeps the socket. When nothing came for half of `STALL_AFTER` the
bridge pings; when no event and no pong came for `STALL_AFTER` seconds it says "stalled",
and "connected" again as soon as anything arrives.

Every await of `close()` is bounded: quitting never waits on a notifier that does not answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from PySide6.QtCore import QObject, Signal

from embedded.client import ApiError, AsyncEventStream, AsyncHeraldClient, StreamClosed
from services.core.stream import StreamState

log = logging.getLogger(__name__)

HISTORY_LIMIT = 2000  # the most tasks a reload after a "reset" loads again
PAGE_SIZE = 100  # tasks per page of the history: the first is loaded at start, more on scroll
STALL_AFTER = 10.0  # seconds without an event or a pong after which the stream is "stalled"
STALLED = "stalled"  # the connection state the watchdog adds to the stream's own
CLOSE_WAIT = 2.0  # seconds each step of close() may take
READ_SLICE = 100  # the most messages read (and decoded) in one turn of the event loop


class ClientBridge(QObject):
    """HTTP + WebSocket to Qt signals.

    Signals:
        catalog_loaded(list): the catalog's task specs.
        tasks_loaded(list): the caller's tasks from the API, newest first.
        tasks_reloaded(list, float): the same, loaded again because the notifier said
            "reset" (events were pruned or the log recreated), and the wall time at which
            the loading began: every task created before it that the ledger still has is
            in the list (0.0 when the list was cut: it holds the newest tasks, as many as
            `reload_size()` says, up to HISTORY_LIMIT).
        history_paged(object): the `before` cursor of the page after the history just
            loaded (None: that was all of it); emitted right after tasks_loaded/reloaded.
        task_received(dict): a task as an HTTP answer gave it (after a submit or cancel).
        events_received(list): services.core.events.Event objects, in seq order, each
            once: what came since the last emission, at most `READ_SLICE` of them (the
            stream is read a slice per turn of the event loop, so a backlog of frames
            never holds the loop).
        connection_changed(str, float): the stream's state ("connecting", "connected",
            "reconnecting", "closed", or "stalled": connected but nothing heard, not even
            a pong, for `stall_after` s) and seconds until the next attempt (-1: none).
    """

    catalog_loaded = Signal(list)
    tasks_loaded = Signal(list)
    tasks_reloaded = Signal(list, float)
    task_received = Signal(dict)
    events_received = Signal(list)
    connection_changed = Signal(str, float)
    problems_found = Signal(list)  # what /api/health says could not be loaded (plug-ins)
    identity_loaded = Signal(dict)  # GET /api/me: the principal and its capabilities
    history_paged = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._client: AsyncHeraldClient | None = None
        self._stream: AsyncEventStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self.last_seq: int | None = None
        self.stall_after = STALL_AFTER
        self.stalled = False
        self._heard_at = time.monotonic()
        self.page_size = PAGE_SIZE
        self.reload_size: Any = lambda: 0  # how many tasks the app holds (set by the app)

    @property
    def client(self) -> AsyncHeraldClient:
        if self._client is None:
            raise RuntimeError("the bridge is not open")
        return self._client

    async def open(self, api: str, ws: str, token: str, tls: Any = None) -> None:
        """Connect to an instance: stream first, then catalog and history, then live.
        (`tls`: the TLS context of an https/wss server, None for the system's trust.)"""
        await self.close()
        self._client = AsyncHeraldClient(api, ws, token, tls=tls)
        self._stream = stream = self._client.events(since=self.last_seq,
                                                    on_state=self._on_stream_state)  # fmt: skip
        await stream.open()
        self._heard()
        await self._load()
        if self._stream is not stream:  # closed meanwhile (a quit, a switch of server)
            return
        self._reader = asyncio.ensure_future(self._read(stream))
        self._watchdog = asyncio.ensure_future(self._watch(stream))

    async def _load(self, *, reload: bool = False) -> None:
        client = self.client
        self.identity_loaded.emit(await client.me())
        self.catalog_loaded.emit(await client.catalog())
        problems = (await client.health()).get("problems") or []
        if problems:  # plug-ins that could not be loaded: said, not silently skipped
            self.problems_found.emit([str(p) for p in problems])
        # The first page only: the window is usable at once; the rest comes as it scrolls.
        # A reload takes as many as the app holds, so what it shows is checked again.
        want = min(HISTORY_LIMIT, max(self.page_size, self.reload_size() if reload else 0))
        tasks: list[dict[str, Any]] = []
        as_of = time.time()
        before = None
        while True:
            page, before = await self.page("", (), before, min(200, want - len(tasks)))
            tasks += page
            if before is None or len(tasks) >= want:
                break
        if before is not None:
            as_of = 0.0
        if reload:
            self.tasks_reloaded.emit(tasks, as_of)
        else:
            self.tasks_loaded.emit(tasks)
        self.history_paged.emit(before)

    async def page(self, text: str, states: Any, before: int | None, limit: int | None = None
                   ) -> tuple[list[dict[str, Any]], int | None]:  # fmt: skip
        """One page of the history, newest first: the tasks matching the search `text` (the
        server's, over the whole history) in these states, and the next page's cursor.

        Raises:
            embedded.client.ApiError: the server refused the search (its message says why).
        """
        query = [("limit", str(limit or self.page_size))]
        if before is not None:
            query.append(("before", str(before)))
        if states:
            query.append(("state", ",".join(states)))
        if text.strip():
            query.append(("q", text))
        status, body = await self.client.request("GET", "/api/tasks?" + urlencode(query, safe=","))
        if status >= 400:
            raise ApiError.from_body(status, body)
        link = body.get("next")
        cursor = parse_qs(urlsplit(link).query).get("before") if link else None
        return list(body["tasks"]), int(cursor[0]) if cursor else None

    async def _read(self, stream: AsyncEventStream) -> None:
        # Frames already received are read without the loop getting control back (the
        # stream's recv() does not suspend while it has some), so the events are handed
        # on in batches: when the stream has to wait for more, or every READ_SLICE
        # messages, and then the loop runs what waits (input, paint, timers) first.
        batch: list[Any] = []
        loop = asyncio.get_running_loop()
        handing: list[asyncio.Handle] = []

        def hand_on() -> None:
            handing.clear()
            if batch:
                events = batch[:]
                batch.clear()
                self.events_received.emit(events)

        try:
            read = 0
            async for msg in stream:
                self._heard()
                if msg.event is not None:
                    self.last_seq = stream.last_seq
                    batch.append(msg.event)
                    if not handing:  # runs once the stream waits, or at the next yield
                        handing.append(loop.call_soon(hand_on))
                elif msg.type == "reset":
                    hand_on()
                    # Events we were owed are gone (pruned, or a recreated log): the
                    # ledger says how things stand.
                    await self._load(reload=True)
                read += 1
                if read >= READ_SLICE:
                    read = 0
                    await asyncio.sleep(0)  # hand_on runs, then what else waits
        except StreamClosed:
            pass
        except Exception:
            log.exception("the event stream failed")
            self.connection_changed.emit(StreamState.CLOSED.value, -1.0)
        finally:
            hand_on()  # what was read is applied, whatever ended the reading

    async def submit(self, task: str, args: dict[str, Any],
                     timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Submit a task (`timeout`: each attempt's time limit in seconds, None for the
        task's default); raises embedded.client.ApiError with field errors on a 422."""
        return await self.client.submit(task, args, timeout=timeout)

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return await self.client.cancel(task_id)

    async def delete(self, task_id: str) -> None:
        await self.client.delete(task_id)

    async def activity(self, window: str = "hour", bucket: int | None = None) -> dict[str, Any]:
        """GET /api/activity: the caller's tasks finished in the last `window` ("hour" or
        "day"), per bucket of `bucket` seconds (None: the window's default) on this
        machine's local clock; raises embedded.client.ApiError on an error answer."""
        query = [("window", window),
                 ("tz_offset", str(round(time.localtime().tm_gmtoff / 60)))]  # fmt: skip
        if bucket is not None:
            query.append(("bucket", str(bucket)))
        status, body = await self.client.request("GET", "/api/activity?" + urlencode(query))
        if status >= 400:
            raise ApiError.from_body(status, body)
        return body

    def forget_position(self) -> None:
        """Forget the last seq seen: the next `open()` is of another server, whose seqs are
        its own (resuming from this one's would skip or replay events)."""
        self.last_seq = None

    async def close(self) -> None:
        """Stop the stream and the HTTP session (the bridge may be opened again); each step
        is given `CLOSE_WAIT` seconds, so a notifier that stopped answering delays it by
        seconds at most."""
        reader, self._reader = self._reader, None
        watchdog, self._watchdog = self._watchdog, None
        stream, self._stream = self._stream, None
        client, self._client = self._client, None
        for task in (watchdog, reader):
            if task is not None:
                task.cancel()
        if stream is not None:
            await _bounded(stream.close(), "closing the event stream")
        for task in (watchdog, reader):
            if task is not None:
                await asyncio.wait({task}, timeout=CLOSE_WAIT)
        if client is not None:
            await _bounded(client.close(), "closing the HTTP session")
        self.stalled = False

    # ----------------------------------------------------------------- watchdog

    def _heard(self) -> None:
        """Something came from the notifier (an event, any message, a pong)."""
        self._heard_at = time.monotonic()
        if self.stalled:
            self.stalled = False
            log.info("the event stream is live again")
            self.connection_changed.emit(StreamState.CONNECTED.value, -1.0)

    async def _watch(self, stream: AsyncEventStream) -> None:
        ping: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(self.stall_after / 4)
                if stream.state is not StreamState.CONNECTED:
                    continue  # the stream says how it stands (reconnecting, closed)
                quiet = time.monotonic() - self._heard_at
                if quiet >= self.stall_after and not self.stalled:
                    self.stalled = True
                    log.warning("nothing from the notifier for %.0f s, not even a pong", quiet)
                    self.connection_changed.emit(STALLED, -1.0)
                if quiet >= self.stall_after / 2 and (ping is None or ping.done()):
                    ping = asyncio.ensure_future(self._ping(stream))
        finally:
            if ping is not None:
                ping.cancel()

    async def _ping(self, stream: AsyncEventStream) -> None:
        if await stream.ping() is not None:
            self._heard()

    def _on_stream_state(self, state: StreamState, retry_in: float | None) -> None:
        if state is StreamState.CONNECTED:
            self._heard_at = time.monotonic()
        self.stalled = False  # the stream's own state says more
        self.connection_changed.emit(state.value, -1.0 if retry_in is None else retry_in)


async def _bounded(awaitable: Any, what: str) -> None:
    """Await `awaitable` for `CLOSE_WAIT` seconds at most; a failure is logged, not raised."""
    try:
        await asyncio.wait_for(awaitable, CLOSE_WAIT)
    except TimeoutError:
        log.warning("%s took more than %.0f s; going on", what, CLOSE_WAIT)
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
