"""Client messages that break the protocol close that connection, with a code and a reason,
and nothing else."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from websockets.exceptions import ConnectionClosed

from services.core.envelope import encode_ping


async def closed_with(ws) -> tuple[int | None, str | None]:
    async with asyncio.timeout(5):
        await ws.wait_closed()
    return ws.close_code, ws.close_reason


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"\x00\x01binary", 1003),
        ("not json", 1007),
        ("[1, 2]", 1007),
        ('"ping"', 1007),
        ('{"v": 2, "type": "ping"}', 1007),
        ('{"type": 7}', 1007),
        ('{"type": "resume"}', 1007),
        ('{"type": "resume", "since": -1}', 1007),
        ('{"type": "resume", "since": true}', 1007),
        ('{"type": "publish"}', 4400),
        ('{"type": "subscribe"}', 1007),  # no task list
        ('{"type": "subscribe", "tasks": [1]}', 1007),
        ('{"v": 1, "type": "welcome"}', 4400),
    ],
)
async def test_protocol_errors_close_with_a_code_and_reason(
    notifier, open_client, recv, start_session, message, code
):
    ws = await open_client(notifier.url)
    await start_session(ws)
    await ws.send(message)
    got_code, reason = await closed_with(ws)
    assert got_code == code
    assert reason
    # The server carries on.
    other = await open_client(notifier.url)
    await start_session(other)
    await other.send(encode_ping())
    assert (await recv(other))["type"] == "pong"


async def test_a_message_too_large_is_refused(notifier, open_client, start_session):
    ws = await open_client(notifier.url)
    await start_session(ws)
    await ws.send(json.dumps({"type": "ping", "pad": "x" * 100_000}))
    code, _ = await closed_with(ws)
    assert code == 1009


async def test_random_garbage_never_crashes_a_handler(notifier, open_client, recv, start_session):
    """No message makes the handler fail (that would show as close code 1011)."""
    rng = random.Random(1234)
    pieces = ['{"type":', '"ping"', '"resume"', '"since":', "1", "-1", "null", "}", "{", "[",
              "]", ",", '"v":', "2", "\udcff", "\x00", " ", '"x"']  # fmt: skip
    for _ in range(25):
        ws = await open_client(notifier.url)
        await start_session(ws)
        for _ in range(20):
            try:
                if rng.random() < 0.1:
                    await ws.send(rng.randbytes(rng.randrange(1, 20)))
                else:
                    text = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 8)))
                    await ws.send(text.encode("utf-8", "surrogatepass"), text=True)
                # Every message is answered, or closes the connection.
                async with asyncio.timeout(5):
                    msg = json.loads(await ws.recv())
            except ConnectionClosed:
                break
            assert msg["type"] in ("pong", "welcome", "event", "caught_up")
        code, _ = await closed_with_or_close(ws)
        assert code != 1011
    other = await open_client(notifier.url)
    await start_session(other)


async def closed_with_or_close(ws) -> tuple[int | None, str | None]:
    """The close code the server chose, or ours if the connection was still fine."""
    if ws.close_code is None:
        await ws.close()
    return await closed_with(ws)
