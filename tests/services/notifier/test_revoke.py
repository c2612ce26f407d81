"""A revoked (or renewed) token's WebSockets are closed when the notifier is told."""

from __future__ import annotations

import asyncio

from websockets.exceptions import ConnectionClosed

from services.auth import create_principal, revoke_principal
from services.notifier.server import CLOSE_REVOKED
from services.wake import REVOKED_WAKE


async def closed_with(ws) -> int | None:
    async with asyncio.timeout(5):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            return ws.close_code


async def test_revoke_closes_that_principals_connections_only(
    notifier, open_client, tokens, layout, writer, start_session
):
    bob = await open_client(notifier.url, token=tokens["bob"])
    mine = await open_client(notifier.url)
    await start_session(bob)
    await start_session(mine)
    revoke_principal(layout, "bob")
    writer.sender.wake(REVOKED_WAKE)
    assert await closed_with(bob) == CLOSE_REVOKED
    assert "revoked" in (bob.close_reason or "")
    await mine.send('{"v": 1, "type": "ping"}')
    async with asyncio.timeout(5):
        assert "pong" in await mine.recv()


async def test_a_renewed_token_closes_the_old_ones_connections(
    notifier, open_client, tokens, layout, writer, start_session
):
    old = await open_client(notifier.url, token=tokens["bob"])
    await start_session(old)
    new_token = create_principal(layout, "bob")
    writer.sender.wake(REVOKED_WAKE)
    assert await closed_with(old) == CLOSE_REVOKED
    new = await open_client(notifier.url, token=new_token)
    await start_session(new)


async def test_the_client_stops_at_a_revocation_without_trying_again(
    notifier, tokens, layout, writer
):
    # 4401 says the token is no longer valid: another handshake with it would be refused,
    # so the stream ends at once with 401, and never reports a reconnection.
    from embedded.client import ApiError, AsyncEventStream
    from services.core.stream import StreamState

    states: list[StreamState] = []
    stream = AsyncEventStream(notifier.url, tokens["bob"],
                              on_state=lambda s, r: states.append(s))  # fmt: skip
    await stream.open()
    assert (await stream.recv()).type == "caught_up"
    revoke_principal(layout, "bob")
    writer.sender.wake(REVOKED_WAKE)
    async with asyncio.timeout(5):
        try:
            await stream.recv()
            raise AssertionError("the stream went on after its token was revoked")
        except ApiError as exc:
            assert exc.status == 401 and "revoked" in str(exc)
    assert StreamState.RECONNECTING not in states
    assert states[-1] is StreamState.CLOSED and stream.closed
