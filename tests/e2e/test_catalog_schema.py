"""The served JSON Schema of each task's arguments, on a real `herald serve`: a document
valid under it is accepted (202), one it refuses is refused (422) with the same fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema

from tests.e2e.harness import Instance
from tests.services.core.test_args_schema import schema_fields


def test_the_served_schema_says_what_the_api_accepts(herald: Instance, tmp_path: Path) -> None:
    client = herald.client
    status, catalog = client.request("GET", "/api/catalog")
    assert status == 200
    status, openapi = client.request("GET", "/api/openapi.json")
    assert status == 200
    components = openapi["components"]["schemas"]
    # The catalog is what the OpenAPI document says it is, and its schemas are the submit
    # body's `args` there.
    jsonschema.Draft202012Validator(components["Catalog"]).validate(catalog)
    schemas: dict[str, dict[str, Any]] = {}
    for entry in catalog["tasks"]:
        schema = entry["schema"]
        jsonschema.Draft202012Validator.check_schema(schema)
        args = components["Submit." + entry["name"]]["properties"]["args"]
        assert {"$schema": schema["$schema"], **args} == schema
        schemas[entry["name"]] = schema

    source = tmp_path / "data.csv"
    source.write_text("a,b\n1,2\n")
    good = {
        "files.checksum": {"path": str(source), "algorithm": "md5"},
        "demo.answer": {"seconds": 0.5},
        "report.csv": {"source": str(source), "delimiter": None, "overwrite": False},
    }
    for task, args in good.items():
        assert schema_fields(schemas[task], args) == set(), task
        status, body = client.request("POST", "/api/tasks", {"task": task, "args": args})
        assert status == 202, body
        assert body["task"] == task

    bad = {
        "files.checksum": {"path": "relative/name", "algorithm": "crc32", "overwrite": True},
        "demo.answer": {"seconds": True},
        "report.csv": {"destination": 7, "delimiter": "comma "},
        "process.run": {"program": "", "args": ["ok", 1], "ok_exit_codes": [0.5]},
    }
    for task, args in bad.items():
        fields = schema_fields(schemas[task], args)
        assert fields, task
        status, body = client.request("POST", "/api/tasks", {"task": task, "args": args})
        assert status == 422, body
        assert body["error"]["code"] == "validation_failed"
        # Each field error is where the schema's validation puts it: the page shows the
        # API's message beside the input its own check would have marked.
        assert set(body["error"]["fields"]) == fields, (task, body)
