"""A small synchronous client of a running Herald: the HTTP API and the event stream.

Used by the `herald` command line. Events are decoded by services.core.envelope, the same
codec the notifier encodes with; `EventStream` reconnects with the last seq it saw, so no
event is lost when the notifier restarts.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from embedded.instance import InstanceInfo, read_instance
from services.core.envelope import ProtocolError, ServerMessage, decode_server_message


class NotRunning(RuntimeError):
    """No Herald instance runs for this data dir."""


class ApiError(RuntimeError):
    """The API answered with an error body."""

    def __init__(self, status: int, code: str, message: str,
                 fields: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


class HeraldClient:
    """Talks to one instance's web service (and opens its event stream)."""

    def __init__(self, api: str, ws: str, token: str, timeout: float = 30.0) -> None:
        self.api = api.rstrip("/")
        self.ws = ws
        self.token = token
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(self.api)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 80
        self._conn: http.client.HTTPConnection | None = None

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> HeraldClient:
        info: InstanceInfo | None = read_instance(data_dir)
        if info is None:
            raise NotRunning(
                f"Herald is not running for {data_dir}. Start it with `herald serve` "
                "(or `make serve`)."
            )
        return cls(info.api, info.ws, info.token)

    # --------------------------------------------------------------------- HTTP

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
        """Send a request; return (status, decoded JSON body)."""
        hdrs = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self.timeout)  # fmt: skip
            try:
                self._conn.request(method, path, body=data, headers=hdrs)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = {"error": {"code": "bad_response", "message": raw[:200].decode("replace")}}
        return resp.status, decoded

    def _ok(self, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        status, decoded = self.request(method, path, body, headers)
        if status >= 400:
            err = (decoded or {}).get("error", {}) if isinstance(decoded, dict) else {}
            raise ApiError(status, err.get("code", "error"), err.get("message", "request failed"),
                           err.get("fields"))  # fmt: skip
        return decoded

    def submit(self, task: str, args: dict[str, Any],
               idempotency_key: str | None = None) -> dict[str, Any]:  # fmt: skip
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._ok("POST", "/api/tasks", {"task": task, "args": args}, headers)  # type: ignore[no-any-return]

    def get(self, task_id: str) -> dict[str, Any]:
        return self._ok("GET", f"/api/tasks/{urllib.parse.quote(task_id)}")  # type: ignore[no-any-return]

    def list_tasks(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = {"limit": str(limit)}
        if state:
            query["state"] = state
        return self._ok("GET", "/api/tasks?" + urllib.parse.urlencode(query))["tasks"]  # type: ignore[no-any-return]

    def cancel(self, task_id: str) -> dict[str, Any]:
        status, decoded = self.request("POST", f"/api/tasks/{urllib.parse.quote(task_id)}/cancel")
        if status == 409 and isinstance(decoded, dict) and "task" in decoded:
            return decoded["task"]  # type: ignore[no-any-return]
        if status >= 400:
            err = (decoded or {}).get("error", {})
            raise ApiError(status, err.get("code", "error"), err.get("message", "failed"))
        return decoded  # type: ignore[no-any-return]

    def catalog(self) -> list[dict[str, Any]]:
        return self._ok("GET", "/api/catalog")["tasks"]  # type: ignore[no-any-return]

    def health(self) -> dict[str, Any]:
        return self._ok("GET", "/api/health")  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> HeraldClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def events(self, since: int | None = None) -> EventStream:
        return EventStream(self.ws, self.token, since)


class EventStream:
    """The principal's events, in order, across reconnects of the notifier.

    Iterate `messages(timeout)`; it yields decoded messages and None when `timeout`
    passes with nothing new (so the caller can react to Ctrl-C or deadlines).
    """

    def __init__(self, url: str, token: str, since: int | None,
                 reconnect_for: float = 30.0) -> None:  # fmt: skip
        self.url = url
        self.token = token
        self.last_seq = since
        self.reconnect_for = reconnect_for
        self._conn: ClientConnection | None = None

    def open(self) -> ServerMessage:
        """Connect and return the welcome message."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.last_seq is not None:
            headers["Herald-Since"] = str(self.last_seq)
        # Entered by hand: the stream outlives any one `with` block of the caller.
        self._conn = connect(self.url, additional_headers=headers, open_timeout=10,
                             max_size=2**24).__enter__()  # fmt: skip
        welcome = decode_server_message(self._conn.recv(timeout=10))
        if self.last_seq is None:
            self.last_seq = int(welcome.body.get("head", 0))
        return welcome

    def messages(self, timeout: float = 0.5) -> Iterator[ServerMessage | None]:
        while True:
            if self._conn is None:
                self._reconnect()
            assert self._conn is not None
            try:
                text = self._conn.recv(timeout=timeout)
            except TimeoutError:
                yield None
                continue
            except ConnectionClosed:
                self._conn = None
                yield None
                continue
            try:
                msg = decode_server_message(text)
            except ProtocolError:
                continue
            if msg.event is not None:
                if self.last_seq is not None and msg.event.seq <= self.last_seq:
                    continue  # a duplicate after a reconnect
                self.last_seq = msg.event.seq
            yield msg

    def _reconnect(self) -> None:
        deadline = time.monotonic() + self.reconnect_for
        delay = 0.1
        while True:
            try:
                self.open()
                return
            except (OSError, InvalidStatus, ConnectionClosed, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> EventStream:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
