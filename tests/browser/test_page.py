"""The browser page on a real `herald serve`, in Debian's Chromium: sign-in through
`herald open --print`, the generated form, live progress, readable results, cancel, a
notifier killed mid-stream, principals kept apart, another origin kept out."""

from __future__ import annotations

import http.server
import os
import signal
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.conftest import api, base_url, run_from_form, sign_in
from tests.e2e.harness import Instance, wait_for

pytestmark = pytest.mark.slow


def test_open_print_signs_in_once_and_the_ticket_leaves_the_address_bar(
        herald: Instance, context: BrowserContext, browser) -> None:  # fmt: skip
    done = herald.cli("open", "--print")
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    page = context.new_page()
    page.goto(link)
    expect(page.locator("#who")).to_have_text("Signed in as local")
    expect(page.locator("#live")).to_have_attribute("data-state", "connected")
    assert page.url == base_url(herald) + "/"  # the ticket is gone with the redirect
    # The same link again, in another browser: refused, and that browser is not signed in.
    other = browser.new_context()
    try:
        again = other.new_page()
        answer = again.goto(link)
        assert answer is not None and answer.status == 403
        expect(again.locator("body")).to_contain_text("expired or was already used")
        again.goto(base_url(herald) + "/")
        expect(again.locator("body")).to_contain_text("herald open")
        assert again.locator("#task-form").count() == 0
    finally:
        other.close()


def test_the_page_and_its_files_have_strict_headers(herald: Instance,
                                                    context: BrowserContext) -> None:  # fmt: skip
    page = sign_in(herald, context)
    notifier = herald.status()["notifier"]["port"]
    resp = context.request.get(base_url(herald) + "/")
    assert resp.status == 200 and resp.headers["content-type"] == "text/html; charset=utf-8"
    csp = resp.headers["content-security-policy"]
    for part in (
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        f"connect-src 'self' ws://127.0.0.1:{notifier} ws://localhost:{notifier}",
    ):
        assert part in csp, csp
    assert "unsafe-inline" not in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    js = "text/javascript; charset=utf-8"
    kinds = {"app.js": js, "form.js": js, "results.js": js, "herald-live.js": js,
             "style.css": "text/css; charset=utf-8"}  # fmt: skip
    for name, kind in kinds.items():
        got = context.request.get(f"{base_url(herald)}/static/{name}")
        assert got.status == 200 and got.headers["content-type"] == kind, name
        assert got.headers["cache-control"] == "no-cache"
        same = context.request.get(f"{base_url(herald)}/static/{name}",
                                   headers={"If-None-Match": got.headers["etag"]})  # fmt: skip
        assert same.status == 304
    for bad in ("nothing.js", "..%2Fpage.py", "%2E%2E%2F%2E%2E%2Fauth.py"):
        assert context.request.get(f"{base_url(herald)}/static/{bad}").status == 404
    # Not signed in: no file, and the page only says how to sign in.
    anon = context.browser.new_context()  # type: ignore[union-attr]
    try:
        assert anon.request.get(base_url(herald) + "/static/app.js").status == 401
        signed_out = anon.request.get(base_url(herald) + "/")
        assert signed_out.status == 200 and "herald open" in signed_out.text()
        assert "<script" not in signed_out.text()
    finally:
        anon.close()
    page.close()


def test_demo_answer_from_the_form_shows_progress_then_42(
        herald: Instance, context: BrowserContext) -> None:  # fmt: skip
    page = sign_in(herald, context)
    task_id = run_from_form(page, "demo.answer", seconds="1.5")
    # Progress between 0 and 1 while it runs, from the live channel.
    page.wait_for_function("""() => {
        const d = document.getElementById("detail");
        const bar = document.getElementById("detail-progress");
        return d.dataset.state === "running" && bar.hasAttribute("value")
            && bar.value > 0 && bar.value < 1;
    }""")
    row = page.locator(f"#tasks li[data-id='{task_id}']")
    expect(row).to_have_attribute("data-state", "running")
    expect(page.locator("#detail")).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#detail-result .summary")).to_have_text("42")
    expect(row.locator(".line")).to_have_text("42")
    # Run again: a new task with the same arguments, which answers too.
    with page.expect_response(lambda r: r.url.endswith("/api/tasks")
                              and r.request.method == "POST") as again:  # fmt: skip
        page.click("#detail-rerun")
    second = again.value.json()
    assert second["id"] != task_id and second["args"] == {"seconds": 1.5}
    expect(page.locator(f"#tasks li[data-id='{second['id']}']")).to_have_attribute(
        "data-state", "succeeded", timeout=20_000
    )


def test_a_csv_report_reads_as_a_table(herald: Instance, context: BrowserContext,
                                       tmp_path: Path) -> None:  # fmt: skip
    source = tmp_path / "sales.csv"
    source.write_text("city,units,price\nOslo,3,9.5\nLima,12,4.25\nPune,7,\n")
    page = sign_in(herald, context)
    run_from_form(page, "report.csv", source=str(source))
    expect(page.locator("#detail")).to_have_attribute("data-state", "succeeded")
    result = page.locator("#detail-result")
    expect(result.locator(".summary")).to_have_text("3 rows · 3 columns · sales.html")
    table = result.locator("table", has_text="Columns")
    expect(table.locator("thead th")).to_have_text(
        ["Column", "Type", "Missing", "Distinct", "Min", "Max", "Mean", "Most common"]
    )
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(1).locator("td").nth(0)).to_have_text("units")
    expect(rows.nth(1).locator("td").nth(1)).to_have_text("integer")
    expect(rows.nth(2).locator("td").nth(2)).to_have_text("1")  # price: one missing
    expect(result.locator("dd", has_text=str(tmp_path / "sales.html"))).to_have_count(1)
    assert (tmp_path / "sales.html").exists()


def test_output_streams_into_the_details(herald: Instance, context: BrowserContext,
                                         tmp_path: Path) -> None:  # fmt: skip
    page = sign_in(herald, context)
    page.select_option("#task-select", "process.run")
    page.fill("#arg-args", "-c\nfor i in 1 2 3; do echo line $i; sleep 0.3; done; echo last")
    page.fill("#arg-cwd", str(tmp_path))
    task_id = run_from_form(page, "process.run", program="sh")
    # The first line shows while the program still runs.
    page.wait_for_function("""() => document.getElementById("detail-output").textContent
        .startsWith("line 1") && document.getElementById("detail").dataset.state === "running"
    """)
    expect(page.locator("#detail")).to_have_attribute("data-state", "succeeded")
    expect(page.locator("#detail-output")).to_have_text("line 1\nline 2\nline 3\nlast")
    expect(page.locator("#detail-result .summary")).to_have_text("exit 0 · 4 lines")
    # Opened afresh (another page), the whole output is read from the timeline.
    again = sign_in(herald, context)
    again.click(f"#tasks li[data-id='{task_id}'] button")
    expect(again.locator("#detail-output")).to_have_text("line 1\nline 2\nline 3\nlast")


def test_cancel_a_running_task(herald: Instance, context: BrowserContext) -> None:
    page = sign_in(herald, context)
    task_id = run_from_form(page, "demo.answer", seconds="120")
    expect(page.locator("#detail")).to_have_attribute("data-state", "running")
    page.click("#detail-cancel")
    expect(page.locator("#detail")).to_have_attribute("data-state", "cancelled")
    expect(page.locator(f"#tasks li[data-id='{task_id}']")).to_have_attribute(
        "data-state", "cancelled"
    )
    assert api(herald, "GET", f"/api/tasks/{task_id}")[1]["state"] == "cancelled"


def test_a_bad_value_shows_the_apis_error_next_to_its_field_and_esc_closes_details(
        herald: Instance, context: BrowserContext) -> None:  # fmt: skip
    page = sign_in(herald, context)
    page.select_option("#task-select", "demo.answer")
    expect(page.locator("label[for=arg-seconds]")).to_have_text("Seconds")
    expect(page.locator("#arg-seconds")).to_have_value("5")  # the declared default
    assert page.get_attribute("#arg-seconds", "max") == "3600"
    page.fill("#arg-seconds", "-1")
    with page.expect_response(lambda r: r.url.endswith("/api/tasks")) as answer:
        page.press("#arg-seconds", "Enter")
    assert answer.value.status == 422
    message = answer.value.json()["error"]["fields"]["seconds"]
    expect(page.locator("#arg-seconds-error")).to_have_text(message)
    expect(page.locator("#arg-seconds")).to_have_attribute("aria-invalid", "true")
    # A path the server refuses (not absolute) on a task with a required path.
    page.select_option("#task-select", "files.checksum")
    page.fill("#arg-path", "relative/path")
    with page.expect_response(lambda r: r.url.endswith("/api/tasks")) as answer:
        page.press("#arg-path", "Enter")
    assert answer.value.status == 422
    expect(page.locator("#arg-path-error")).to_have_text(
        answer.value.json()["error"]["fields"]["path"]
    )
    # Keyboard: a task's row opens its details, Esc closes them and focus returns.
    page.select_option("#task-select", "demo.answer")
    task_id = run_from_form(page, "demo.answer", seconds="0")
    expect(page.locator("#detail")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#detail")).to_be_hidden()
    row = page.locator(f"#tasks li[data-id='{task_id}'] button")
    expect(row).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#detail")).to_be_visible()


def test_the_page_resumes_after_the_notifier_is_killed_with_every_event_once_in_order(
        herald: Instance, context: BrowserContext) -> None:  # fmt: skip
    page = sign_in(herald, context)
    task_id = run_from_form(page, "demo.answer", seconds="4")
    timeline = page.locator("#detail-timeline li")
    page.wait_for_function(
        "() => document.querySelectorAll('#detail-timeline li[data-event=progress]').length >= 3"
    )
    old = herald.service_pid("notifier")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: herald.service_pid("notifier") != old)
    # The page reconnected (a second welcome) and saw the task to its end.
    expect(page.locator("#live")).to_have_attribute("data-welcomes", "2", timeout=20_000)
    expect(page.locator("#detail")).to_have_attribute("data-state", "succeeded", timeout=20_000)
    shown = [(int(li.get_attribute("data-seq") or 0), li.get_attribute("data-event"))
             for li in timeline.all()]  # fmt: skip
    status, body = api(herald, "GET", f"/api/tasks/{task_id}/events")
    assert status == 200
    recorded = [(e["seq"], e["event"]) for e in body["events"]]
    assert shown == recorded
    assert len({seq for seq, _ in shown}) == len(shown)
    assert sum(1 for _, kind in shown if kind == "progress") > 10


def test_a_second_principal_sees_none_of_the_first_ones_tasks(
        herald: Instance, browser) -> None:  # fmt: skip
    local = browser.new_context()
    bob_ctx = browser.new_context()
    try:
        page = sign_in(herald, local)
        mine = run_from_form(page, "demo.answer", seconds="0.5")
        bob_token = herald.cli("token", "create", "bob").stdout.strip()
        bob = sign_in(herald, bob_ctx, bob_token)
        expect(bob.locator("#who")).to_have_text("Signed in as bob")
        expect(bob.locator("#no-tasks")).to_be_visible()
        # A task of local's while bob's page is live: it never shows there.
        other = run_from_form(page, "demo.answer", seconds="0.5")
        expect(page.locator(f"#tasks li[data-id='{other}']")).to_have_attribute(
            "data-state", "succeeded"
        )
        theirs = run_from_form(bob, "demo.answer", seconds="0")
        expect(bob.locator(f"#tasks li[data-id='{theirs}']")).to_have_attribute(
            "data-state", "succeeded"
        )
        assert [li.get_attribute("data-id") for li in bob.locator("#tasks li").all()] == [theirs]
        bob.goto(base_url(herald) + "/")  # a fresh load lists the same
        bob.wait_for_selector("#live[data-state=connected]")
        expect(bob.locator("#tasks li")).to_have_count(1)
        expect(page.locator(f"#tasks li[data-id='{theirs}']")).to_have_count(0)
        assert api(herald, "GET", f"/api/tasks/{mine}", token=bob_token)[0] == 404
    finally:
        local.close()
        bob_ctx.close()


EVIL_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>elsewhere</title></head>
<body>
<iframe name="sink" id="sink"></iframe>
<form id="f" method="POST" action="{base}/api/tasks" target="sink" enctype="text/plain">
<input name='{{"task":"demo.answer","args":{{"seconds":0}},"x":"' value='"}}'>
</form>
<form id="g" method="POST" action="{base}/api/tasks" target="sink">
<input name="task" value="demo.answer">
</form>
<script>
window.outcome = {{ws: "pending", post: "pending", read: "pending", forms: 0}};
const ws = new WebSocket("{ws}");
ws.onmessage = (e) => {{ window.outcome.ws = "message: " + e.data; }};
ws.onclose = (e) => {{
  if (window.outcome.ws === "pending") window.outcome.ws = "closed " + e.code;
}};
fetch("{base}/api/tasks", {{method: "POST", credentials: "include", mode: "no-cors",
  headers: {{"Content-Type": "text/plain"}},
  body: JSON.stringify({{task: "demo.answer", args: {{seconds: 0}}}})}})
  .then((r) => {{ window.outcome.post = "sent " + r.type; }},
        (e) => {{ window.outcome.post = "error " + e; }});
fetch("{base}/api/session", {{credentials: "include"}})
  .then((r) => r.text()).then((t) => {{ window.outcome.read = "read " + t; }},
                             (e) => {{ window.outcome.read = "error " + e; }});
document.getElementById("sink").addEventListener("load", () => {{ window.outcome.forms += 1; }});
document.getElementById("f").submit();
setTimeout(() => document.getElementById("g").submit(), 300);
</script></body></html>
"""


@pytest.fixture
def elsewhere(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain http.server on another local port (another origin, the same site)."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_another_origin_can_neither_listen_nor_create_with_the_victims_cookie(
        herald: Instance, context: BrowserContext,
        elsewhere: tuple[Path, str]) -> None:  # fmt: skip
    folder, origin = elsewhere
    page = sign_in(herald, context)  # the victim's browser holds the session cookie
    before = len(api(herald, "GET", "/api/tasks?limit=200")[1]["tasks"])
    ws = page.evaluate("() => fetch('/api/session').then((r) => r.json())")["ws"]
    (folder / "evil.html").write_text(EVIL_PAGE.format(base=base_url(herald), ws=ws))
    evil = context.new_page()
    evil.goto(origin + "/evil.html")
    evil.wait_for_function(
        "() => window.outcome.ws !== 'pending'"
        " && window.outcome.post !== 'pending'"
        " && window.outcome.read !== 'pending' && window.outcome.forms >= 2"
    )
    outcome = evil.evaluate("() => window.outcome")
    assert outcome["ws"].startswith("closed"), outcome  # never a welcome, never an event
    assert not outcome["read"].startswith("read"), outcome  # no CORS: nothing readable
    assert len(api(herald, "GET", "/api/tasks?limit=200")[1]["tasks"]) == before
    # The victim's own page still works: the cookie was good all along.
    expect(page.locator("#live")).to_have_attribute("data-state", "connected")
    run_from_form(page, "demo.answer", seconds="0")
    assert len(api(herald, "GET", "/api/tasks?limit=200")[1]["tasks"]) == before + 1


def test_search_lists_the_matching_tasks_and_shows_the_apis_error(
    herald: Instance, context: BrowserContext, tmp_path: Path
) -> None:
    source = tmp_path / "zebracrossings.csv"
    source.write_text("street,count\nMain,4\n")
    page = sign_in(herald, context)
    wanted = run_from_form(page, "report.csv", source=str(source))
    run_from_form(page, "demo.answer", seconds="0")
    expect(page.locator("#detail")).to_have_attribute("data-state", "succeeded")
    with page.expect_response(lambda r: "/api/tasks?" in r.url and "q=" in r.url) as answer:
        page.fill("#search", "zebracrossings")
        page.press("#search", "Enter")
    assert answer.value.status == 200
    expect(page.locator("#tasks li")).to_have_count(1)
    expect(page.locator("#tasks li")).to_have_attribute("data-id", wanted)
    # Text the search cannot understand: the API's own words, next to the box.
    with page.expect_response(lambda r: "/api/tasks?" in r.url and "q=" in r.url) as answer:
        page.fill("#search", '"zebra')
        page.press("#search", "Enter")
    assert answer.value.status == 400
    expect(page.locator("#search-error")).to_have_text(
        answer.value.json()["error"]["fields"]["q"]
    )
    expect(page.locator("#search")).to_have_attribute("aria-invalid", "true")
    page.fill("#search", "")
    page.press("#search", "Enter")
    expect(page.locator("#search-error")).to_be_hidden()
    assert page.locator("#tasks li").count() > 1


def test_sign_out_ends_the_session(herald: Instance, context: BrowserContext) -> None:
    page = sign_in(herald, context)
    with page.expect_response(lambda r: r.url.endswith("/api/logout")) as answer:
        page.click("#signout")
    assert answer.value.status == 204
    expect(page.locator("body")).to_contain_text("herald open")
    assert page.locator("#task-form").count() == 0
    assert context.request.get(base_url(herald) + "/api/session").status == 401
