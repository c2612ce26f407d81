"""Browser sign-in on a real `herald serve`: one-time tickets, the session cookie, CSRF, the
notifier's cookie handshake, sign-out and revocation; spoken to with real HTTP and WebSocket
clients (aiohttp, websockets), as a browser would, cookies and Origin headers by hand."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.harness import Instance, wait_for


@dataclass
class Browser:
    """What a signed-in browser holds: the page's origin, its cookie, its CSRF token."""

    base: str  # http://127.0.0.1:PORT
    cookie_name: str
    cookie: str
    set_cookie: str  # the Set-Cookie header as sent
    csrf: str
    session: dict[str, Any]

    @property
    def cookie_header(self) -> dict[str, str]:
        return {"Cookie": f"{self.cookie_name}={self.cookie}"}

    def page_headers(self, **extra: str) -> dict[str, str]:
        """What the page's own fetch() of a state-changing request sends."""
        return {**self.cookie_header, "Origin": self.base, "X-Herald-CSRF": self.csrf, **extra}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No cookie jar of its own: every cookie a test sends is written by hand.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ticket_url(http: aiohttp.ClientSession, base: str, token: str) -> str:
    async with http.post(base + "/api/login-tickets", headers=bearer(token)) as resp:
        assert resp.status == 201, await resp.text()
        body = await resp.json()
    assert body["url"].startswith(base + "/login?ticket=")
    return str(body["url"])


async def sign_in(http: aiohttp.ClientSession, base: str, token: str) -> Browser:
    url = await ticket_url(http, base, token)
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == "/"
        set_cookie = resp.headers["Set-Cookie"]
    name, _, rest = set_cookie.partition("=")
    value = rest.split(";", 1)[0]
    async with http.get(base + "/api/session", headers={"Cookie": f"{name}={value}"}) as resp:
        assert resp.status == 200, await resp.text()
        session = await resp.json()
    return Browser(base, name, value, set_cookie, session["csrf"], session)


def base_of(herald: Instance) -> tuple[str, str]:
    client = herald.client
    return client.api, client.token


def submit_body() -> bytes:
    return json.dumps({"task": "demo.answer", "args": {"seconds": 0}}).encode()


async def task_count(http: aiohttp.ClientSession, base: str, token: str) -> int:
    async with http.get(base + "/api/tasks?limit=200", headers=bearer(token)) as resp:
        return len((await resp.json())["tasks"])


async def test_a_ticket_signs_in_once_with_a_strict_httponly_cookie(
        herald: Instance, http: aiohttp.ClientSession) -> None:  # fmt: skip
    base, token = base_of(herald)
    url = await ticket_url(http, base, token)
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == "/"
        assert resp.headers["Cache-Control"] == "no-store"
        set_cookie = resp.headers["Set-Cookie"]
    flags = {part.strip().split("=")[0].lower(): part.strip()
             for part in set_cookie.split(";")[1:]}  # fmt: skip
    assert "httponly" in flags and "secure" not in flags  # loopback http
    assert flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/"
    port = base.rsplit(":", 1)[1]
    assert set_cookie.startswith(f"herald_session_{port}=")
    # Nothing secret in the page's address but the spent ticket.
    assert token not in url and token not in set_cookie
    # Used twice: refused, as JSON for a client and as a page for a browser.
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "invalid_ticket"
        assert "Set-Cookie" not in resp.headers
    async with http.get(url, allow_redirects=False, headers={"Accept": "text/html"}) as resp:
        assert resp.status == 403
        assert "expired or was already used" in await resp.text()
    # A ticket nobody minted, or none at all.
    for bad in ("/login?ticket=" + "A" * 43, "/login"):
        async with http.get(base + bad, allow_redirects=False) as resp:
            assert resp.status == 403, bad


async def test_a_ticket_of_a_token_renewed_since_is_refused(
        herald: Instance, http: aiohttp.ClientSession) -> None:  # fmt: skip
    base, _ = base_of(herald)
    bob = herald.cli("token", "create", "bob").stdout.strip()
    url = await ticket_url(http, base, bob)
    assert herald.cli("token", "create", "bob").returncode == 0  # a new token for bob
    async with http.get(url, allow_redirects=False) as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["code"] == "invalid_ticket"


async def test_session_answers_who_and_where(herald: Instance,
                                             http: aiohttp.ClientSession) -> None:  # fmt: skip
    base, token = base_of(herald)
    browser = await sign_in(http, base, token)
    s = browser.session
    assert s["principal"] == "local"
    assert isinstance(s["csrf"], str) and len(s["csrf"]) >= 32
    notifier_port = herald.status()["notifier"]["port"]
    assert s["ws"] == f"ws://127.0.0.1:{notifier_port}/ws"
    ends = time.mktime(time.strptime(s["expires"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert 11 * 3600 < ends - time.time() <= 12 * 3600 + 60  # 12 h idle by default
    # The cookie stands for the token on GET routes.
    async with http.get(base + "/api/me", headers=browser.cookie_header) as resp:
        assert resp.status == 200 and (await resp.json())["principal"] == "local"
    # A cookie that is not a session's is no one.
    async with http.get(
        base + "/api/me", headers={"Cookie": f"{browser.cookie_name}={'x' * 43}"}
    ) as resp:
        assert resp.status == 401
    # A session cannot make sign-in links of itself.
    async with http.post(base + "/api/login-tickets", headers=browser.page_headers()) as resp:
        assert resp.status == 403


async def test_a_cookie_post_needs_the_pages_origin_and_the_csrf_header(
        herald: Instance, http: aiohttp.ClientSession) -> None:  # fmt: skip
    base, token = base_of(herald)
    browser = await sign_in(http, base, token)
    port = base.rsplit(":", 1)[1]
    refused = [
        browser.cookie_header,  # no Origin, no header
        {**browser.cookie_header, "Origin": base},  # no CSRF header
        {**browser.cookie_header, "X-Herald-CSRF": browser.csrf},  # no Origin
        {**browser.cookie_header, "Origin": base, "X-Herald-CSRF": "0" * 64},  # a wrong one
        browser.page_headers(Origin="http://127.0.0.1:1"),  # another local page
        browser.page_headers(Origin="http://evil.example"),
        browser.page_headers(Origin="null"),  # a sandboxed frame, a file: page
    ]
    for headers in refused:
        async with http.post(
            base + "/api/tasks",
            data=submit_body(),
            headers={**headers, "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 403, headers
            assert (await resp.json())["error"]["code"] in ("csrf_failed", "forbidden_origin")
    # A cross-site form POST: urlencoded, no custom header, a foreign or null Origin.
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{int(port) + 1}"):
        async with http.post(
            base + "/api/tasks",
            data={"task": "demo.answer"},
            headers={**browser.cookie_header, "Origin": origin},
        ) as resp:
            assert resp.status == 403
    assert await task_count(http, base, token) == 0
    # Logout is state-changing too.
    async with http.post(base + "/api/logout", headers=browser.cookie_header) as resp:
        assert resp.status == 403
    # The page itself, as 127.0.0.1 and as localhost: accepted.
    for origin in (base, base.replace("127.0.0.1", "localhost")):
        async with http.post(base + "/api/tasks", data=submit_body(), headers=browser.page_headers(
                Origin=origin, **{"Content-Type": "application/json"})) as resp:  # fmt: skip
            assert resp.status == 202, await resp.text()
    assert await task_count(http, base, token) == 2
    # Bearer requests are unchanged: no Origin, no CSRF header needed.
    async with http.post(base + "/api/tasks", data=submit_body(), headers={
            **bearer(token), "Content-Type": "application/json"}) as resp:  # fmt: skip
        assert resp.status == 202
    # ... and a bearer request with a foreign Origin is still refused.
    async with http.post(base + "/api/tasks", data=submit_body(), headers={
            **bearer(token), "Content-Type": "application/json",
            "Origin": "http://evil.example"}) as resp:  # fmt: skip
        assert resp.status == 403
    assert await task_count(http, base, token) == 3


async def recv_until(ws: Any, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
    got = []
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            got.append(msg)
            if predicate(msg):
                return got


async def test_the_notifier_takes_the_cookie_from_the_pages_origin_only(
        herald: Instance, http: aiohttp.ClientSession) -> None:  # fmt: skip
    base, token = base_of(herald)
    browser = await sign_in(http, base, token)
    ws_url = browser.session["ws"]
    port = base.rsplit(":", 1)[1]
    for origin in (None, "http://evil.example", "null", f"http://127.0.0.1:{int(port) + 1}",
                   f"http://[::1]:{port}"):  # fmt: skip
        headers = dict(browser.cookie_header)
        if origin is not None:
            headers["Origin"] = origin
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 403, origin
    # From the page: welcome, and the principal's events live.
    async with connect(ws_url, additional_headers={**browser.cookie_header,
                                                   "Origin": base}) as ws:  # fmt: skip
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome" and welcome["principal"] == "local"
        task = herald.client.submit("demo.answer", {"seconds": 0})
        got = await recv_until(ws, lambda m: m.get("event") == "succeeded")
        assert {m["task"] for m in got if m["type"] == "event"} == {task["id"]}
    # Bearer handshakes are unchanged (no Origin).
    async with connect(ws_url, additional_headers=bearer(token)) as ws:
        assert json.loads(await ws.recv())["type"] == "welcome"


async def test_a_second_principals_session_sees_none_of_the_firsts_tasks(
        herald: Instance, http: aiohttp.ClientSession) -> None:  # fmt: skip
    base, token = base_of(herald)
    bob_token = herald.cli("token", "create", "bob").stdout.strip()
    bob = await sign_in(http, base, bob_token)
    assert bob.session["principal"] == "bob"
    async with connect(bob.session["ws"], additional_headers={**bob.cookie_header,
                                                              "Origin": base}) as ws:  # fmt: skip
        assert json.loads(await ws.recv())["principal"] == "bob"
        mine = herald.client.submit("demo.answer", {"seconds": 0})  # the owner's
        wait_for(lambda: herald.client.get(mine["id"])["state"] == "succeeded")
        async with http.get(base + "/api/tasks", headers=bob.cookie_header) as resp:
            assert (await resp.json())["tasks"] == []
        async with http.get(base + f"/api/tasks/{mine['id']}", headers=bob.cookie_header) as resp:
            assert resp.status == 404
        async with http.post(base + "/api/tasks", data=submit_body(), headers=bob.page_headers(
                **{"Content-Type": "application/json"})) as resp:  # fmt: skip
            theirs = (await resp.json())["id"]
        got = await recv_until(ws, lambda m: m.get("event") == "succeeded")
        assert {m["task"] for m in got if m["type"] == "event"} == {theirs}
    async with http.get(base + "/api/tasks", headers=bob.cookie_header) as resp:
        assert [t["id"] for t in (await resp.json())["tasks"]] == [theirs]


async def close_code(ws: Any) -> int | None:
    """Read on until the server closes `ws` (10 s at most); its close code."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    code: int | None = ws.close_code
    return code


async def test_logout_ends_the_session_and_its_live_connection(
        herald: Instance, http: aiohttp.ClientSession) -> None:  # fmt: skip
    base, token = base_of(herald)
    browser = await sign_in(http, base, token)
    other = await sign_in(http, base, token)  # another browser of the same principal
    async with connect(browser.session["ws"], additional_headers={
            **browser.cookie_header, "Origin": base}) as ws:  # fmt: skip
        assert json.loads(await ws.recv())["type"] == "welcome"
        async with http.post(base + "/api/logout", headers=browser.page_headers()) as resp:
            assert resp.status == 204
            assert "Max-Age=0" in resp.headers["Set-Cookie"]
        assert await close_code(ws) == 4401
    async with http.get(base + "/api/me", headers=browser.cookie_header) as resp:
        assert resp.status == 401
    async with http.get(base + "/api/me", headers=other.cookie_header) as resp:
        assert resp.status == 200  # only that session ended
    async with http.post(base + "/api/logout", headers=bearer(token)) as resp:
        assert resp.status == 403  # a token has no session to end


@pytest.mark.parametrize("how", ["revoke", "renew"])
async def test_revoking_a_principal_ends_its_sessions_and_live_connections(
        herald: Instance, http: aiohttp.ClientSession, how: str) -> None:  # fmt: skip
    base, token = base_of(herald)
    bob_token = herald.cli("token", "create", "bob").stdout.strip()
    bob = await sign_in(http, base, bob_token)
    owner = await sign_in(http, base, token)
    async with connect(bob.session["ws"], additional_headers={
            **bob.cookie_header, "Origin": base}) as ws:  # fmt: skip
        assert json.loads(await ws.recv())["type"] == "welcome"
        args = ("token", "revoke", "bob") if how == "revoke" else ("token", "create", "bob")
        assert herald.cli(*args).returncode == 0
        assert await close_code(ws) == 4401
    async with http.get(base + "/api/me", headers=bob.cookie_header) as resp:
        assert resp.status == 401
    with pytest.raises(InvalidStatus):
        async with connect(bob.session["ws"], additional_headers={
                **bob.cookie_header, "Origin": base}):  # fmt: skip
            pass
    async with http.get(base + "/api/me", headers=owner.cookie_header) as resp:
        assert resp.status == 200  # the owner's session is not bob's


def test_herald_open_print_prints_a_link_that_works_once(herald: Instance) -> None:
    result = herald.cli("open", "--print")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(herald.client.api + "/login?ticket=")
    assert herald.client.token not in url

    async def use() -> list[int]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            statuses = []
            for _ in range(2):
                async with http.get(url, allow_redirects=False) as resp:
                    statuses.append(resp.status)
            return statuses

    assert asyncio.run(use()) == [303, 403]
