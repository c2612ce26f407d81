"""Fixtures for the browser tests: one real `herald serve` per module and Debian's Chromium
driven by Playwright (`/usr/bin/chromium`: no browser is ever downloaded; `make test`
installs the `chromium` package when it is missing)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.e2e.harness import Instance, start_serve

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    runtime = tmp_path_factory.mktemp("runtime")
    inst = start_serve(tmp_path_factory.mktemp("data"), runtime, "--concurrency", "2")
    yield inst
    inst.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Per module, not per session: its driver (a node process) is a child of this one, and
    # the suites after this one count this process's children (tests/desktop/test_quit.py).
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (make test does)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=str(CHROMIUM))
    yield b
    b.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def base_url(herald: Instance) -> str:
    """http://127.0.0.1:PORT, the page's origin."""
    return herald.client.api.removesuffix("/api")


def api(herald: Instance, method: str, path: str, body: Any = None,
        token: str | None = None) -> tuple[int, Any]:  # fmt: skip
    """A bearer-token request to the API (not the browser's)."""
    client = herald.client
    req = urllib.request.Request(
        client.api.removesuffix("/api") + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token or client.token}",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


def sign_in(herald: Instance, context: BrowserContext, token: str | None = None) -> Page:
    """A page of `context` signed in through a one-time link: `herald open --print`'s for
    the local principal, or one made with `token` (another principal's)."""
    if token is None:
        done = herald.cli("open", "--print")
        assert done.returncode == 0, done.stderr
        link = done.stdout.strip()
    else:
        status, body = api(herald, "POST", "/api/login-tickets", token=token)
        assert status == 201, body
        link = body["url"]
    page = context.new_page()
    page.goto(link)
    page.wait_for_selector("#live[data-state=connected]")
    return page


def run_from_form(page: Page, task: str, **values: str) -> str:
    """Fill the form of `task` with `values` (by parameter), press Enter: the new task's id."""
    page.select_option("#task-select", task)
    for name, value in values.items():
        page.fill(f"#arg-{name}", value)
    last = next(iter(values)) if values else None
    with page.expect_response(lambda r: r.url.endswith("/api/tasks")
                              and r.request.method == "POST") as answer:  # fmt: skip
        if last is not None:
            page.press(f"#arg-{last}", "Enter")
        else:
            page.click("#submit")
    assert answer.value.status == 202, answer.value.text()
    task_id: str = answer.value.json()["id"]
    page.wait_for_selector(f"#detail[data-id='{task_id}']")
    return task_id
