"""What a principal may do, as the API shows and enforces it: /api/me, the catalog, submit."""

from __future__ import annotations

from services.auth import create_principal


async def test_me_says_who_the_caller_is(api):
    me = (await api.call("GET", "/api/me")).body
    assert me["principal"] == "local" and me["owner"] is True and me["network"] is True
    assert me["tasks"] == ["test.echo", "test.noop", "test.pick"]
    bob = (await api.call("GET", "/api/me", token=api.other_token)).body
    assert bob == {"principal": "bob", "owner": False, "allow": None,
                   "tasks": ["test.echo", "test.noop", "test.pick"], "roots": [],
                   "read_roots": [], "network": False}  # fmt: skip
    assert (await api.call("GET", "/api/me", token=None)).status == 401


async def test_the_catalog_and_submit_follow_allow(api):
    token = create_principal(api.layout, "narrow", allow=["test.noop"])
    catalog = (await api.call("GET", "/api/catalog", token=token)).body
    assert [t["name"] for t in catalog["tasks"]] == ["test.noop"]
    resp = await api.call("POST", "/api/tasks", token=token,
                          json_body={"task": "test.echo", "args": {"text": "hi"}})
    assert resp.status == 403, resp.body
    assert resp.body["error"]["code"] == "forbidden"
    assert "task:test.echo" in resp.body["error"]["message"]
    ok = await api.call("POST", "/api/tasks", token=token, json_body={"task": "test.noop"})
    assert ok.status == 202
    full = (await api.call("GET", "/api/catalog")).body
    assert len(full["tasks"]) == 3


async def test_a_revoked_principal_is_refused_at_once(api):
    from services.auth import revoke_principal

    assert (await api.call("GET", "/api/me", token=api.other_token)).status == 200
    revoke_principal(api.layout, "bob")
    assert (await api.call("GET", "/api/me", token=api.other_token)).status == 401
    assert (await api.call("GET", "/api/tasks", token=api.other_token)).status == 401
