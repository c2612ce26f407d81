"""What a principal sees of sequence numbers on the WebSocket is its own: the welcome's
head, events' seq and caught_up do not move when another principal works, and resuming
stays exact while both work."""

from __future__ import annotations

from services.auth import DEFAULT_PRINCIPAL

LOCAL = DEFAULT_PRINCIPAL


async def test_bobs_view_does_not_move_when_another_principal_works(
    notifier, open_client, tokens, writer, recv, recv_events, start_session
):
    bobs = writer.lifecycle("bob")
    ws = await open_client(notifier.url, token=tokens["bob"], since=bobs[-1].seq)
    welcome = await start_session(ws)
    assert welcome["head"] == bobs[-1].seq == len(bobs)
    for _ in range(5):
        writer.lifecycle(LOCAL)
    writer.wake()
    again = await open_client(notifier.url, token=tokens["bob"])
    assert (await start_session(again))["head"] == welcome["head"]
    fresh = await open_client(notifier.url, token=tokens["bob"], since=0)
    assert (await recv(fresh))["head"] == welcome["head"]
    assert [m["seq"] for m in await recv_events(fresh, len(bobs))] == list(range(1, 6))
    assert await recv(fresh) == {"v": 1, "type": "caught_up", "seq": len(bobs)}
    # Its next live event follows its last one: nothing in between for ours.
    nxt = writer.queued("bob")
    writer.wake()
    assert [m["seq"] for m in await recv_events(ws, 1)] == [nxt.seq] == [len(bobs) + 1]


async def test_resume_is_exact_while_two_principals_interleave(
    notifier, open_client, tokens, writer, recv, recv_events
):
    mine, seen = [], 0
    for round_ in range(4):
        mine += writer.lifecycle(LOCAL, steps=round_)
        writer.lifecycle("bob", steps=3 - round_)
        ws = await open_client(notifier.url, since=seen)
        welcome = await recv(ws)
        assert welcome["head"] == mine[-1].seq and welcome["reset"] is False
        got = await recv_events(ws, len(mine) - seen)
        assert [m["seq"] for m in got] == [e.seq for e in mine[seen:]]
        assert (await recv(ws))["type"] == "caught_up"
        seen = mine[-1].seq
        await ws.close()
    assert [e.seq for e in mine] == list(range(1, len(mine) + 1))
