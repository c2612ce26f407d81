"""The wire envelope: round trips and protocol errors."""

import pytest

from services.core import envelope as env
from services.core.events import Event, EventType


def test_event_round_trip():
    e = Event(7, "task1", "a", EventType.PROGRESS, 12.5, 2, {"fraction": 0.5, "message": "é"})
    msg = env.decode_server_message(env.encode_event(e))
    assert msg.type == "event"
    assert msg.event is not None
    assert (msg.event.seq, msg.event.task_id, msg.event.type, msg.event.attempt) == (
        7, "task1", EventType.PROGRESS, 2)  # fmt: skip
    assert msg.event.data == {"fraction": 0.5, "message": "é"}


def test_control_messages_round_trip():
    assert env.decode_server_message(env.encode_welcome("a", 3, False)).body["head"] == 3
    assert env.decode_server_message(env.encode_caught_up(9)).body["seq"] == 9
    assert env.decode_client_message(env.encode_ping()).type == "ping"
    assert env.decode_client_message(env.encode_resume(5)).since == 5


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x01", env.CLOSE_UNSUPPORTED_DATA),
        ("not json", env.CLOSE_INVALID_PAYLOAD),
        ("[1, 2]", env.CLOSE_INVALID_PAYLOAD),
        ('{"v": 2, "type": "ping"}', env.CLOSE_INVALID_PAYLOAD),
        ('{"type": 5}', env.CLOSE_INVALID_PAYLOAD),
        ('{"type": "publish"}', env.CLOSE_UNKNOWN_TYPE),
        ('{"type": "subscribe", "tasks": "t1"}', env.CLOSE_INVALID_PAYLOAD),
        ('{"type": "resume", "since": -1}', env.CLOSE_INVALID_PAYLOAD),
        ('{"type": "resume", "since": true}', env.CLOSE_INVALID_PAYLOAD),
    ],
)
def test_bad_client_messages_name_a_close_code(data, code):
    with pytest.raises(env.ProtocolError) as info:
        env.decode_client_message(data)
    assert info.value.code == code
    assert info.value.reason


def test_since_accepts_decimal_text():
    assert env.parse_since("12") == 12
    with pytest.raises(env.ProtocolError):
        env.parse_since("12a")


def test_reset_round_trip():
    msg = env.decode_server_message(env.encode_reset(env.RESET_PRUNED, 42))
    assert msg.type == "reset" and msg.event is None
    assert msg.body == {"v": 1, "type": "reset", "reason": "pruned", "oldest": 42}
