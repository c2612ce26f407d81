"""Every failure is a JSON error body: unknown routes, wrong methods, unexpected errors."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from services.web.errors import dumps


# (`/` is the browser page: services/web/page.py.)
@pytest.mark.parametrize("path", ["/index.html", "/api", "/api/nowhere", "/api/tasks/x/y/z",
                                  "/favicon.ico", "/static", "/static/a/b"])  # fmt: skip
async def test_unknown_route_is_404_json(api: Any, path: str) -> None:
    resp = await api.call("GET", path)
    assert resp.status == 404
    assert resp.body["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/tasks", {"GET", "POST"}),
        ("PUT", "/api/tasks/abc", {"GET", "DELETE"}),
        ("GET", "/api/tasks/abc/cancel", {"POST"}),
        ("POST", "/api/catalog", {"GET"}),
        ("HEAD", "/api/tasks", {"GET", "POST"}),
    ],
)
async def test_wrong_method_is_405_json(api: Any, method: str, path: str, allow: set) -> None:
    async with api.session.request(
        method, api.base + path, headers={"Authorization": f"Bearer {api.token}"}
    ) as r:
        raw = await r.read()
        assert r.status == 405
        assert set(r.headers["Allow"].split(",")) == allow
        if method != "HEAD":
            assert json.loads(raw)["error"]["code"] == "method_not_allowed"


async def test_unexpected_error_is_json_500_and_logged(
    api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api.store.close()  # every later ledger call raises sqlite3.ProgrammingError
    with caplog.at_level(logging.ERROR, logger="services.web.errors"):
        resp = await api.call("GET", "/api/tasks")
    assert resp.status == 500
    assert resp.body == {"error": {"code": "internal", "message": "Internal server error."}}
    assert any(r.exc_info for r in caplog.records), "logged with its traceback"


async def test_content_length_over_limit_is_refused_before_the_body(api: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(
        (
            f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\n"
            f"Authorization: Bearer {api.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1024**2 + 1}\r\nConnection: close\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    # No body is sent: the answer must come from the Content-Length alone.
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413")


def test_an_answer_never_fails_to_encode() -> None:
    """Text UTF-8 cannot carry (a lone surrogate a client sent as "\\ud800") goes out as
    JSON's escape: the error middleware cannot crash on what it echoes."""
    raw = dumps({"error": {"code": "bad_request", "message": "x\ud800", "fields": {"\udfff": "?"}}})
    assert json.loads(raw) == {"error": {"code": "bad_request", "message": "x\ud800",
                                         "fields": {"\udfff": "?"}}}  # fmt: skip
    raw.decode("utf-8")  # valid UTF-8
    assert dumps({"a": "é"}) == '{"a":"é"}'.encode()  # the usual case stays UTF-8
