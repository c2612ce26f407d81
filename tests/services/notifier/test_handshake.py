"""The notifier's handshake checks: path, Host, Origin, token and resume point."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import InvalidStatus

from services.auth import DEFAULT_PRINCIPAL


async def refused(open_client, url: str, **kwargs) -> int:
    """The HTTP status of a handshake that must fail."""
    with pytest.raises(InvalidStatus) as info:
        await open_client(url, **kwargs)
    return info.value.response.status_code


async def test_no_token_is_401(notifier, open_client):
    assert await refused(open_client, notifier.url, token=None) == 401


async def test_bad_token_is_401(notifier, open_client):
    assert await refused(open_client, notifier.url, token="not-a-token") == 401


async def test_other_auth_scheme_is_401(notifier, open_client, tokens):
    headers = {"Authorization": f"Basic {tokens[DEFAULT_PRINCIPAL]}"}
    assert await refused(open_client, notifier.url, token=None, headers=headers) == 401


@pytest.mark.parametrize("param", ["token", "access_token"])
async def test_token_in_query_is_refused(notifier, open_client, tokens, param):
    url = f"{notifier.url}?{param}={tokens[DEFAULT_PRINCIPAL]}"
    assert await refused(open_client, url, token=None) == 401
    # Even alongside a valid header: a token in a URL is never accepted.
    assert await refused(open_client, url) == 401


async def test_foreign_host_is_403(notifier, open_client):
    url = f"ws://evil.example:{notifier.port}/ws"
    assert await refused(open_client, url, host="127.0.0.1", port=notifier.port) == 403


async def test_loopback_host_with_wrong_port_is_403(notifier, open_client):
    url = f"ws://localhost:{notifier.port + 1}/ws"
    assert await refused(open_client, url, host="127.0.0.1", port=notifier.port) == 403


async def test_localhost_host_is_accepted(notifier, open_client, start_session):
    ws = await open_client(f"ws://localhost:{notifier.port}/ws", host="127.0.0.1")
    assert (await start_session(ws))["principal"] == DEFAULT_PRINCIPAL


# Origins are templates: {web} is the web service's port, {other} another one.
@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "http://127.0.0.1:{other}", "https://127.0.0.1:{web}",
     "http://evil.example:{web}", "null"],
)  # fmt: skip
async def test_foreign_origin_is_403(notifier, open_client, web_port, origin):
    origin = origin.format(web=web_port, other=web_port + 1)
    assert await refused(open_client, notifier.url, headers={"Origin": origin}) == 403


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{web}", "http://localhost:{web}"])
async def test_own_page_origin_is_accepted(notifier, open_client, start_session, web_port, origin):
    ws = await open_client(notifier.url, headers={"Origin": origin.format(web=web_port)})
    await start_session(ws)


async def test_no_origin_is_accepted(notifier, open_client, start_session):
    ws = await open_client(notifier.url)
    welcome = await start_session(ws)
    assert welcome == {"v": 1, "type": "welcome", "principal": DEFAULT_PRINCIPAL, "head": 0,
                       "reset": False}  # fmt: skip


async def test_any_origin_is_403_without_a_web_port(start_notifier, open_client, web_port):
    notifier = await start_notifier(web_port=None)
    origin = f"http://127.0.0.1:{web_port}"
    assert await refused(open_client, notifier.url, headers={"Origin": origin}) == 403


@pytest.mark.parametrize("path", ["/", "/other", "/ws/", "/wss"])
async def test_wrong_path_is_404(notifier, open_client, path):
    assert await refused(open_client, f"ws://127.0.0.1:{notifier.port}{path}") == 404


@pytest.mark.parametrize(
    ("query", "header"),
    [("since=abc", None), ("since=-1", None), ("since=", None), ("since=1&since=2", None),
     ("", "abc"), ("", "-5"), ("", "1.5"), ("since=3", "4")],
)  # fmt: skip
async def test_bad_since_is_400(notifier, open_client, query, header):
    headers = {"Herald-Since": header} if header is not None else None
    url = f"{notifier.url}?{query}" if query else notifier.url
    assert await refused(open_client, url, headers=headers) == 400


async def test_refusals_say_why(notifier):
    """A refused handshake is a plain HTTP answer with a reason (and a challenge for 401)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", notifier.port)
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{notifier.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    async with asyncio.timeout(5):
        answer = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()
    assert answer.startswith("HTTP/1.1 401")
    assert "WWW-Authenticate: Bearer" in answer
    assert "Authorization: Bearer <token>" in answer
