"""The one client (async and blocking) against a real `herald serve`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator

import pytest

from embedded.client import (
    ApiError,
    AsyncEventStream,
    AsyncHeraldClient,
    HeraldClient,
    ServiceUnavailable,
    StreamClosed,
    StreamState,
)
from services.core.events import Event, EventType
from services.core.stream import reconnect_delays
from tests.e2e.harness import Instance, collect_until_terminal, start_serve

FAST = {"delays": lambda: reconnect_delays(first=0.01, cap=0.05)}


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("client")
    inst = start_serve(root / "data", root / "runtime", "--concurrency", "2")
    yield inst
    inst.stop()


@pytest.fixture
def blocking(serve: Instance) -> HeraldClient:
    return serve.client  # closed when the instance stops


@pytest.fixture
async def client(blocking: HeraldClient) -> AsyncHeraldClient:
    async with AsyncHeraldClient(blocking.api, blocking.ws, blocking.token) as c:
        yield c


def dead_ws_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws"


async def until_terminal(stream: AsyncEventStream, task_id: str) -> list[Event]:
    events = []
    async with asyncio.timeout(30):
        async for msg in stream:
            if msg.event is not None and msg.event.task_id == task_id:
                events.append(msg.event)
                if msg.event.terminal:
                    return events
    raise AssertionError("the stream ended")


async def test_async_round_trip(client: AsyncHeraldClient):
    assert (await client.health())["status"] in ("ok", "degraded")
    assert "demo.answer" in {t["name"] for t in await client.catalog()}
    async with client.events() as stream:
        task = await client.submit("demo.answer", {"seconds": 0.2})
        assert task["state"] == "queued"
        events = await until_terminal(stream, task["id"])
    assert events[-1].type is EventType.SUCCEEDED and events[-1].data["result"] == 42
    assert (await client.get(task["id"]))["result"] == 42
    assert [e.seq for e in await client.timeline(task["id"])] == [e.seq for e in events]
    # a finished task answers cancel with itself (the API's 409 already_finished)
    assert (await client.cancel(task["id"]))["state"] == "succeeded"
    assert stream.state is StreamState.CLOSED


async def test_task_pages_and_idempotent_submits(client: AsyncHeraldClient):
    first = await client.submit("demo.answer", {"seconds": 0}, idempotency_key="k-pages")
    again = await client.submit("demo.answer", {"seconds": 0}, idempotency_key="k-pages")
    assert again["id"] == first["id"]
    page = await client.list_tasks(limit=1)
    assert len(page.tasks) == 1 and page.next_before is not None
    second = await client.list_tasks(limit=1, before=page.next_before)
    assert second.tasks[0]["id"] != page.tasks[0]["id"]
    every = [t["id"] async for t in client.iter_tasks(page_size=1)]
    assert every == [t["id"] for t in (await client.list_tasks(limit=200)).tasks]
    assert first["id"] in every


async def test_api_errors_carry_code_and_fields(client: AsyncHeraldClient):
    with pytest.raises(ApiError) as bad:
        await client.submit("demo.answer", {"seconds": -1})
    assert (bad.value.status, bad.value.code) == (422, "validation_failed")
    assert "seconds" in bad.value.fields
    with pytest.raises(ApiError) as unknown:
        await client.get("no-such-task")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")


async def test_submit_sends_a_time_limit(client: AsyncHeraldClient, blocking: HeraldClient):
    limited = await client.submit("demo.answer", {"seconds": 0}, timeout=2.5)
    assert limited["timeout"] == 2.5
    assert (await client.submit("demo.answer", {"seconds": 0}))["timeout"] is None
    assert blocking.submit("demo.answer", {"seconds": 0}, timeout=4)["timeout"] == 4
    with pytest.raises(ApiError) as bad:
        await client.submit("demo.answer", {"seconds": 0}, timeout=-1)
    assert (bad.value.status, bad.value.code) == (422, "validation_failed")
    assert bad.value.fields == {"timeout": "must be a positive number of seconds"}
    async with client.events() as stream:
        task = await client.submit("demo.answer", {"seconds": 5}, timeout=0.3)
        events = await until_terminal(stream, task["id"])
    started = next(e for e in events if e.type is EventType.STARTED)
    assert started.data == {"attempt": 1, "timeout": 0.3}
    assert events[-1].type is EventType.FAILED
    assert events[-1].data["error"]["code"] == "timeout"


async def test_a_bad_token_is_refused_on_both_channels(client: AsyncHeraldClient):
    async with AsyncHeraldClient(client.api, client.ws, "not-the-token") as stranger:
        with pytest.raises(ApiError) as http:
            await stranger.list_tasks()
        assert http.value.status == 401
        stream = stranger.events()
        with pytest.raises(ApiError) as ws:
            await stream.open()
        assert ws.value.status == 401 and ws.value.code == "unauthorized"
        assert stream.state is StreamState.CLOSED


async def test_unreachable_service_is_one_clear_error():
    url = dead_ws_url()
    async with AsyncHeraldClient(url.replace("ws:", "http:")[: -len("/ws")], url, "t") as c:
        with pytest.raises(ServiceUnavailable):
            await c.health()
    states = []
    stream = AsyncEventStream(url, "t", give_up_after=0.2,
                              on_state=lambda s, r: states.append(s), **FAST)  # fmt: skip
    with pytest.raises(ServiceUnavailable):
        await stream.open()
    assert states[0] is StreamState.CONNECTING
    assert StreamState.RECONNECTING in states and states[-1] is StreamState.CLOSED
    with pytest.raises(StreamClosed):
        await stream.recv()


async def test_stream_reconnects_by_itself_after_the_notifier_is_killed(
    serve: Instance, client: AsyncHeraldClient
):
    states: list[tuple[StreamState, float | None]] = []
    stream = client.events(on_state=lambda s, r: states.append((s, r)))
    await stream.open()
    try:
        task = await client.submit("demo.answer", {"seconds": 1.5})
        events = []
        async with asyncio.timeout(30):
            async for msg in stream:
                if msg.event is not None and msg.event.task_id == task["id"]:
                    events.append(msg.event)
                    if msg.event.type is EventType.PROGRESS:
                        break
            old = serve.service_pid("notifier")
            os.kill(old, signal.SIGKILL)
            events += await until_terminal(stream, task["id"])
    finally:
        await stream.close()
    seen = [s for s, _ in states]
    drop = seen.index(StreamState.RECONNECTING)
    assert StreamState.CONNECTED in seen[drop:]
    assert all(r is not None and r > 0 for s, r in states if s is StreamState.RECONNECTING)
    assert seen[-1] is StreamState.CLOSED
    assert serve.status()["notifier"]["pid"] != old
    # nothing lost, nothing twice: exactly the task's recorded timeline
    timeline = await client.timeline(task["id"])
    assert [e.seq for e in events] == [e.seq for e in timeline]
    assert events[-1].type is EventType.SUCCEEDED


async def test_closing_a_stream_in_the_middle_ends_its_iteration(client: AsyncHeraldClient):
    stream = client.events()
    await stream.open()
    first = asyncio.Event()

    async def read() -> int:
        count = 0
        async for _ in stream:
            count += 1
            first.set()
        return count

    reader = asyncio.create_task(read())
    await asyncio.wait_for(first.wait(), 10)  # it has read "caught_up" and waits for more
    await stream.close()
    assert await asyncio.wait_for(reader, 10) >= 1
    assert stream.closed and stream.state is StreamState.CLOSED
    await stream.close()  # idempotent


async def test_closing_a_stream_while_it_waits_to_reconnect():
    reconnecting = asyncio.Event()

    def on_state(state: StreamState, retry_in: float | None) -> None:
        if state is StreamState.RECONNECTING:
            reconnecting.set()

    stream = AsyncEventStream(dead_ws_url(), "t", on_state=on_state)  # tries for ever
    reader = asyncio.create_task(anext(aiter(stream), None))
    await asyncio.wait_for(reconnecting.wait(), 10)
    await stream.close()
    assert await asyncio.wait_for(reader, 10) is None  # the iteration just ended


def test_blocking_messages_time_out_with_none(blocking: HeraldClient):
    with blocking.events() as stream:
        kinds = []
        for msg in stream.messages(timeout=0.05):
            kinds.append(None if msg is None else msg.type)
            if msg is None:
                break
        assert kinds[-1] is None and "event" not in kinds
        task = blocking.submit("demo.answer", {"seconds": 0})
        events = collect_until_terminal(stream, task["id"])
        assert events[0].type is EventType.QUEUED
        assert stream.last_seq == events[-1].seq
    assert stream.state is StreamState.CLOSED
    assert list(stream.messages(timeout=0.05)) == []  # a closed stream yields nothing


def test_blocking_client_closes_its_streams_and_thread(blocking: HeraldClient):
    c = HeraldClient(blocking.api, blocking.ws, blocking.token)
    stream = c.events()
    stream.open()
    assert c.health()["status"] in ("ok", "degraded")
    c.close()  # closes the open stream too
    assert stream.state is StreamState.CLOSED
    assert c.health()["status"] in ("ok", "degraded")  # usable again: a new loop thread
    c.close()
    c.close()


def test_a_ctrl_c_inside_a_conditions_wait_stays_a_ctrl_c():
    """CPython may run the SIGINT handler inside Condition.wait right after it released its
    lock; `with condition:` then fails to release it again and the RuntimeError hides the
    KeyboardInterrupt (seen once in CI: `herald follow` printed a traceback, exit 1, instead
    of "stopped following", exit 130). That race cannot be timed from a test: the future
    here raises what it leaves behind."""
    import concurrent.futures

    from embedded.client import _wait

    class Interrupted(concurrent.futures.Future):
        def exception(self, timeout=None):
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("cannot release un-acquired lock")  # noqa: B904

    with pytest.raises(KeyboardInterrupt):
        _wait(Interrupted(), 1.0)
