"""The OpenAPI document matches the router exactly and describes each task's arguments."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from services.core.params import TEXT_PATTERN, Param, ParamType
from services.tasks.catalog import Catalog
from services.web.openapi import openapi_document

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def router_routes(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        out.add((route.method.lower(), path))
    return out


def document_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, p) for p, ops in doc["paths"].items() for m in ops if m in HTTP_METHODS}


def collect_refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        refs = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            refs |= collect_refs(value)
        return refs
    if isinstance(node, list):
        return set().union(*(collect_refs(v) for v in node)) if node else set()
    return set()


async def test_document_and_router_have_the_same_routes(api: Any) -> None:
    resp = await api.call("GET", "/api/openapi.json")
    assert resp.status == 200
    doc = resp.body
    app = api.app
    assert router_routes(app) == document_routes(doc)
    assert len(document_routes(doc)) == 18  # with / and /static/{name}
    # Path parameters are declared for every templated path, and only there.
    for path, ops in doc["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == templated, path


async def test_document_structure(api: Any) -> None:
    doc = (await api.call("GET", "/api/openapi.json")).body
    assert doc["openapi"].startswith("3.1")
    assert doc["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    # Health: the token is optional (without it, only the states).
    assert doc["paths"]["/api/health"]["get"]["security"] == [{}, {"bearer": []}]
    # Sign-in: the one-time ticket is the authentication (no token).
    assert doc["paths"]["/login"]["get"]["security"] == [{}]
    # The page: without a session, it says how to sign in.
    assert doc["paths"]["/"]["get"]["security"] == [{}]
    secured = [op for p, ops in doc["paths"].items() if p not in ("/api/health", "/login", "/")
               for op in ops.values()]  # fmt: skip
    assert all("security" not in op for op in secured)  # inherit the global bearer scheme
    schemas = doc["components"]["schemas"]
    for ref in collect_refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    for ops in doc["paths"].values():
        for op in ops.values():
            assert op["operationId"]
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }
            assert "401" in op["responses"] or {} in op.get("security", [None])


async def test_submit_body_is_a_oneof_by_task(api: Any) -> None:
    doc = (await api.call("GET", "/api/openapi.json")).body
    schemas = doc["components"]["schemas"]
    submit = schemas["SubmitRequest"]
    assert submit["discriminator"]["propertyName"] == "task"
    mapping = submit["discriminator"]["mapping"]
    assert set(mapping) == {"test.echo", "test.noop", "test.pick"}
    assert [r["$ref"] for r in submit["oneOf"]] == list(mapping.values())
    echo = schemas[mapping["test.echo"].rsplit("/", 1)[1]]
    assert echo["properties"]["task"] == {"const": "test.echo"}
    assert echo["required"] == ["task", "args"]
    assert echo["additionalProperties"] is False
    args = echo["properties"]["args"]
    assert args["required"] == ["text"]
    assert args["additionalProperties"] is False
    text = {"title": "Text", "type": "string", "maxLength": 20, "pattern": TEXT_PATTERN}
    assert args["properties"]["text"] == text
    count = args["properties"]["count"]
    assert count == {"title": "Count", "type": ["integer", "null"], "minimum": 1, "maximum": 5,
                     "default": 1}  # fmt: skip
    assert args["properties"]["loud"]["type"] == ["boolean", "null"]
    noop = schemas[mapping["test.noop"].rsplit("/", 1)[1]]
    assert noop["required"] == ["task"]  # no required argument: args may be left out
    pick = schemas[mapping["test.pick"].rsplit("/", 1)[1]]
    assert pick["properties"]["args"]["properties"]["colour"]["enum"] == ["red", "blue"]


def test_document_is_json_and_handles_odd_catalogs() -> None:
    empty = openapi_document(Catalog(), "1.0")
    assert "oneOf" not in empty["components"]["schemas"]["SubmitRequest"]
    catalog = Catalog()
    catalog.task("odd name/with spaces", params=[Param("n", ParamType.NUMBER)])(lambda ctx: 0)
    doc = openapi_document(catalog, "1.0")
    json.dumps(doc)  # serialisable
    names = [n for n in doc["components"]["schemas"] if n.startswith("Submit.")]
    assert names and all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)


_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
               "object": dict, "array": list, "null": type(None)}  # fmt: skip


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """The parts of JSON Schema the Task schema uses: type, enum, required, properties."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(isinstance(value, _JSON_TYPES[t]) and not (
                t in ("integer", "number") and isinstance(value, bool)) for t in names):
            return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, dict):
        if not set(schema.get("required", ())) <= set(value):
            return False
        return all(conforms(value[k], s) for k, s in schema.get("properties", {}).items()
                   if k in value)  # fmt: skip
    return True


async def test_the_task_schema_and_the_task_json_are_one_definition(api: Any) -> None:
    """The OpenAPI `Task`, the web's task_json and the clients' new_task all come from
    services.core.taskschema: the same fields, in the same order, of the declared types."""
    from services.core import taskview
    from services.core.states import TaskState
    from services.core.taskschema import FIELD_NAMES

    doc = (await api.call("GET", "/api/openapi.json")).body
    schema = doc["components"]["schemas"]["Task"]
    assert tuple(schema["properties"]) == tuple(schema["required"]) == FIELD_NAMES
    queued = (await api.submit("test.echo", {"text": "hi"})).body
    api.store.claim(queued["id"], "w", 60)
    api.store.finish(queued["id"], 1, TaskState.FAILED, error={"code": "x", "message": "no"})
    failed = (await api.call("GET", f"/api/tasks/{queued['id']}")).body
    listed = (await api.call("GET", "/api/tasks")).body["tasks"][0]
    for task in (queued, failed, listed):
        assert tuple(task) == FIELD_NAMES
        assert conforms(task, schema), task
    built = taskview.new_task("t1", "test.echo", {}, 0.0)
    assert tuple(k for k in built if k != "seq") == FIELD_NAMES
    assert conforms({**built, "max_attempts": 1}, schema)
