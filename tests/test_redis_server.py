"""The redis-server fixture itself, on real processes: it starts and answers with the config
it promises, an AOF server keeps its data across a restart and a SIGKILL, stop leaves no
process, a child dies with the process that started it, and `redis_url` is empty per test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from tests import redis_server as rs
from tests.redis_server import RedisServer, RedisServerError


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_starts_answers_and_binds_loopback_only(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert _alive(redis_server.pid)
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    config: dict[str, str] = client.config_get("*")  # type: ignore[assignment]
    assert config["bind"] == "127.0.0.1"
    assert config["protected-mode"] == "yes"
    assert config["save"] == ""
    assert config["appendonly"] == "no"
    assert Path(config["dir"]) == (redis_server.dir).resolve()
    assert int(config["port"]) == redis_server.port != 6379
    client.close()


def test_aof_server_keeps_data_across_restart_and_sigkill(tmp_path: Path) -> None:
    rs.require_redis_server()
    with RedisServer(tmp_path / "redis", aof=True) as server:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("appendfsync")["appendfsync"] == "always"
        client.set("k", "before restart")
        port, first_pid = server.port, server.pid
        server.restart()
        assert server.port == port and server.pid != first_pid
        assert client.get("k") == b"before restart"
        client.set("k", "before kill")
        server.kill()
        server.start()
        assert client.get("k") == b"before kill"
        client.close()


def test_without_aof_a_restart_loses_the_data(redis_server: RedisServer) -> None:
    # The other side of the test above: it is the AOF that keeps the data.
    client = redis.Redis.from_url(redis_server.url)
    client.set("k", "v")
    redis_server.restart()
    assert client.get("k") is None
    client.close()


def test_stop_and_kill_leave_no_process(tmp_path: Path) -> None:
    rs.require_redis_server()
    server = RedisServer(tmp_path / "redis").start()
    pid = server.pid
    server.stop()
    assert not _alive(pid) and not server.running()
    with pytest.raises(ConnectionRefusedError):
        server.command("PING")
    server.start()
    pid = server.pid
    server.kill()
    assert not _alive(pid)


def test_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    rs.require_redis_server()
    # os._exit skips atexit: only PR_SET_PDEATHSIG can take the server down with it.
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.redis_server import RedisServer
        server = RedisServer({str(tmp_path / "redis")!r}).start()
        print(server.pid, flush=True)
        os._exit(0)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    rs.require_redis_server()
    with RedisServer(tmp_path / "first") as first:
        taken = RedisServer(tmp_path / "second", port=first.port)
        with pytest.raises(RedisServerError, match="log"):
            taken.start()
        assert not taken.running()


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_redis_server_skips_or_fails_under_ci(monkeypatch, tmp_path, ci) -> None:
    monkeypatch.setattr(rs, "REDIS_SERVER", str(tmp_path / "no-redis-server"))
    monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="not installed"):
        RedisServer(tmp_path / "redis").start()


# Each of these finds the session's database empty, then leaves a key in it: whichever runs
# second fails unless `redis_url` empties it before each test.
@pytest.mark.parametrize("key", ["first", "second"])
def test_redis_url_is_empty_for_each_test(redis_url: str, key: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.set(key, "left behind")
    client.close()
