"""The notifier's keepalive and its fallback look at the log, which are all it does while idle:
a client heard from is never pinged, a silent one is pinged and closed if it does not answer,
and the fallback backs off while nothing happens (a wake-up brings it back)."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import Opcode

from services.auth import DEFAULT_PRINCIPAL as LOCAL
from services.notifier.server import FALLBACK_BACKOFF

WAIT = 10.0  # seconds any condition below may take on a loaded machine


class CountingClient(ClientConnection):
    """A client connection that counts the pings the server sends it."""

    pings = 0

    def process_event(self, event: Any) -> None:
        if getattr(event, "opcode", None) is Opcode.PING:  # (the first event: the handshake)
            self.pings += 1
        super().process_event(event)


async def until(condition: Any, what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_client_that_pings_is_not_pinged_and_a_silent_one_is(start_notifier,
                                                                     open_client,
                                                                     start_session):  # fmt: skip
    notifier = await start_notifier(ping_interval=1.0, ping_timeout=5)
    # One pings ten times as often as the server would; the other never does.
    pinging = await open_client(notifier.url, create_connection=CountingClient,
                                ping_interval=0.1)  # fmt: skip
    silent = await open_client(notifier.url, create_connection=CountingClient,
                               ping_interval=None)  # fmt: skip
    for ws in (pinging, silent):
        await start_session(ws)
    assert isinstance(pinging, CountingClient) and isinstance(silent, CountingClient)
    await until(lambda: silent.pings >= 2, "two keepalive pings to the silent client")
    assert pinging.pings == 0
    assert notifier.connections == 2  # the silent one answered each ping: kept


async def test_a_client_that_does_not_answer_its_ping_is_closed(start_notifier, open_client,
                                                                start_session):  # fmt: skip
    notifier = await start_notifier(ping_interval=0.2, ping_timeout=0.2)
    stuck = await open_client(notifier.url, ping_interval=None)
    alive = await open_client(notifier.url, ping_interval=None)
    for ws in (stuck, alive):
        await start_session(ws)
    stuck.transport.pause_reading()  # frozen: it reads nothing, so it answers nothing
    await until(lambda: notifier.connections == 1, "the frozen client closed")
    stuck.transport.resume_reading()
    await stuck.wait_closed()
    assert stuck.close_code == 1011  # "keepalive ping timeout", as websockets' own says
    assert stuck.close_reason == "keepalive ping timeout"
    pings = notifier.stats["pings"]
    await until(lambda: notifier.stats["pings"] >= pings + 2, "the live client pinged on")
    assert notifier.connections == 1 and alive.close_code is None


async def test_the_fallback_backs_off_while_idle_and_still_finds_a_lost_wakeup(
        start_notifier, open_client, writer, recv_events, start_session):  # fmt: skip
    base = 0.02
    notifier = await start_notifier(fallback_interval=base)
    ws = await open_client(notifier.url)
    await start_session(ws)
    cap = base * FALLBACK_BACKOFF
    await until(lambda: notifier.fallback_delay == cap, "the fallback backed off")
    # Backed off, it still finds what a lost wake-up left unsaid.
    events = writer.lifecycle(LOCAL)  # and no wake-up
    got = await recv_events(ws, len(events))
    assert [e["seq"] for e in got] == [e.seq for e in events]
    await until(lambda: notifier.fallback_delay == cap, "the fallback backed off again")
    # A wake-up starts the backoff over from the base interval: looks come quickly again,
    # one per doubling, before it is back at its longest.
    looks = notifier.stats["fallback_looks"]
    more = writer.lifecycle(LOCAL)
    writer.wake()
    got = await recv_events(ws, len(more))
    assert [e["seq"] for e in got] == [e.seq for e in more]
    await until(lambda: notifier.fallback_delay == cap, "the fallback backed off after it")
    assert notifier.stats["fallback_looks"] - looks >= FALLBACK_BACKOFF.bit_length() - 1
