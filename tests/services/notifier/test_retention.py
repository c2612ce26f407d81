"""A client resuming after retention pruned events: a "reset" when events it was owed are
gone, exactly the missed events otherwise, and never because of another principal's."""

from __future__ import annotations

from services.auth import DEFAULT_PRINCIPAL

LOCAL = DEFAULT_PRINCIPAL


def _keys(messages):
    return [(m["seq"], m["task"], m["event"]) for m in messages]


def _event_keys(events):
    return [(e.seq, e.task_id, e.type.value) for e in events]


async def test_resume_from_before_the_pruned_events_gets_a_reset_then_what_is_left(
    notifier, open_client, writer, recv, recv_events
):
    old = writer.lifecycle(LOCAL)
    kept = writer.lifecycle(LOCAL)
    with writer.store._write() as c:  # the first task finished long ago
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (old[0].task_id,))
    assert writer.store.prune(older_than=86400).tasks == 1

    ws = await open_client(notifier.url, since=old[1].seq)  # it saw part of the old task
    welcome = await recv(ws)
    assert welcome["type"] == "welcome" and welcome["reset"] is False
    reset = await recv(ws)
    assert reset == {"v": 1, "type": "reset", "reason": "pruned", "oldest": old[-1].seq + 1}
    assert _keys(await recv_events(ws, len(kept))) == _event_keys(kept)
    assert (await recv(ws))["type"] == "caught_up"


async def test_resume_from_after_the_watermark_gets_exactly_what_it_missed(
    notifier, open_client, writer, recv, recv_events
):
    old = writer.lifecycle(LOCAL)
    seen = writer.lifecycle(LOCAL)
    missed = writer.lifecycle(LOCAL)
    with writer.store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (old[0].task_id,))
    writer.store.prune(older_than=86400)

    ws = await open_client(notifier.url, since=seen[-1].seq)
    assert (await recv(ws))["type"] == "welcome"
    assert _keys(await recv_events(ws, len(missed))) == _event_keys(missed)
    assert (await recv(ws)) == {"v": 1, "type": "caught_up", "seq": missed[-1].seq}


async def test_another_principals_pruned_events_cause_no_reset(
    notifier, open_client, writer, recv, recv_events
):
    mine = writer.lifecycle(LOCAL)
    theirs = writer.lifecycle("bob")  # later seqs than mine
    mine_later = writer.lifecycle(LOCAL)
    with writer.store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (theirs[0].task_id,))
    writer.store.prune(older_than=86400)
    assert writer.store.pruned_through("bob") == theirs[-1].seq

    # Its resume point lies in the gap the pruning left: nothing it was owed is gone.
    ws = await open_client(notifier.url, since=mine[-1].seq)
    assert (await recv(ws))["type"] == "welcome"
    assert _keys(await recv_events(ws, len(mine_later))) == _event_keys(mine_later)
    assert (await recv(ws))["type"] == "caught_up"


async def test_a_resume_message_after_pruning_gets_a_reset_too(
    notifier, open_client, writer, recv, recv_events, start_session
):
    from services.core.envelope import encode_resume

    old = writer.lifecycle(LOCAL)
    ws = await open_client(notifier.url, since=old[-1].seq)
    await start_session(ws)
    with writer.store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (old[0].task_id,))
    writer.store.prune(older_than=86400)
    await ws.send(encode_resume(old[0].seq))  # it saw the first event: the rest are gone
    assert (await recv(ws))["type"] == "welcome"
    assert (await recv(ws))["type"] == "reset"
    assert (await recv(ws))["type"] == "caught_up"


async def test_a_resume_from_nothing_after_pruning_replays_what_is_left_without_a_reset(
    notifier, open_client, writer, recv, recv_events, start_session
):
    """Cursor 0 has seen nothing that could be gone (on Redis a principal's seqs start
    above a floor that is its watermark: every first-time client would be told to reload)."""
    from services.core.envelope import encode_resume

    old = writer.lifecycle(LOCAL)
    kept = writer.lifecycle(LOCAL)
    ws = await open_client(notifier.url, since=kept[-1].seq)
    await start_session(ws)
    with writer.store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (old[0].task_id,))
    writer.store.prune(older_than=86400)
    await ws.send(encode_resume(0))
    assert (await recv(ws))["type"] == "welcome"
    replayed = [await recv(ws) for _ in kept]
    assert [m.get("seq") for m in replayed] == [e.seq for e in kept]
    assert (await recv(ws))["type"] == "caught_up"


async def test_a_live_client_that_lost_events_not_sent_yet_gets_a_reset(
    notifier, open_client, writer, recv, recv_events, start_session
):
    from services.wake import PRUNED_WAKE

    ws = await open_client(notifier.url, since=0)
    await start_session(ws)
    lost = writer.lifecycle(LOCAL)  # recorded, but pruned before the notifier read it
    with writer.store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (lost[0].task_id,))
    writer.store.prune(older_than=86400)
    writer.sender.wake(PRUNED_WAKE)
    assert await recv(ws) == {"v": 1, "type": "reset", "reason": "pruned",
                              "oldest": lost[-1].seq + 1}  # fmt: skip


async def test_a_live_client_that_was_sent_the_pruned_events_gets_no_reset(
    notifier, open_client, writer, recv, recv_events, start_session
):
    from services.core.envelope import encode_ping
    from services.wake import PRUNED_WAKE

    ws = await open_client(notifier.url, since=0)
    await start_session(ws)
    seen = writer.lifecycle(LOCAL)
    writer.wake()
    await recv_events(ws, len(seen))
    with writer.store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (seen[0].task_id,))
    writer.store.prune(older_than=86400)
    writer.sender.wake(PRUNED_WAKE)
    later = writer.queued(LOCAL)
    writer.wake()  # handled after the pruned wake-up: same socket, in order
    assert (await recv(ws))["seq"] == later.seq
    await ws.send(encode_ping())
    assert (await recv(ws))["type"] == "pong"  # no reset in between


async def test_a_live_client_is_reset_when_its_mark_rises_below_another_principals(
    notifier, open_client, writer, recv, recv_events, start_session
):
    # Watermarks are per principal and count in each one's own seqs: bob's being higher
    # must not hide that ours rose.
    from services.wake import PRUNED_WAKE

    bobs = [writer.lifecycle("bob") for _ in range(3)]
    with writer.store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE principal = 'bob'")
    writer.store.prune(older_than=86400)
    writer.sender.wake(PRUNED_WAKE)
    assert writer.store.pruned_through("bob") == bobs[-1][-1].seq
    ws = await open_client(notifier.url, since=0)
    await start_session(ws)
    lost = writer.lifecycle(LOCAL)  # pruned before the notifier read it
    assert writer.store.pruned_through("bob") > lost[-1].seq
    with writer.store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (lost[0].task_id,))
    writer.store.prune(older_than=86400)
    writer.sender.wake(PRUNED_WAKE)
    assert await recv(ws) == {"v": 1, "type": "reset", "reason": "pruned",
                              "oldest": lost[-1].seq + 1}  # fmt: skip
