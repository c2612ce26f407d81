"""The client bridge: Herald's HTTP API and event stream, turned into Qt signals.

Uses the one client (`embedded.client`) on the app's qasync loop. On open it connects the
event stream first (so nothing that happens meanwhile is missed), then loads the catalog
and the task history, then applies live events. When the notifier drops, the stream
reconnects by itself with the last seq it saw and the missed events arrive in order; when
the app reopens the bridge (after "Restart services") it resumes from that seq too.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        event_received(object): one services.core.events.Event, in seq order, once.
        connection_changed(str, float): the stream's state ("connecting", "connected",
            "reconnecting", "closed") and seconds until the next attempt (-1: none).
    """

    catalog_loaded = Signal(list)
    tasks_loaded = Signal(list)
    tasks_reloaded = Signal(list, float)
    task_received = Signal(dict)
    event_received = Signal(object)
    connection_changed = Signal(str, float)
    problems_found = Signal(list)  # what /api/health says could not be loaded (plug-ins)
    identity_loaded = Signal(dict)  # GET /api/me: the principal and its capabilities
    history_paged = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._client: AsyncHeraldClient | None = None
        self._stream: AsyncEventStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self.last_seq: int | None = None
        self.page_size = PAGE_SIZE
        self.reload_size: Any = lambda: 0  # how many tasks the app holds (set by the app)

    @property
    def client(self) -> AsyncHeraldClient:
        if self._client is None:
            raise RuntimeError("the bridge is not open")
        return self._client

    async def open(self, api: str, ws: str, token: str) -> None:
        """Connect to an instance: stream first, then catalog and history, then live."""
        await self.close()
        self._client = AsyncHeraldClient(api, ws, token)
        self._stream = self._client.events(since=self.last_seq, on_state=self._on_stream_state)
        await self._stream.open()
        await self._load()
        self._reader = asyncio.ensure_future(self._read(self._stream))

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
        try:
            async for msg in stream:
                if msg.event is not None:
                    self.last_seq = stream.last_seq
                    self.event_received.emit(msg.event)
                elif msg.type == "reset":
                    # Events we were owed are gone (pruned, or a recreated log): the
                    # ledger says how things stand.
                    await self._load(reload=True)
        except StreamClosed:
            pass
        except Exception:
            log.exception("the event stream failed")
            self.connection_changed.emit(StreamState.CLOSED.value, -1.0)

    async def submit(self, task: str, args: dict[str, Any],
                     timeout: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Submit a task (`timeout`: each attempt's time limit in seconds, None for the
        task's default); raises embedded.client.ApiError with field errors on a 422."""
        return await self.client.submit(task, args, timeout=timeout)

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return await self.client.cancel(task_id)

    async def delete(self, task_id: str) -> None:
        await self.client.delete(task_id)

    async def close(self) -> None:
        """Stop the stream and the HTTP session (the bridge may be opened again)."""
        reader, self._reader = self._reader, None
        stream, self._stream = self._stream, None
        client, self._client = self._client, None
        if stream is not None:
            await stream.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if client is not None:
            await client.close()

    def _on_stream_state(self, state: StreamState, retry_in: float | None) -> None:
        self.connection_changed.emit(state.value, -1.0 if retry_in is None else retry_in)
