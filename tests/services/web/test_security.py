"""The guard: bearer token, Host and Origin on every route; no CORS; a public health check."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

ROUTES = [
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks/abc"),
    ("GET", "/api/tasks/abc/events"),
    ("POST", "/api/tasks/abc/cancel"),
    ("GET", "/api/catalog"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/nowhere"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_no_token_is_401_with_challenge(api: Any, method: str, path: str) -> None:
    resp = await api.call(method, path, token=None)
    assert resp.status == 401
    assert resp.body["error"]["code"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer wrong", "Bearer ", "Basic dXNlcjpwYXNz", "bearer", "Token {token}", "{token}"],
)
async def test_wrong_token_is_401(api: Any, authorization: str) -> None:
    resp = await api.call(
        "GET",
        "/api/tasks",
        token=None,
        headers={"Authorization": authorization.format(token=api.token)},
    )
    assert resp.status == 401
    assert resp.body["error"]["code"] == "unauthorized"


async def test_bearer_scheme_is_case_insensitive(api: Any) -> None:
    resp = await api.call(
        "GET", "/api/tasks", token=None, headers={"Authorization": f"bearer {api.token}"}
    )
    assert resp.status == 200


@pytest.mark.parametrize("param", ["token", "access_token", "auth"])
async def test_token_in_query_string_is_not_accepted(api: Any, param: str) -> None:
    resp = await api.call("GET", f"/api/tasks?{param}={api.token}", token=None)
    assert resp.status == 401


async def test_a_new_principal_works_without_restart(api: Any) -> None:
    from services.auth import create_principal

    carol = create_principal(api.layout, "carol")
    resp = await api.call("GET", "/api/tasks", token=carol)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("evil.example:{port}", False),
        ("evil.example", False),
        ("127.0.0.1:{wrong}", False),
        ("127.0.0.1", False),
        ("localhost:{wrong}", False),
        ("0.0.0.0:{port}", False),
        ("127.0.0.1:{port}", True),
        ("localhost:{port}", True),
        ("LOCALHOST:{port}", True),
    ],
)
async def test_host_header(api: Any, host: str, allowed: bool) -> None:
    header = host.format(port=api.port, wrong=api.port + 1 if api.port < 65535 else 1)
    for token in (api.token, None):
        resp = await api.call("GET", "/api/tasks", token=token, headers={"Host": header})
        if allowed:
            assert resp.status == (200 if token else 401)
        else:
            assert resp.status == 403  # before auth: no token needed to be refused
            assert resp.body["error"]["code"] == "forbidden_host"
    health = await api.call("GET", "/api/health", token=None, headers={"Host": header})
    assert health.status == (200 if allowed else 403)


async def test_request_without_host_is_403(api: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    writer.write(b"GET /api/health HTTP/1.0\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 403")
    assert json.loads(body)["error"]["code"] == "forbidden_host"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://evil.example", False),
        ("null", False),
        ("http://127.0.0.1:{wrong}", False),
        ("https://127.0.0.1:{port}", False),
        ("http://127.0.0.1:{port}", True),
        ("http://localhost:{port}", True),
    ],
)
async def test_origin_header(api: Any, origin: str, allowed: bool) -> None:
    header = origin.format(port=api.port, wrong=api.port + 1 if api.port < 65535 else 1)
    for method, path in [("GET", "/api/tasks"), ("POST", "/api/tasks"), ("GET", "/api/health")]:
        kw: dict[str, Any] = {"headers": {"Origin": header}}
        if method == "POST":
            kw["json_body"] = {"task": "test.noop"}
        resp = await api.call(method, path, **kw)
        if allowed:
            assert resp.status in (200, 202), (method, path)
        else:
            assert resp.status == 403, (method, path)
            assert resp.body["error"]["code"] == "forbidden_origin"
        assert not any(h.lower().startswith("access-control-") for h in resp.headers)
    if not allowed:
        assert api.store.events_after(0) == []  # the refused POST recorded nothing


async def test_preflight_gets_no_cors_headers(api: Any) -> None:
    headers = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    resp = await api.call("OPTIONS", "/api/tasks", headers=headers)
    assert resp.status == 403
    own = {"Origin": f"http://127.0.0.1:{api.port}", "Access-Control-Request-Method": "POST"}
    resp = await api.call("OPTIONS", "/api/tasks", headers=own)
    assert resp.status == 405
    for r in (resp,):
        assert not any(h.lower().startswith("access-control-") for h in r.headers)


async def test_health_needs_no_token(api: Any) -> None:
    resp = await api.call("GET", "/api/health", token=None)
    assert resp.status == 200
    assert resp.body == {"status": "ok", "services": {"web": {"state": "ready"}}}
    # Only GET is public.
    post = await api.call("POST", "/api/health", token=None)
    assert post.status == 401


async def test_health_with_the_token_shows_the_version(api: Any) -> None:
    resp = await api.call("GET", "/api/health")
    assert resp.status == 200
    assert resp.body["status"] == "ok"
    assert isinstance(resp.body["version"], str) and resp.body["version"]
    assert resp.body["services"] == {"web": {"state": "ready"}}
    assert resp.body["problems"] == []


async def test_health_reports_the_supervisors_view(api: Any) -> None:
    status = {
        "services": {
            "web": {"state": "ready", "port": api.port, "pid": 1},
            "worker": {"state": "ready", "pid": 2},
            "notifier": {"state": "ready", "port": 9, "pid": 3, "url": "ws://127.0.0.1:9/ws"},
        }
    }
    api.layout.run_dir.mkdir(parents=True, exist_ok=True)
    api.layout.status_file.write_text(json.dumps(status))
    resp = await api.call("GET", "/api/health")
    assert resp.body["status"] == "ok"
    assert resp.body["services"] == status["services"]
    status["services"]["worker"]["state"] = "restarting"
    status["services"]["worker"]["reason"] = "killed by SIGKILL"
    api.layout.status_file.write_text(json.dumps(status))
    resp = await api.call("GET", "/api/health")
    assert resp.status == 200
    assert resp.body["status"] == "degraded"
    assert resp.body["services"]["worker"]["state"] == "restarting"
    # Without the token (or with one that is not valid): the states, nothing else.
    for token in (None, "not-a-token-0123456789"):
        public = await api.call("GET", "/api/health", token=token)
        assert public.status == 200
        assert public.body == {"status": "degraded", "services": {
            "web": {"state": "ready"}, "worker": {"state": "restarting"},
            "notifier": {"state": "ready"}}}  # fmt: skip
