"""The client side of the delivery rules: the cursor and the reconnection schedule."""

from itertools import islice

import pytest

from services.core.stream import StreamCursor, StreamState, reconnect_delays


def test_live_only_cursor_starts_at_the_head_of_the_first_welcome():
    cursor = StreamCursor()
    assert cursor.since is None  # no resume point: the server sends live events only
    assert cursor.welcome(head=7, reset=False) is False
    assert cursor.since == 7  # a reconnect now resumes after the head it started at
    assert not cursor.accept(7)
    assert cursor.accept(8)


def test_events_are_taken_once_in_order_across_a_replay():
    cursor = StreamCursor(since=3)
    taken = [seq for seq in (4, 5, 6) if cursor.accept(seq)]
    # the connection drops after 6; the replay after `since` overlaps what was seen
    assert cursor.since == 6
    assert cursor.welcome(head=9, reset=False) is False
    taken += [seq for seq in (5, 6, 7, 8, 9) if cursor.accept(seq)]
    assert taken == [4, 5, 6, 7, 8, 9]


def test_a_later_welcome_does_not_move_a_known_cursor():
    cursor = StreamCursor(since=5)
    cursor.welcome(head=20, reset=False)
    assert cursor.since == 5  # the server replays 6..20 to it


def test_reset_forgets_the_cursor():
    cursor = StreamCursor(since=50)
    assert cursor.welcome(head=3, reset=True) is True
    assert cursor.since == 0
    # the recreated log's events are all new, though their seqs were seen before
    assert [seq for seq in (1, 2, 3) if cursor.accept(seq)] == [1, 2, 3]


def test_a_head_behind_the_cursor_is_a_reset_even_unannounced():
    cursor = StreamCursor(since=50)
    assert cursor.welcome(head=10, reset=False) is True
    assert cursor.accept(1)


def test_since_must_not_be_negative():
    with pytest.raises(ValueError):
        StreamCursor(since=-1)


def test_delays_double_up_to_the_cap_without_jitter():
    delays = list(islice(reconnect_delays(first=0.1, cap=1.0, jitter=0), 7))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_jitter_shortens_each_delay_by_at_most_its_fraction():
    low = list(islice(reconnect_delays(first=1, cap=4, jitter=0.25, rand=lambda: 1.0), 4))
    high = list(islice(reconnect_delays(first=1, cap=4, jitter=0.25, rand=lambda: 0.0), 4))
    assert low == pytest.approx([0.75, 1.5, 3.0, 3.0])
    assert high == pytest.approx([1, 2, 4, 4])


def test_default_schedule_starts_small_and_stays_capped():
    delays = list(islice(reconnect_delays(), 50))
    assert 0 < delays[0] <= 0.1
    assert all(0 < d <= 5.0 for d in delays)
    assert max(delays) > 2.5  # it does grow


def test_a_new_schedule_starts_over():
    first = next(reconnect_delays(jitter=0))
    spent = reconnect_delays(jitter=0)
    list(islice(spent, 10))
    assert next(reconnect_delays(jitter=0)) == first


def test_bad_schedules_are_refused():
    for kwargs in ({"first": 0}, {"first": 2, "cap": 1}, {"factor": 0.5}, {"jitter": 1}):
        with pytest.raises(ValueError):
            next(reconnect_delays(**kwargs))


def test_stream_states_are_one_enum():
    assert [s.value for s in StreamState] == ["connecting", "connected", "reconnecting", "closed"]
