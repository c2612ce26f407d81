"""`herald token ... --backend redis://...` and `herald prune --backend ...`: the command
line manages a Redis backend's principals and retention, on a real redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.auth import PrincipalRegistry, hash_token
from services.core.states import TaskState
from services.store.redisstore import RedisTaskStore


def herald(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HERALD_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, "-m", "embedded", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_tokens_are_made_listed_and_revoked_in_redis(tmp_path, redis_url):
    made = herald(tmp_path / "a", "token", "--backend", redis_url, "create", "bob",
                  "--allow", "demo.answer")  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    _, entries = PrincipalRegistry(redis_url).load()
    assert entries["bob"].token_sha256 == hash_token(token)
    assert entries["bob"].capabilities.allow == frozenset({"demo.answer"})
    assert not (tmp_path / "a" / "auth.json").exists() or "bob" not in (
        tmp_path / "a" / "auth.json").read_text()  # not the node's file

    # Another node's command line sees it.
    listed = herald(tmp_path / "b", "token", "--backend", redis_url, "list", "--json")
    assert listed.returncode == 0 and '"principal": "bob"' in listed.stdout

    gone = herald(tmp_path / "b", "token", "--backend", redis_url, "revoke", "bob")
    assert gone.returncode == 0, gone.stderr
    assert "bob" not in PrincipalRegistry(redis_url).load()[1]
    again = herald(tmp_path / "b", "token", "--backend", redis_url, "revoke", "bob")
    assert again.returncode == 1 and "no principal 'bob'" in again.stderr


def test_bad_or_unreachable_backends_are_clear_answers(tmp_path):
    bad = herald(tmp_path, "token", "--backend", "postgres://x/y", "list")
    assert bad.returncode == 2 and "--backend: unknown backend" in bad.stderr
    away = herald(tmp_path, "token", "--backend", "redis://127.0.0.1:1/0", "list")
    assert away.returncode == 1 and "cannot reach redis://127.0.0.1:1/0" in away.stderr


def test_prune_works_on_the_redis_ledger(tmp_path, redis_url):
    store = RedisTaskStore(redis_url)
    try:
        for _ in range(3):
            rec, _ = store.create_task(principal="a", name="demo.answer", args={})
            store.claim(rec.id, "w", 30)
            store.finish(rec.id, 1, TaskState.SUCCEEDED, result=1)
        out = herald(tmp_path, "prune", "--backend", redis_url, "--keep", "1")
        assert out.returncode == 0, out.stderr
        assert "Pruned 2 task(s)" in out.stdout and redis_url in out.stdout
        assert len(store.list_tasks("a")) == 1
    finally:
        store.close()
