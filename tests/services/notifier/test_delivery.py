"""What a connected client receives: welcome, replay, caught_up, live events, in order,
its own principal's only, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from websockets.exceptions import ConnectionClosed

from services.auth import DEFAULT_PRINCIPAL
from services.core.envelope import encode_ping, encode_resume
from services.core.events import Event
from services.store.sqlite import TaskStore
from services.wake import WakeSender

LOCAL = DEFAULT_PRINCIPAL


def seqs(messages: list[dict]) -> list[int]:
    return [m["seq"] for m in messages]


def assert_same_events(received: list[dict], expected: list[Event]) -> None:
    assert [(m["seq"], m["task"], m["event"]) for m in received] == [
        (e.seq, e.task_id, e.type.value) for e in expected
    ]


async def test_live_events_arrive_in_order(notifier, open_client, writer, recv_events,
                                           start_session):  # fmt: skip
    ws = await open_client(notifier.url)
    welcome = await start_session(ws)
    assert welcome["head"] == 0 and welcome["reset"] is False
    expected = writer.lifecycle(LOCAL, steps=3)
    writer.wake()
    received = await recv_events(ws, len(expected))
    assert_same_events(received, expected)
    last = received[-1]
    assert last["event"] == "succeeded" and last["data"] == {"result": "done"}
    assert last["attempt"] == 1 and isinstance(last["ts"], float)


async def test_events_of_several_wakeups_arrive_in_order(notifier, open_client, writer,
                                                         recv_events, start_session):  # fmt: skip
    ws = await open_client(notifier.url)
    await start_session(ws)
    first = writer.queued(LOCAL)
    writer.wake()
    assert_same_events(await recv_events(ws, 1), [first])
    more = [writer.started(first.task_id), writer.progress(first.task_id, 0.5)]
    writer.wake()
    writer.wake()
    assert_same_events(await recv_events(ws, 2), more)


async def test_resume_since_gets_exactly_the_missed_events_then_live_ones(
    notifier, open_client, writer, recv, recv_events
):
    before = writer.lifecycle(LOCAL)
    writer.lifecycle("bob")
    missed = writer.lifecycle(LOCAL)
    writer.lifecycle("bob")
    since = before[2].seq
    ws = await open_client(notifier.url, since=since)
    welcome = await recv(ws)
    head = writer.store.head(LOCAL)  # the principal's own: bob's events count nowhere
    assert head == missed[-1].seq
    assert welcome == {"v": 1, "type": "welcome", "principal": LOCAL, "head": head, "reset": False}
    replayed = await recv_events(ws, len(before) - 3 + len(missed))
    assert_same_events(replayed, before[3:] + missed)
    assert await recv(ws) == {"v": 1, "type": "caught_up", "seq": missed[-1].seq}
    live = writer.queued(LOCAL)
    writer.wake()
    assert_same_events(await recv_events(ws, 1), [live])


async def test_since_in_the_query_string(notifier, open_client, writer, recv, recv_events):
    events = writer.lifecycle(LOCAL)
    ws = await open_client(f"{notifier.url}?since={events[1].seq}")
    assert (await recv(ws))["reset"] is False
    assert_same_events(await recv_events(ws, len(events) - 2), events[2:])
    assert (await recv(ws))["type"] == "caught_up"


async def test_since_at_head_replays_nothing(notifier, open_client, writer, recv):
    events = writer.lifecycle(LOCAL)
    ws = await open_client(notifier.url, since=events[-1].seq)
    assert (await recv(ws))["reset"] is False
    assert await recv(ws) == {"v": 1, "type": "caught_up", "seq": events[-1].seq}


async def test_since_beyond_head_resets_and_replays_everything(notifier, open_client, writer,
                                                               recv, recv_events):  # fmt: skip
    mine = writer.lifecycle(LOCAL)
    writer.lifecycle("bob")
    mine += writer.lifecycle(LOCAL)
    head = writer.store.head(LOCAL)
    ws = await open_client(notifier.url, since=head + 100)
    welcome = await recv(ws)
    assert welcome["reset"] is True and welcome["head"] == head
    # Whatever the client knew is of another log: it reloads its tasks from the API.
    assert await recv(ws) == {"v": 1, "type": "reset", "reason": "recreated", "oldest": 1}
    assert_same_events(await recv_events(ws, len(mine)), mine)
    assert await recv(ws) == {"v": 1, "type": "caught_up", "seq": mine[-1].seq}


async def test_a_replay_longer_than_a_page(notifier, open_client, writer, recv, recv_events):
    task = writer.queued(LOCAL)
    expected = [task, writer.started(task.task_id)]
    expected += [writer.progress(task.task_id, i / 2600) for i in range(2500)]
    ws = await open_client(notifier.url, since=0)
    assert (await recv(ws))["type"] == "welcome"
    assert_same_events(await recv_events(ws, len(expected)), expected)
    assert await recv(ws) == {"v": 1, "type": "caught_up", "seq": expected[-1].seq}
    live = writer.succeeded(task.task_id)
    writer.wake()
    assert_same_events(await recv_events(ws, 1), [live])


async def test_principals_never_see_each_other(notifier, open_client, tokens, writer, recv,
                                               recv_events, start_session):  # fmt: skip
    ws_local = await open_client(notifier.url)
    ws_bob = await open_client(notifier.url, token=tokens["bob"])
    assert (await start_session(ws_local))["principal"] == LOCAL
    assert (await start_session(ws_bob))["principal"] == "bob"
    mine, bobs = [], []
    for _ in range(3):
        mine += writer.lifecycle(LOCAL, steps=1)
        bobs += writer.lifecycle("bob", steps=1)
    writer.wake()
    assert_same_events(await recv_events(ws_local, len(mine)), mine)
    assert_same_events(await recv_events(ws_bob, len(bobs)), bobs)
    # Nothing else is on its way: the answer to a ping comes next.
    for ws in (ws_local, ws_bob):
        await ws.send(encode_ping())
        assert (await recv(ws))["type"] == "pong"
    # Nor on replay.
    replay_bob = await open_client(notifier.url, token=tokens["bob"], since=0)
    assert (await recv(replay_bob))["principal"] == "bob"
    assert_same_events(await recv_events(replay_bob, len(bobs)), bobs)
    assert await recv(replay_bob) == {"v": 1, "type": "caught_up", "seq": bobs[-1].seq}


async def test_a_lost_wakeup_is_covered_by_the_fallback_timer(start_notifier, open_client,
                                                              writer, recv_events,
                                                              start_session):  # fmt: skip
    notifier = await start_notifier(fallback_interval=0.3)
    ws = await open_client(notifier.url)
    await start_session(ws)
    events = writer.lifecycle(LOCAL)  # and no wake-up
    assert_same_events(await recv_events(ws, len(events), timeout=5), events)


async def test_events_written_while_nobody_listens_are_replayed(notifier, open_client, writer,
                                                                recv, recv_events):  # fmt: skip
    early = writer.lifecycle(LOCAL)
    writer.wake()
    ws = await open_client(notifier.url, since=0)
    assert (await recv(ws))["type"] == "welcome"
    assert_same_events(await recv_events(ws, len(early)), early)
    assert (await recv(ws))["type"] == "caught_up"


async def test_ping_gets_pong(notifier, open_client, recv, start_session):
    ws = await open_client(notifier.url)
    await start_session(ws)
    for _ in range(3):
        await ws.send(encode_ping())
        assert await recv(ws) == {"v": 1, "type": "pong"}
    await ws.send('{"type": "ping"}')  # "v" may be left out
    assert (await recv(ws))["type"] == "pong"


async def test_resume_message_replays_then_goes_live_without_duplicates(
    notifier, open_client, writer, recv, recv_events, start_session
):
    ws = await open_client(notifier.url)
    await start_session(ws)
    events = writer.lifecycle(LOCAL)
    writer.wake()
    assert_same_events(await recv_events(ws, len(events)), events)
    await ws.send(encode_resume(events[1].seq))
    welcome = await recv(ws)
    assert welcome["type"] == "welcome" and welcome["reset"] is False
    assert_same_events(await recv_events(ws, len(events) - 2), events[2:])
    assert await recv(ws) == {"v": 1, "type": "caught_up", "seq": events[-1].seq}
    live = writer.lifecycle(LOCAL)
    writer.wake()
    assert_same_events(await recv_events(ws, len(live)), live)
    await ws.send(encode_ping())
    assert (await recv(ws))["type"] == "pong"


async def test_a_client_too_far_behind_is_closed_with_1013_and_resumes_losslessly(
    start_notifier, open_client, tokens, writer, recv, recv_events, start_session
):
    # A 1-byte outbox: one message at a time fits (into an empty outbox), a burst does not.
    notifier = await start_notifier(max_outbox=1)
    ws = await open_client(notifier.url)
    other = await open_client(notifier.url, token=tokens["bob"])
    await start_session(ws)
    await start_session(other)
    burst = writer.lifecycle(LOCAL, steps=3)  # 6 events queued at once
    bobs = writer.queued("bob")
    writer.wake()
    async with asyncio.timeout(5):
        await ws.wait_closed()
    assert ws.close_code == 1013
    assert "reconnect with your last seq" in ws.close_reason
    # The others are not affected.
    assert_same_events(await recv_events(other, 1), [bobs])
    again = await open_client(notifier.url, since=0)
    assert (await recv(again))["type"] == "welcome"
    assert_same_events(await recv_events(again, len(burst)), burst)


async def test_stop_closes_connections_with_going_away(start_notifier, open_client,
                                                       start_session):  # fmt: skip
    notifier = await start_notifier()
    ws = await open_client(notifier.url)
    await start_session(ws)
    await notifier.stop()
    async with asyncio.timeout(5):
        await ws.wait_closed()
    assert ws.close_code == 1001


async def test_no_gap_and_no_duplicate_while_events_pour_in(notifier, open_client, tokens,
                                                            layout, writer, recv):  # fmt: skip
    """Clients connect and resume at arbitrary moments while another thread writes."""
    total = 600
    tasks = {}
    for p in (LOCAL, "bob"):
        task = writer.queued(p)
        writer.started(task.task_id)
        tasks[p] = task.task_id

    def write() -> None:
        # A thread of its own, like the worker: its own store connection and wake socket.
        store = TaskStore(layout.ledger_db)
        wake = WakeSender(layout.wake_address("notifier"))
        try:
            for i in range(total):
                p = LOCAL if i % 3 else "bob"
                assert store.progress(tasks[p], 1, i / total, None) is not None
                if i % 7 == 0:
                    wake.wake()
            for p in tasks:  # the last event each follower waits for
                assert store.output(tasks[p], 1, ["end"]) is not None
            wake.wake()
        finally:
            wake.close()
            store.close()

    async def follow(principal: str, since: int | None, resume_at: int | None) -> None:
        ws = await open_client(notifier.url, token=tokens[principal], since=since)
        welcome = await recv(ws)
        # A resume point beyond the head (the writer has not got there yet) is a reset.
        start = welcome["head"] if since is None else (0 if welcome["reset"] else since)
        got: list[int] = []
        in_resume = False
        while True:
            msg = await recv(ws)
            if msg["type"] == "welcome":
                in_resume = False
            if msg["type"] != "event" or in_resume:
                continue  # events sent before the resume was handled are replayed after it
            got.append(msg["seq"])
            if msg["data"].get("lines") == ["end"]:
                break
            if len(got) == resume_at:
                back = got[len(got) // 2]
                del got[len(got) // 2 + 1 :]
                await ws.send(encode_resume(back))
                in_resume, resume_at = True, None
        expected = writer.store.events_after(start, principal=principal, limit=10_000)
        assert got == [e.seq for e in expected]

    thread = threading.Thread(target=write)
    followers = [asyncio.create_task(follow(LOCAL, None, None)),
                 asyncio.create_task(follow("bob", 0, None))]  # fmt: skip
    thread.start()
    try:
        for principal, since, resume_at in [(LOCAL, 0, 50), ("bob", None, 20), (LOCAL, 5, 100)]:
            await asyncio.sleep(0)  # yield only: these connect while the writer runs
            followers.append(asyncio.create_task(follow(principal, since, resume_at)))
        async with asyncio.timeout(20):
            await asyncio.gather(*followers)
    finally:
        thread.join()


class FailingReads(TaskStore):
    """The real store, whose reads fail as a failing disk's do while `failing` is set."""

    failing = False

    def _check(self) -> None:
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")

    def head(self, principal: str | None = None) -> int:
        self._check()
        return super().head(principal)

    def events_after(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._check()
        return super().events_after(*args, **kwargs)


async def test_reads_that_fail_are_tried_again_and_a_client_meanwhile_comes_back_later(
        layout, open_client, writer, recv_events, start_session, caplog):  # fmt: skip
    from services.auth import Authenticator
    from services.notifier.server import Notifier
    from services.wake import WakeReceiver

    store = FailingReads(layout.ledger_db)
    receiver = WakeReceiver(layout.wake_address("notifier"))
    # No fallback timer to speak of: only the notifier's own retry can deliver.
    notifier = Notifier(store, Authenticator(layout), receiver, fallback_interval=600)
    await notifier.start()
    try:
        live = await open_client(notifier.url)
        await start_session(live)
        store.failing = True
        events = writer.lifecycle(LOCAL)
        writer.wake()  # its read fails
        late = await open_client(notifier.url)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(late.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert "try again later" in closed.value.rcvd.reason
        async with asyncio.timeout(5):
            while not any("cannot read the event log" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.01)
        store.failing = False  # and no wake-up: the notifier reads again by itself
        assert_same_events(await recv_events(live, len(events)), events)
    finally:
        await notifier.stop()
        receiver.close()
        store.close()
