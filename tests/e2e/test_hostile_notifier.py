"""The notifier against hostile local clients, on a real `herald serve`: a client that never
reads is closed at the outbox's byte limit (1013) and resumes without loss, a principal
cannot open more than its share of connections (4429), and what a principal sees of
sequence numbers does not move when another principal works."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from embedded.client import HeraldClient
from services.auth import create_principal
from services.core.envelope import CLOSE_TOO_MANY_CONNECTIONS, CLOSE_TRY_AGAIN_LATER
from services.layout import DataLayout
from tests.e2e.harness import Instance, collect_until_terminal, start_serve, wait_for

# A program that prints about 24 MB: 24,000 lines of 999 characters.
PRINTER = [sys.executable, "-c", "import sys\nfor _ in range(24000): print('x' * 999)"]


class RawClient:
    """A WebSocket client on a bare socket that reads only when told to (websockets'
    sans-I/O protocol does the framing), with a small receive buffer."""

    def __init__(self, url: str, token: str, since: int | None = None) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        parts = urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.connect((parts.hostname, parts.port))
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {token}"
        if since is not None:
            request.headers["Herald-Since"] = str(since)
        self.protocol.send_request(request)
        self._flush()
        self.messages: list[dict[str, Any]] = []
        self.close: Close | None = None
        self.eof = False

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def read(self, until: Any = None, timeout: float = 20) -> None:
        """Read and decode until `until(messages)` holds, or the connection ends."""
        deadline = time.monotonic() + timeout
        while not self.eof and not (until and until(self.messages)):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if time.monotonic() > deadline:
                raise AssertionError("the server neither sent that nor closed in time")
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
                self.eof = True
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101, event
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self.messages.append(json.loads(event.data))
                elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    self.close = Close.parse(event.data)
            self._flush()  # pongs, and the answer to a close

    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "event"]

    def shut(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("hostile-notifier")
    data = root / "data"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text("[notifier]\nmax_connections_per_principal = 4\n")
    inst = start_serve(data, root / "runtime")
    yield inst
    inst.stop()


def principal_client(inst: Instance, name: str) -> HeraldClient:
    """A client of `inst` as a new principal `name`."""
    owner = inst.client
    client = HeraldClient(owner.api, owner.ws, create_principal(DataLayout(inst.data_dir), name))
    inst.clients.append(client)
    return client


def finished(client: HeraldClient, task_id: str) -> dict[str, Any]:
    return wait_for(lambda: (t := client.get(task_id))["state"] in (
        "succeeded", "failed", "cancelled") and t, timeout=60)  # fmt: skip


def notifier_log(inst: Instance) -> str:
    path = Path(inst.data_dir) / "logs" / "notifier.log"
    return path.read_text() if path.exists() else ""


def test_a_never_reading_client_is_closed_at_the_byte_limit_and_resumes_without_loss(herald):
    client = herald.client
    raw = RawClient(client.ws, client.token)
    raw.read(until=lambda ms: ms and ms[-1]["type"] == "caught_up")
    start = raw.messages[-1]["seq"]
    before = notifier_log(herald).count("too far behind")
    task_id = client.submit("process.run", {"program": PRINTER[0], "args": PRINTER[1:]})["id"]
    assert finished(client, task_id)["state"] == "succeeded"
    # About 24 MB went to a client that read none of it: the notifier gave up on it
    # beyond its 8 MiB outbox (the socket's buffers hold a few MB more).
    wait_for(lambda: notifier_log(herald).count("too far behind") > before, timeout=30)
    raw.read(timeout=20)  # now read everything that was sent, up to the end
    raw.shut()
    assert raw.close is not None, "the connection ended without a close frame"
    assert raw.close.code == CLOSE_TRY_AGAIN_LATER
    assert "reconnect with your last seq" in raw.close.reason
    got = raw.events()
    assert not any(m["event"] == "succeeded" for m in got)  # cut short, well before the end
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(set(seqs))
    last = seqs[-1] if seqs else start
    # Resuming from the last seq it saw brings the rest: every event once, none missing.
    with client.events(since=last) as stream:
        rest = collect_until_terminal(stream, task_id, timeout=60)
    timeline = client.timeline(task_id)
    assert seqs + [e.seq for e in rest] == [e.seq for e in timeline]


async def _open(url: str, token: str) -> Any:
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                       proxy=None, open_timeout=10, max_size=None)  # fmt: skip
    return ws


async def _first(ws: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        return json.loads(await ws.recv())


def test_a_principal_over_its_connection_cap_is_closed_with_a_reason(herald):
    owner = herald.client
    carol = principal_client(herald, "carol")

    async def scenario() -> None:
        held = [await _open(owner.ws, owner.token) for _ in range(4)]
        for ws in held:
            assert (await _first(ws))["type"] == "welcome"
        extra = await _open(owner.ws, owner.token)
        with pytest.raises(ConnectionClosed):
            await _first(extra)
        assert extra.close_code == CLOSE_TOO_MANY_CONNECTIONS
        assert "too many connections" in extra.close_reason
        # Another principal is not concerned, and the held connections still work.
        other = await _open(carol.ws, carol.token)
        assert (await _first(other))["type"] == "welcome"
        await held[0].send('{"v": 1, "type": "ping"}')
        while (await _first(held[0]))["type"] != "pong":
            pass
        # One goes: there is room for one more again.
        await held.pop().close()
        again = await wait_for_room(owner)
        for ws in [*held, other, again]:
            await ws.close()

    async def wait_for_room(client: HeraldClient) -> Any:
        for _ in range(100):
            ws = await _open(client.ws, client.token)
            try:
                if (await _first(ws))["type"] == "welcome":
                    return ws
            except ConnectionClosed:
                await asyncio.sleep(0.05)
        raise AssertionError("no room after a connection closed")

    asyncio.run(scenario())


def _welcome(client: HeraldClient, since: int | None = None) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {client.token}"}
        if since is not None:
            headers["Herald-Since"] = str(since)
        async with connect(client.ws, additional_headers=headers, proxy=None) as ws:
            welcome = await _first(ws)
            caught_up = await _first(ws)
            while caught_up["type"] != "caught_up":
                caught_up = await _first(ws)
            return {"head": welcome["head"], "caught_up": caught_up["seq"]}

    return asyncio.run(get())


def test_what_b_sees_of_sequence_numbers_does_not_move_when_a_works(herald):
    a = principal_client(herald, "alice")
    b = principal_client(herald, "bob")
    first = b.submit("demo.answer", {"seconds": 0})["id"]
    finished(b, first)
    b_seqs = [e.seq for e in b.timeline(first)]
    seen = _welcome(b)
    assert seen["head"] == b_seqs[-1]
    for _ in range(3):  # A works: tasks queued, run and finished
        finished(a, a.submit("demo.answer", {"seconds": 0})["id"])
    assert _welcome(b) == seen
    assert _welcome(b, since=0) == {"head": seen["head"], "caught_up": seen["caught_up"]}
    # B's next events follow its own last ones with nothing in between.
    second = b.submit("demo.answer", {"seconds": 0})["id"]
    finished(b, second)
    new = [e.seq for e in b.timeline(second)]
    assert new == list(range(b_seqs[-1] + 1, b_seqs[-1] + 1 + len(new)))
    assert [e.seq for e in b.timeline(second, after=new[0])] == new[1:]
    # The task list's cursor counts B's own tasks too: its second task is number 2.
    status, page = b.request("GET", "/api/tasks?limit=1")
    assert status == 200 and [t["id"] for t in page["tasks"]] == [second]
    assert "before=2" in page["next"].split("?")[1].split("&")
    # ... and A's own numbering shows none of B's: its seqs run 1, 2, 3, ...
    a_seqs = sorted(e.seq for t in a.iter_tasks() for e in a.timeline(t["id"]))
    assert a_seqs == list(range(1, len(a_seqs) + 1))
