"""Fan-out that scales: each event framed once and written alike to every live connection
that should get it; subscriptions to some tasks; the replay and outbox rules kept."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed

import services.notifier.server as server
from embedded.client import AsyncEventStream
from services.auth import DEFAULT_PRINCIPAL
from services.core.envelope import CLOSE_TRY_AGAIN_LATER

LOCAL = DEFAULT_PRINCIPAL


async def events_until(ws, recv, n: int) -> list[dict]:
    """The next `n` events (other messages are skipped)."""
    out: list[dict] = []
    while len(out) < n:
        msg = await recv(ws)
        if msg["type"] == "event":
            out.append(msg)
    return out


def encode_subscribe(tasks, since=None) -> str:
    body = {"v": 1, "type": "subscribe", "tasks": list(tasks)}
    if since is not None:
        body["since"] = since
    return json.dumps(body)


async def subscribe(ws, recv, tasks, since=None) -> list[dict]:
    """Send a subscribe; returns what precedes its caught_up, from its welcome on."""
    await ws.send(encode_subscribe(tasks, since))
    while (msg := await recv(ws))["type"] != "welcome":
        pass
    got = [msg]
    while got[-1]["type"] != "caught_up":
        got.append(await recv(ws))
    return got


async def test_a_burst_is_framed_once_and_written_once_to_each_live_connection(
    notifier, open_client, tokens, writer, recv, recv_events, start_session
):
    clients = [await open_client(notifier.url) for _ in range(5)]
    bob = await open_client(notifier.url, token=tokens["bob"])
    for ws in (*clients, bob):
        await start_session(ws)
    before = dict(notifier.stats)
    events = writer.lifecycle(LOCAL, steps=3)  # 6 events, one wake-up
    writer.wake()
    for ws in clients:
        got = await recv_events(ws, len(events))
        assert [m["seq"] for m in got] == [e.seq for e in events]  # each once, in order
    assert notifier.stats["framed"] - before["framed"] == len(events)
    assert notifier.stats["writes"] - before["writes"] == len(clients)
    with pytest.raises(TimeoutError):
        await recv(bob, timeout=0.2)  # nothing of another principal's


async def test_a_replaying_connection_gets_no_live_event_before_its_replay_ends(
    notifier, open_client, writer, recv, start_session, monkeypatch
):
    monkeypatch.setattr(server, "PAGE", 5)  # a replay of many pages, at the client's pace
    mine = writer.queued(LOCAL)
    writer.started(mine.task_id)
    for i in range(40):
        writer.progress(mine.task_id, i / 100)
    writer.wake()
    live = await open_client(notifier.url)  # live all along: gets the shared frames
    await start_session(live)
    ws = await open_client(notifier.url)
    await start_session(ws)

    async def keep_writing() -> None:
        for i in range(30):
            writer.progress(mine.task_id, 0.5 + i / 100)
            writer.wake()
            await asyncio.sleep(0.002)

    await subscribe(ws, recv, [mine.task_id])  # narrowed: and its replays too
    writing = asyncio.create_task(keep_writing())
    await ws.send(json.dumps({"v": 1, "type": "resume", "since": 0}))
    while (msg := await recv(ws))["type"] != "welcome":
        pass
    got = [msg]
    while got[-1]["type"] != "caught_up":
        got.append(await recv(ws))
    await writing
    writer.succeeded(mine.task_id)
    writer.wake()
    caught_up = got[-1]["seq"]
    replayed = [m["seq"] for m in got if m["type"] == "event"]
    assert replayed == sorted(set(replayed)) and replayed[-1] == caught_up  # in order, once
    after = [m["seq"] for m in await events_until(ws, recv, 73 - len(replayed))]
    assert after[0] > caught_up and after == sorted(set(after))
    assert replayed + after == list(range(1, 74))  # nothing lost, nothing twice
    shared = [m["seq"] for m in await events_until(live, recv, 31)]
    assert shared == list(range(43, 74))  # the live one: each once, in order


async def test_a_subscribed_connection_gets_only_its_tasks_and_resumes_exactly(
    notifier, open_client, tokens, writer, recv, start_session
):
    a, b = writer.queued(LOCAL), writer.queued(LOCAL)
    everything = await open_client(notifier.url)  # not subscribed: everything, as before
    await start_session(everything)
    ws = await open_client(notifier.url)
    await start_session(ws)
    assert len(await subscribe(ws, recv, [])) == 2  # narrowed to nothing yet
    got = await subscribe(ws, recv, [a.task_id], since=0)  # added: what it was not sent
    assert [m["task"] for m in got if m["type"] == "event"] == [a.task_id]  # its queued
    bob = await open_client(notifier.url, token=tokens["bob"])
    await start_session(bob)
    await subscribe(bob, recv, [])
    assert (await subscribe(bob, recv, [a.task_id], since=0))[1]["type"] == "caught_up"
    writer.started(a.task_id)
    writer.started(b.task_id)
    writer.progress(b.task_id, 0.5)
    writer.progress(a.task_id, 0.5)
    done = writer.succeeded(a.task_id)
    writer.succeeded(b.task_id)
    writer.wake()
    mine = await events_until(ws, recv, 3)
    assert [(m["task"], m["event"]) for m in mine] == [
        (a.task_id, "started"), (a.task_id, "progress"), (a.task_id, "succeeded")]
    assert len(await events_until(everything, recv, 6)) == 6
    with pytest.raises(TimeoutError):
        await recv(bob, timeout=0.2)  # another principal's task id matches nothing
    # Reconnect from the middle, subscribe again: exactly the rest of its own task.
    again = await open_client(notifier.url)
    await start_session(again)
    await subscribe(again, recv, [])
    got = await subscribe(again, recv, [a.task_id], since=mine[0]["seq"])
    assert [m["seq"] for m in got if m["type"] == "event"] == [mine[1]["seq"], done.seq]
    with pytest.raises(TimeoutError):
        await recv(ws, timeout=0.2)  # and b's events never reached the subscribed one


async def test_a_subscribed_slow_reader_is_cut_off_and_its_neighbour_is_not(
    start_notifier, open_client, writer, recv, start_session
):
    notifier = await start_notifier(max_outbox=512 * 1024)
    first = writer.queued(LOCAL)
    writer.started(first.task_id)
    other = writer.queued(LOCAL)
    writer.started(other.task_id)
    attempt = writer._attempts[first.task_id]
    slow = await open_client(notifier.url, max_size=None)
    reader = await open_client(notifier.url, max_size=None)
    for ws in (slow, reader):
        await start_session(ws)
        await subscribe(ws, recv, [first.task_id])
    neighbour = await open_client(notifier.url)
    await start_session(neighbour)
    await subscribe(neighbour, recv, [other.task_id])
    slow.transport.pause_reading()
    big, sent = "y" * 100_000, []
    for _ in range(300):  # up to 30 MB, 100 kB at a time
        writer.store.output(first.task_id, attempt, [big])
        writer.wake()
        sent.append((await events_until(reader, recv, 1))[0]["seq"])  # a reader keeps up
        if notifier.connections == 2:
            break
    assert notifier.connections == 2  # the slow one was dropped
    writer.progress(other.task_id, 0.5)
    writer.wake()
    assert (await events_until(neighbour, recv, 1))[0]["task"] == other.task_id
    slow.transport.resume_reading()
    got: list[int] = []
    with pytest.raises(ConnectionClosed):
        while True:
            got.append((await recv(slow))["seq"])
    assert slow.close_code == CLOSE_TRY_AGAIN_LATER
    assert got == sent[: len(got)] and len(got) < len(sent)  # a prefix, in order


async def test_the_client_stream_subscribes_and_keeps_it_across_a_reconnect(
    start_notifier, tokens, writer
):
    notifier = await start_notifier()
    a, b = writer.queued(LOCAL), writer.queued(LOCAL)
    stream = AsyncEventStream(notifier.url, tokens[LOCAL], since=0)
    seen: list[tuple[int, str, str]] = []

    async def take_until(task_id: str, event: str) -> None:
        async with asyncio.timeout(5):
            while (task_id, event) not in {(t, e) for _, t, e in seen}:
                msg = await stream.recv()
                if msg.event is not None:
                    seen.append((msg.event.seq, msg.event.task_id, msg.event.type.value))

    await stream.open()
    await take_until(b.task_id, "queued")  # not subscribed: every task's events
    await stream.subscribe([b.task_id])  # (takes effect when the notifier answers)
    writer.started(a.task_id)
    writer.started(b.task_id)
    writer.wake()
    await take_until(b.task_id, "started")
    await notifier.stop()  # the stream reconnects by itself, still subscribed
    writer.progress(a.task_id, 0.5)
    writer.progress(b.task_id, 0.5)
    writer.succeeded(b.task_id)
    other = writer.queued(LOCAL)  # never subscribed to: none of its events
    notifier = await start_notifier(port=notifier.port)
    await take_until(b.task_id, "succeeded")
    # Tasks subscribed to after the stream went past their events still get them all.
    c = writer.queued(LOCAL)
    writer.started(other.task_id)
    writer.progress(a.task_id, 0.7)
    await stream.subscribe([a.task_id])
    writer.progress(a.task_id, 0.8)
    writer.wake()
    await take_until(a.task_id, "progress")
    await stream.subscribe([c.task_id])
    writer.started(c.task_id)
    writer.succeeded(a.task_id)
    writer.wake()
    await take_until(c.task_id, "started")
    await take_until(a.task_id, "succeeded")
    await stream.close()
    seqs = [seq for seq, _, _ in seen]
    assert len(seqs) == len(set(seqs))  # each once
    expected = [e.seq for e in writer.store.events_after(0, principal=LOCAL)
                if e.task_id != other.task_id]  # fmt: skip
    assert sorted(seqs) == expected  # every event of its tasks, none of the other's
    assert [s for s, t, _ in seen if t == a.task_id] == sorted(
        s for s, t, _ in seen if t == a.task_id)  # a task's own events in order
