"""`GET /api/events` on a real `herald serve`: the WebSocket's stream as Server-Sent Events,
each event's id its seq, resumed with Last-Event-ID (also across a SIGKILL of the web
service), with the same reset rules, authenticated by token or browser session, ended when
the principal is revoked or the session signs out."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.e2e.harness import Instance, wait_for
from tests.e2e.test_browser_auth import bearer, sign_in


@dataclass
class Message:
    """One SSE message: its id field (None: none) and its data, decoded."""

    id: str | None
    data: dict[str, Any]


class SseReader:
    """The client side of text/event-stream, as the HTML standard parses it (enough of
    it for Herald's stream: id, data, comments; no event names)."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.comments: list[str] = []
        self._buffer = b""

    async def _line(self) -> bytes:
        """The next line with its end (b"": the stream ended); lines of any length."""
        while b"\n" not in self._buffer:
            chunk = await self.resp.content.readany()
            if not chunk:
                raw, self._buffer = self._buffer, b""
                return raw
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\n")
        return raw + b"\n"

    async def next(self, timeout: float = 20) -> Message | None:
        """The next message (None: the stream ended)."""
        ident: str | None = None
        data: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                raw = await self._line()
                if not raw:
                    return None
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        return Message(ident, json.loads("\n".join(data)))
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "id":
                    ident = value
                elif name == "data":
                    data.append(value)

    async def until(self, predicate: Any, timeout: float = 30) -> list[Message]:
        got = []
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.next(timeout)
                assert msg is not None, f"the stream ended after {[m.data for m in got]}"
                got.append(msg)
                if predicate(msg):
                    return got


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def open_stream(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[aiohttp.ClientResponse, SseReader]:
    resp = await http.get(url, headers={"Accept": "text/event-stream", **headers})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return resp, SseReader(resp)


def is_terminal_of(task_id: str) -> Any:
    return lambda m: m.data.get("task") == task_id and m.data.get("event") in (
        "succeeded", "failed", "cancelled")  # fmt: skip


async def test_replay_then_live_each_id_its_seq(
    herald: Instance, http: aiohttp.ClientSession
) -> None:
    client = herald.client
    base, token = client.api, client.token
    first = client.submit("demo.answer", {"seconds": 0})
    wait_for(lambda: client.get(first["id"])["state"] == "succeeded")
    resp, sse = await open_stream(http, base + "/api/events?since=0", bearer(token))
    async with resp:
        welcome = await sse.next()
        assert welcome is not None and welcome.id is None
        assert welcome.data["type"] == "welcome" and welcome.data["principal"] == "local"
        assert welcome.data["reset"] is False
        replay = await sse.until(lambda m: m.data["type"] == "caught_up")
        events = [m for m in replay if m.data["type"] == "event"]
        assert [m.data["seq"] for m in events] == list(range(1, len(events) + 1))
        assert all(m.id == str(m.data["seq"]) for m in events)
        assert replay[-1].id == str(events[-1].data["seq"])  # caught_up's id: the cursor
        timeline = client.timeline(first["id"])
        assert [m.data["seq"] for m in events] == [e.seq for e in timeline]
        # Then live.
        second = client.submit("demo.answer", {"seconds": 0})
        live = await sse.until(is_terminal_of(second["id"]))
        assert [m.data["seq"] for m in live if m.data["type"] == "event"] == [
            e.seq for e in client.timeline(second["id"])]  # fmt: skip
    # No resume point: live only (caught up at the head at once).
    resp, sse = await open_stream(http, base + "/api/events", bearer(token))
    async with resp:
        head = (await sse.next()).data["head"]  # type: ignore[union-attr]
        caught_up = await sse.next()
        assert caught_up is not None and caught_up.data == {"v": 1, "type": "caught_up",
                                                            "seq": head}  # fmt: skip


async def test_a_since_beyond_the_head_is_a_reset(
    herald: Instance, http: aiohttp.ClientSession
) -> None:
    client = herald.client
    task = client.submit("demo.answer", {"seconds": 0})
    wait_for(lambda: client.get(task["id"])["state"] == "succeeded")
    resp, sse = await open_stream(
        http, client.api + "/api/events", {**bearer(client.token), "Last-Event-ID": "1000000"}
    )
    async with resp:
        welcome, reset = await sse.next(), await sse.next()
        assert welcome is not None and welcome.data["reset"] is True
        assert reset is not None and reset.data["type"] == "reset"
        assert reset.data["reason"] == "recreated"
        got = await sse.until(lambda m: m.data["type"] == "caught_up")
        assert got[0].data["seq"] == 1  # replayed from the start


async def test_bad_requests_are_4xx(herald: Instance, http: aiohttp.ClientSession) -> None:
    client = herald.client
    base = client.api
    for headers, query, status in (({}, "", 401), (bearer(client.token), "?since=-1", 400),
                                   ({**bearer(client.token), "Last-Event-ID": "3"}, "?since=4",
                                    400)):  # fmt: skip
        async with http.get(base + "/api/events" + query, headers=headers) as resp:
            assert resp.status == status


async def test_resume_with_last_event_id_after_the_web_service_is_killed(
    herald: Instance, http: aiohttp.ClientSession
) -> None:
    client = herald.client
    base, token = client.api, client.token
    resp, sse = await open_stream(http, base + "/api/events?since=0", bearer(token))
    task = client.submit("demo.answer", {"seconds": 2})  # about 20 progress events
    seen: list[Message] = []
    last_id = None
    async with resp:
        while len([m for m in seen if m.data.get("event") == "progress"]) < 5:
            msg = await sse.next()
            assert msg is not None
            seen.append(msg)
            last_id = msg.id or last_id
        pid = herald.service_pid("web")
        os.kill(pid, signal.SIGKILL)
        # The rest of what was on its way, until the connection drops.
        try:
            while (msg := await sse.next(5)) is not None:
                seen.append(msg)
                last_id = msg.id or last_id
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            pass
    wait_for(lambda: herald.status()["web"]["state"] == "ready"
             and herald.status()["web"].get("pid") != pid)  # fmt: skip
    assert last_id is not None
    resp, sse = await open_stream(
        http, base + "/api/events", {**bearer(token), "Last-Event-ID": last_id}
    )
    async with resp:
        seen += await sse.until(is_terminal_of(task["id"]))
    got = [m.data["seq"] for m in seen if m.data["type"] == "event"]
    timeline = [e.seq for e in client.timeline(task["id"])]
    assert got == timeline  # every event exactly once, in order
    assert [m.data["event"] for m in seen if m.data["type"] == "event"][-1] == "succeeded"


async def test_a_session_streams_its_own_principals_events_only(
    herald: Instance, http: aiohttp.ClientSession
) -> None:
    client = herald.client
    base = client.api
    bob_token = herald.cli("token", "create", "bob").stdout.strip()
    bob = await sign_in(http, base, bob_token)
    # Another page (another local port) cannot open it with the cookie: EventSource
    # sends that page's Origin.
    async with http.get(base + "/api/events", headers={
            **bob.cookie_header, "Origin": "http://127.0.0.1:1"}) as refused:  # fmt: skip
        assert refused.status == 403
    resp, sse = await open_stream(http, base + "/api/events?since=0", bob.cookie_header)
    async with resp:
        welcome = await sse.next()
        assert welcome is not None and welcome.data["principal"] == "bob"
        owner_task = client.submit("demo.answer", {"seconds": 0})
        wait_for(lambda: client.get(owner_task["id"])["state"] == "succeeded")
        async with http.post(base + "/api/tasks", headers=bob.page_headers(**{
                "Content-Type": "application/json"}), data=json.dumps(
                {"task": "demo.answer", "args": {"seconds": 0}})) as posted:  # fmt: skip
            bobs = (await posted.json())["id"]
        got = await sse.until(is_terminal_of(bobs))
        assert {m.data["task"] for m in got if m.data["type"] == "event"} == {bobs}
        # Revoking bob ends the stream.
        assert herald.cli("token", "revoke", "bob").returncode == 0
        assert await sse.next(15) is None
        assert any("4401" in c for c in sse.comments)


async def test_sign_out_ends_the_sessions_stream(
    herald: Instance, http: aiohttp.ClientSession
) -> None:
    base = herald.client.api
    browser = await sign_in(http, base, herald.client.token)
    resp, sse = await open_stream(http, base + "/api/events", browser.cookie_header)
    async with resp:
        assert (await sse.next()).data["type"] == "welcome"  # type: ignore[union-attr]
        async with http.post(base + "/api/logout", headers=browser.page_headers()) as out:
            assert out.status == 204
        msg = await sse.next(15)
        while msg is not None:  # caught_up, maybe
            msg = await sse.next(15)


@pytest.mark.slow
async def test_keep_alive_comments_come_while_nothing_happens(
    herald: Instance, http: aiohttp.ClientSession
) -> None:
    from services.web.sse import PING_INTERVAL

    resp, sse = await open_stream(
        http, herald.client.api + "/api/events", bearer(herald.client.token)
    )
    async with resp:
        await sse.next()  # welcome
        await sse.next()  # caught_up
        with pytest.raises(TimeoutError):
            await sse.next(PING_INTERVAL + 5)  # no message; but a comment came
        assert sse.comments and sse.comments[0] == "ping"


@pytest.mark.slow
async def test_a_client_that_does_not_read_is_cut_off_and_resumes(
    herald: Instance, http: aiohttp.ClientSession
) -> None:
    from services.web.sse import SEND_TIMEOUT

    client = herald.client
    # About 24 MB of output events: more than the socket buffers and aiohttp's hold.
    task = client.submit("process.run", {"program": "sh", "args": [
        "-c", "head -c 24000000 /dev/zero | tr '\\0' x | fold -w 4000"]})  # fmt: skip
    wait_for(lambda: client.get(task["id"])["state"] == "succeeded", timeout=60)
    resp = await http.get(
        client.api + "/api/events?since=0",
        headers={**bearer(client.token), "Accept": "text/event-stream"},
    )
    await asyncio.sleep(SEND_TIMEOUT + 5)  # reading nothing
    sse = SseReader(resp)
    got: list[Message] = []
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
        while (msg := await sse.next()) is not None:
            got.append(msg)
    resp.close()
    assert not any(m.data.get("event") == "succeeded" for m in got)  # cut off before the end
    last = max(int(m.id) for m in got if m.id is not None)
    # The web service is fine, and a resume from the last id gets the rest exactly.
    resp, sse = await open_stream(
        http, client.api + "/api/events", {**bearer(client.token), "Last-Event-ID": str(last)}
    )
    async with resp:
        got += await sse.until(is_terminal_of(task["id"]), timeout=60)
    seqs = [m.data["seq"] for m in got if m.data["type"] == "event"]
    assert seqs == [e.seq for e in client.timeline(task["id"])]
