"""A hostile local client, on a real `herald serve`: principal B holds its own token and
tries, with the built-in tasks, to read A's token or Herald's data, to write into it, and
to reach beyond its own folders; the owner cannot touch Herald's files either. And `herald
token revoke` shuts B out, its open WebSocket included."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from embedded.client import HeraldClient
from tests.e2e.harness import Instance, start_serve, wait_for


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    root = tmp_path_factory.mktemp("hostile")
    inst = start_serve(root / "data", root / "runtime", "--concurrency", "2")
    yield inst
    inst.stop()


@pytest.fixture(scope="module")
def places(herald: Instance) -> dict[str, Path]:
    """B's read+write root, its read-only root, and a folder that is neither."""
    base = herald.data_dir.parent
    out = {name: base / name for name in ("b_root", "b_read", "elsewhere")}
    for path in out.values():
        path.mkdir()
        (path / "people.csv").write_text("name,age\nada,36\n")
    return out


def principal(herald: Instance, name: str, *options: str) -> HeraldClient:
    done = herald.cli("token", "create", name, *options)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stdout == token + "\n"  # the token, alone, on stdout
    a = herald.client
    client = HeraldClient(a.api, a.ws, token)
    herald.clients.append(client)
    return client


@pytest.fixture(scope="module")
def bob(herald: Instance, places: dict[str, Path]) -> HeraldClient:
    return principal(herald, "bob", "--root", str(places["b_root"]),
                     "--read-root", str(places["b_read"]))  # fmt: skip


def post(client: HeraldClient, task: str, args: dict[str, Any]) -> tuple[int, Any]:
    return client.request("POST", "/api/tasks", {"task": task, "args": args})


def refused_field(answer: tuple[int, Any], field: str) -> None:
    status, body = answer
    assert status == 422, body
    assert body["error"]["code"] == "validation_failed"
    assert "Herald's own files" in body["error"]["fields"][field]


def test_b_cannot_read_the_token_through_report_csv(herald, bob, places):
    token = (herald.data_dir / "token").read_text().strip()
    answer = post(bob, "report.csv", {"source": str(herald.data_dir / "token"),
                                      "destination": str(places["b_root"] / "t.html")})  # fmt: skip
    refused_field(answer, "source")
    assert not any(token in json.dumps(t) for t in bob.list_tasks().tasks)


@pytest.mark.parametrize("task,args,field", [
    ("files.archive", {"source": "{data}", "destination": "{root}/all.zip"}, "source"),
    ("files.checksum", {"path": "{data}"}, "path"),
    ("files.checksum", {"path": "{data}/token"}, "path"),
    ("files.checksum", {"path": "{data}/auth.json"}, "path"),
    ("files.checksum", {"path": "{data}/../data/herald.db"}, "path"),
])  # fmt: skip
def test_b_cannot_read_the_data_dir_with_any_file_task(herald, bob, places, task, args, field):
    args = {k: v.format(data=herald.data_dir, root=places["b_root"]) for k, v in args.items()}
    refused_field(post(bob, task, args), field)


def test_b_may_not_run_programs_unless_allowed(herald, bob):
    status, body = post(bob, "process.run", {"program": "cat",
                                             "args": [str(herald.data_dir / "token")]})  # fmt: skip
    assert status == 403, body
    assert body["error"]["code"] == "forbidden"
    assert "task:process.run" in body["error"]["message"]
    assert "process.run" not in [t["name"] for t in bob.catalog()]
    status, me = bob.request("GET", "/api/me")
    assert status == 200
    assert me["principal"] == "bob" and me["owner"] is False
    assert "process.run" not in me["tasks"] and "files.checksum" in me["tasks"]


def test_no_task_writes_into_the_data_dir_not_even_the_owners(herald, places):
    owner = herald.client
    db = herald.data_dir / "herald.db"
    before = db.stat().st_ino
    answer = owner.request("POST", "/api/tasks", {"task": "files.archive", "args": {
        "source": str(places["elsewhere"]), "destination": str(db), "overwrite": True}})
    refused_field(answer, "destination")
    answer = owner.request("POST", "/api/tasks", {"task": "report.csv", "args": {
        "source": str(places["elsewhere"] / "people.csv"),
        "destination": str(herald.data_dir / "token"), "overwrite": True}})
    refused_field(answer, "destination")
    assert db.stat().st_ino == before
    # ... nor reads from the runtime dir (where the runtime file with the token is).
    runtime = Path(herald.env["XDG_RUNTIME_DIR"]) / "herald"
    assert any(runtime.glob("instance-*.json"))
    refused_field(owner.request("POST", "/api/tasks", {"task": "files.checksum",
                                "args": {"path": str(runtime)}}), "path")  # fmt: skip


def test_a_link_in_bs_root_into_the_data_dir_is_refused(herald, bob, places):
    link = places["b_root"] / "innocent"
    link.symlink_to(herald.data_dir)
    refused_field(post(bob, "files.checksum", {"path": str(link / "token")}), "path")
    refused_field(post(bob, "files.archive", {"source": str(link),
                                              "destination": str(places["b_root"] / "x.zip")}),
                  "source")  # fmt: skip
    file_link = places["b_root"] / "notes.csv"
    file_link.symlink_to(herald.data_dir / "token")
    refused_field(post(bob, "report.csv", {"source": str(file_link),
                                           "destination": str(places["b_root"] / "r.html")}),
                  "source")  # fmt: skip


def test_b_works_inside_its_roots_and_nowhere_else(herald, bob, places):
    ok = bob.submit("files.checksum", {"path": str(places["b_read"] / "people.csv")})
    done = wait_for(lambda: (t := bob.get(ok["id"]))["state"] in ("succeeded", "failed") and t)
    assert done["state"] == "succeeded", done
    status, body = post(bob, "files.checksum", {"path": str(places["elsewhere"] / "people.csv")})
    assert status == 403 and body["error"]["code"] == "forbidden", body
    assert "read:" in body["error"]["message"] and "path" in body["error"]["fields"]
    # A read root is not a write root, and the report's default destination is a write.
    status, body = post(bob, "files.archive", {"source": str(places["b_read"]),
                                               "destination": str(places["b_read"] / "a.zip")})
    assert status == 403 and "write:" in body["error"]["message"], body
    status, body = post(bob, "report.csv", {"source": str(places["b_read"] / "people.csv")})
    assert status == 403 and "destination" in body["error"]["fields"], body
    # Whether a file exists outside its folders is not B's to learn.
    status, body = post(bob, "files.checksum", {"path": str(places["elsewhere"] / "nope")})
    assert status == 403, body


def test_a_principal_without_roots_gets_no_folder(herald, places):
    carol = principal(herald, "carol")
    status, body = post(carol, "files.checksum", {"path": str(places["b_root"] / "people.csv")})
    assert status == 403 and body["error"]["code"] == "forbidden", body
    status, me = carol.request("GET", "/api/me")
    assert (me["roots"], me["read_roots"], me["network"]) == ([], [], False)


def test_token_list_shows_each_principal(herald, bob, places):
    done = herald.cli("token", "list", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["principal"]: r for r in json.loads(done.stdout)}
    assert rows["local"]["owner"] is True
    assert rows["bob"]["roots"] == [os.path.realpath(places["b_root"])]
    assert rows["bob"]["read_roots"] == [os.path.realpath(places["b_read"])]
    assert "token" not in done.stdout.lower().replace("token_sha256", "")


def test_revoke_closes_bs_websocket_and_refuses_its_token(herald):
    dave = principal(herald, "dave")
    with connect(dave.ws, additional_headers={"Authorization": f"Bearer {dave.token}"}) as ws:
        welcome = json.loads(ws.recv(timeout=10))
        assert welcome["type"] == "welcome"
        done = herald.cli("token", "revoke", "dave")
        assert done.returncode == 0, done.stderr
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
        assert ws.close_code == 4401 and re.search("revoked", ws.close_reason or "")
    assert dave.request("GET", "/api/tasks")[0] == 401
    assert "dave" not in {r["principal"] for r in json.loads(herald.cli("token", "list",
                                                                        "--json").stdout)}


def test_token_create_refuses_roots_holding_herald_files_and_unknown_tasks(herald, places):
    for root in (herald.data_dir.parent, herald.data_dir / "logs"):
        done = herald.cli("token", "create", "eve", "--root", str(root))
        assert done.returncode == 2 and "Herald's own files" in done.stderr, done.stderr
        assert done.stdout == ""
    done = herald.cli("token", "create", "eve", "--allow", "files.chekcsum")
    assert done.returncode == 2 and "no such task: files.chekcsum" in done.stderr
    assert "eve" not in {r["principal"] for r in json.loads(herald.cli("token", "list",
                                                                       "--json").stdout)}
    assert herald.cli("token", "revoke", "local").returncode == 2
    assert herald.cli("token", "revoke", "nobody").returncode == 1


def test_b_allowed_process_run_still_cannot_read_herald_s_files(herald, places):
    """Submit-time checks cannot see into a program's own arguments: the sandbox does."""
    carol = principal(herald, "carol", "--allow", "process.run", "--root", str(places["b_root"]))
    token = (herald.data_dir / "token").read_text().strip()

    def run(*argv: str) -> str:
        task = carol.submit("process.run", {"program": argv[0], "args": list(argv[1:]),
                                            "cwd": str(places["b_root"])})  # fmt: skip
        wait_for(lambda: carol.get(task["id"])["state"] in ("succeeded", "failed"), timeout=60)
        return json.dumps([e.data for e in carol.timeline(task["id"])])

    stolen = run("cat", str(herald.data_dir / "token"))
    assert token not in stolen and "Permission denied" in stolen
    assert "ada,36" in run("cat", str(places["b_root"] / "people.csv"))  # its own root: fine
    assert "ada,36" not in run("cat", str(places["elsewhere"] / "people.csv"))  # not its own
