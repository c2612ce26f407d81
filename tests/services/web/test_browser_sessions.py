"""Ticket and session lifetimes on a real web app (port 0, real SQLite files): a late
ticket is refused, a session ends when idle or old, is kept alive by use, and ended
sessions are forgotten."""

from __future__ import annotations

import time
from typing import Any

from services.auth import SessionStore, hash_token, session_cookie_name
from services.config import load_config
from services.web.app import BROWSER
from services.web.browser import TICKET_SECONDS


async def mint(api: Any) -> str:
    resp = await api.call("POST", "/api/login-tickets")
    assert resp.status == 201, resp.body
    return str(resp.body["ticket"])


async def login_status(api: Any, ticket: str) -> int:
    async with api.session.get(f"{api.base}/login?ticket={ticket}", allow_redirects=False) as r:
        return r.status


async def test_a_ticket_expires_after_its_minute(api: Any) -> None:
    browser = api.app[BROWSER]
    ticket, late = await mint(api), await mint(api)
    minted = time.monotonic()
    browser.clock = lambda: minted + TICKET_SECONDS - 1
    assert await login_status(api, ticket) == 303  # in time
    browser.clock = lambda: minted + TICKET_SECONDS + 0.01
    assert await login_status(api, late) == 403  # too late, and gone for good
    browser.clock = time.monotonic
    assert await login_status(api, late) == 403


def cookie_headers(api: Any, cookie: str) -> dict[str, str]:
    return {"Cookie": f"{session_cookie_name(api.port)}={cookie}"}


async def test_a_session_ends_when_idle_or_old_and_use_keeps_it(api: Any) -> None:
    store = SessionStore.for_layout(api.layout)
    own = hash_token(api.token)
    now = time.time()
    idle, _ = store.create("local", own, idle=60, max_age=86400, now=now - 120)
    old, _ = store.create("local", own, idle=86400, max_age=100, now=now - 120)
    used, session = store.create("local", own, idle=3600, max_age=86400, now=now - 600)
    for cookie, status in ((idle, 401), (old, 401), (used, 200)):
        resp = await api.call("GET", "/api/me", token=None, headers=cookie_headers(api, cookie))
        assert resp.status == status
    # Using it moved its idle clock on (written, so the notifier sees it too).
    after = store.get(session.sha256)
    assert after is not None and after.idle_until >= now + 3600 - 1
    # The ended ones are deleted at the next sign-in link.
    await mint(api)
    assert store.get(hash_token(idle)) is None and store.get(hash_token(old)) is None
    assert store.get(session.sha256) is not None
    store.close()


async def test_a_session_of_a_principal_whose_token_changed_is_forgotten(api: Any) -> None:
    store = SessionStore.for_layout(api.layout)
    cookie, session = store.create("bob", hash_token("an old token of bob's" * 2), idle=60,
                                   max_age=600)  # fmt: skip
    resp = await api.call("GET", "/api/me", token=None, headers=cookie_headers(api, cookie))
    assert resp.status == 401
    await mint(api)
    assert store.get(session.sha256) is None
    store.close()


def test_session_lifetimes_come_from_the_config(tmp_path: Any) -> None:
    from services.layout import DataLayout

    layout = DataLayout(tmp_path)
    assert (load_config(layout).session_idle, load_config(layout).session_max_age) == (
        12 * 3600,
        7 * 86400,
    )
    layout.config_file.write_text("[browser]\nsession_idle_hours = 1\nsession_max_days = 2\n")
    assert (load_config(layout).session_idle, load_config(layout).session_max_age) == (
        3600,
        2 * 86400,
    )


async def test_a_session_store_that_refuses_writes_still_answers_reads(api: Any) -> None:
    store = SessionStore.for_layout(api.layout)
    cookie, session = store.create(
        "local", hash_token(api.token), idle=3600, max_age=86400, now=time.time() - 600
    )
    browser = api.app[BROWSER]
    browser.sessions._open().execute("PRAGMA query_only = ON")  # its writes now fail
    try:
        resp = await api.call("GET", "/api/me", token=None, headers=cookie_headers(api, cookie))
        assert resp.status == 200  # the idle clock could not move; the answer still came
        after = store.get(session.sha256)
        assert after is not None and after.idle_until == session.idle_until
    finally:
        browser.sessions._open().execute("PRAGMA query_only = OFF")
        store.close()
