"""The protocol sessions' rules that the vectors (tests/vectors/protocol) do not show."""

import json

import pytest

from services.core.envelope import CLOSE_POLICY_VIOLATION, ProtocolError, encode_subscribe
from services.core.events import Event, EventType
from services.core.session import ClientSession, ServerSession


def events(*seqs: int, task: str = "a", data: dict | None = None) -> list[Event]:
    return [Event(seq=s, task_id=task, principal="p", type=EventType.PROGRESS, ts=1.0,
                  attempt=1, data=data or {}) for s in seqs]  # fmt: skip


def types(texts: list[str]) -> list[tuple[str, int | None]]:
    out = []
    for obj in map(json.loads, texts):
        out.append((obj["type"], obj.get("seq", obj.get("oldest"))))
    return out


def test_a_page_cut_short_by_its_bytes_is_read_on():
    session = ServerSession("p", page=10, page_bytes=100)
    session.open(since=0, head=3)
    assert session.replay_after() == 0
    big = events(1, 2, data={"blob": "x" * 80})  # more than page_bytes of text
    assert session.replay_page(big) == 2
    assert session.replay_after() == 2  # read on, though the page held fewer than 10
    session.replay_page(events(3))
    assert session.replay_after() is None
    session.go_live()
    assert [t for t, _ in types(session.data_to_send())] == [
        "welcome", "event", "event", "event", "caught_up"]  # fmt: skip


def test_pruning_during_the_replay_is_a_reset_before_caught_up():
    session = ServerSession("p")
    session.open(since=2, head=5, pruned_through=0)
    session.replay_page(events(3, 4, 5))
    assert session.needs_pruned_check()
    session.replay_done(pruned_through=4)  # deleted while it was being read
    sub = session.go_live()
    assert sub.cursor == 5
    assert types(session.data_to_send()) == [
        ("welcome", None), ("event", 3), ("event", 4), ("event", 5), ("reset", 5),
        ("caught_up", 5)]  # fmt: skip


def test_a_live_only_stream_replays_nothing_and_needs_no_watermark():
    session = ServerSession("p")
    session.open(since=None, head=7)
    assert session.replay_after() == 7
    session.replay_page([])
    assert session.replay_after() is None and not session.needs_pruned_check()
    assert session.go_live().cursor == 7


def test_subscribing_to_more_than_the_limit_is_a_policy_violation():
    session = ServerSession("p", max_subscribed=3)
    session.open(since=None, head=0)
    session.replay_page([])
    session.go_live()
    session.subscribe(["a", "b"], None, 0, lambda after, task: [])
    session.subscribe(["b", "c"], None, 0, lambda after, task: [])  # 3: still allowed
    with pytest.raises(ProtocolError) as raised:
        session.subscribe(["d"], None, 0, lambda after, task: [])
    assert raised.value.code == CLOSE_POLICY_VIOLATION


def test_a_subscribe_before_the_stream_is_live_is_ignored():
    session = ServerSession("p")
    session.subscribe(["a"], None, 0, lambda after, task: [])
    assert session.data_to_send() == [] and session.tasks is None


def test_a_subscribe_not_answered_before_a_drop_is_sent_again():
    client = ClientSession(since=0)
    client.connection_made()
    client.receive_text('{"v":1,"type":"welcome","principal":"p","head":0,"reset":false}')
    client.subscribe(["a"])
    assert client.data_to_send() == [encode_subscribe(["a"], 0)]
    client.connection_lost(1006)  # before its answer came
    client.connection_made()
    client.receive_text('{"v":1,"type":"welcome","principal":"p","head":0,"reset":false}')
    assert client.data_to_send() == [encode_subscribe(["a"], 0)]


def test_nothing_is_sent_for_a_connection_that_was_lost():
    client = ClientSession(since=0)
    client.connection_made()
    client.receive_text('{"v":1,"type":"welcome","principal":"p","head":0,"reset":false}')
    client.ping()
    client.connection_lost(None)
    assert client.data_to_send() == [] and not client.ping()
