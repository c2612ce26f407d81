"""A hostile local client against the real web service: what it learns without a token,
slow clients, malformed input and protocol tricks, and the modes of the files Herald makes.

Each check failed before the web service bounded its clients (issue 9): health gave every
PID; 1,100 slowloris connections at RLIMIT_NOFILE=1024 left a normal client no way in;
three inputs were 500s; duplicate headers, foreign absolute-form targets and bodies without
a Content-Type were accepted; long lines got plain-text 400s; `queue.db*` and the logs were
0644.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.auth import ensure_install_token
from services.layout import DataLayout
from services.web.limits import BODY_TIMEOUT, HEAD_TIMEOUT
from tests.e2e.harness import Instance, wait_for
from tests.services.web.test_server import REPO, reap, wait_ready

SLOW_CLIENTS = 1100
FD_LIMIT = 1024


@dataclass
class Web:
    """A running web service process (no worker: nothing submitted ever runs)."""

    proc: subprocess.Popen[bytes]
    port: int
    token: str

    def stderr(self) -> str:
        """Everything it logged (stop it first)."""
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")


def start_web(data_dir: Path, fd_limit: tuple[int, int] | None = None) -> Web:
    token = ensure_install_token(DataLayout(data_dir))

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, fd_limit)

    proc = subprocess.Popen(
        [sys.executable, "-m", "services.web", "--data-dir", str(data_dir), "--port", "0"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=limit,
    )  # fmt: skip
    return Web(proc, wait_ready(proc)["port"], token)


def stop_web(web: Web) -> None:
    """Stop it the way the supervisor does (end of stdin) and wait."""
    assert web.proc.stdin is not None
    web.proc.stdin.close()
    try:
        web.proc.wait(15)
    finally:
        if web.proc.poll() is None:
            web.proc.kill()
            web.proc.wait(10)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = start_web(tmp_path / "data")
    try:
        yield w
    finally:
        reap(w.proc)


def exchange(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes, read one response: (status, headers, decoded JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a body"
        body += chunk
    assert headers.get("content-type", "").startswith("application/json"), (status, head, body)
    return status, headers, json.loads(body)


def request(port: int, method: str, target: str, *, headers: list[tuple[str, str]] | None = None,
            body: bytes | None = None, host: str | None = None) -> bytes:  # fmt: skip
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def submit_bytes(web: Web, body: bytes, content_type: str | None = "application/json") -> bytes:
    headers = [("Authorization", f"Bearer {web.token}")]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return request(web.port, "POST", "/api/tasks", headers=headers, body=body)


def assert_error(answer: tuple[int, dict[str, str], Any], status: int, code: str) -> None:
    got, _, body = answer
    assert got == status, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"], body


# ------------------------------------------------------------------ what health says


def test_health_without_a_token_has_no_pid(herald: Instance) -> None:
    client = herald.client
    full = client.health()  # the client sends its token
    assert all(isinstance(s.get("pid"), int) for s in full["services"].values()), full
    assert full["version"]
    web_port = herald.status()["web"]["port"]
    with socket.create_connection(("127.0.0.1", web_port), timeout=10) as sock:
        sock.sendall(request(web_port, "GET", "/api/health"))
        status, _, public = read_response(sock)
    assert status == 200
    assert public == {"status": full["status"],
                      "services": {name: {"state": s["state"]}
                                   for name, s in full["services"].items()}}  # fmt: skip
    text = json.dumps(public)
    for service in full["services"].values():
        assert str(service["pid"]) not in text
        if service.get("port"):
            assert str(service["port"]) not in text
    assert str(herald.data_dir) not in text


# --------------------------------------------------------------- slow clients


async def _slowloris(port: int, stop: asyncio.Event, stats: dict[str, int]) -> None:
    """One slow client: a request head one byte a second, reconnecting when closed."""
    head = f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode()
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["refused"] += 1
            await asyncio.sleep(1)
            continue
        stats["connected"] += 1
        try:
            for i in range(10**6):
                if stop.is_set() or reader.at_eof():
                    break
                writer.write(head[i:i + 1] if i < len(head) else b"a")
                await writer.drain()
                try:
                    got = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    continue
                if got.startswith(b"HTTP/1.1 408"):
                    stats["timed_out"] += 1
                if not got:
                    break
        except OSError:
            pass
        finally:
            stats["closed"] += 1
            writer.close()
        await asyncio.sleep(1)


def _submit_once(web: Web, timeout: float) -> float:
    """One submit on a new connection; its time in seconds."""
    body = json.dumps({"task": "demo.answer", "args": {"seconds": 0}}).encode()
    started = time.perf_counter()
    answer = exchange(web.port, submit_bytes(web, body), timeout=timeout)
    assert answer[0] == 202, answer
    return time.perf_counter() - started


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_NOFILE and /proc")
def test_slowloris_leaves_a_normal_client_working(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SLOW_CLIENTS + 200
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"this test opens {needed} sockets; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    # The worst case: the hard limit too is 1,024, so the service cannot raise it.
    web = start_web(tmp_path / "data", fd_limit=(FD_LIMIT, FD_LIMIT))
    times: list[float] = []
    stats = {"connected": 0, "refused": 0, "closed": 0, "timed_out": 0}
    peak_fds = 0

    async def attack() -> None:
        nonlocal peak_fds
        stop = asyncio.Event()
        clients = [asyncio.create_task(_slowloris(web.port, stop, stats))
                   for _ in range(SLOW_CLIENTS)]  # fmt: skip
        loop = asyncio.get_running_loop()
        try:
            # Until every slow client got in once, then past the head time limit, with a
            # normal client submitting every second meanwhile.
            deadline = loop.time() + HEAD_TIMEOUT + 3
            while loop.time() < deadline or stats["connected"] < SLOW_CLIENTS:
                assert loop.time() < deadline + 30, stats
                await asyncio.sleep(1)
                peak_fds = max(peak_fds, open_fds(web.proc.pid))
                times.append(await asyncio.to_thread(_submit_once, web, 10.0))
        finally:
            stop.set()
            await asyncio.gather(*clients, return_exceptions=True)

    try:
        asyncio.run(attack())
        alive = web.proc.poll() is None
        stop_web(web)
        log = web.stderr()
    finally:
        reap(web.proc)
    times.sort()
    print(f"\n{SLOW_CLIENTS} slowloris clients at RLIMIT_NOFILE={FD_LIMIT}: {len(times)} "
          f"submits, median {times[len(times) // 2] * 1000:.1f} ms, slowest "
          f"{times[-1] * 1000:.1f} ms; the service's fds peaked at {peak_fds}; slow "
          f"connections {stats}")  # fmt: skip
    assert alive
    assert stats["connected"] >= SLOW_CLIENTS
    assert peak_fds < FD_LIMIT
    for sign in ("Traceback", "out of system resource", "cannot accept", "Too many open files"):
        assert sign not in log, log[-3000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_the_web_service_raises_its_fd_limit_to_the_hard_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit is {hard}")
    web = start_web(tmp_path / "data", fd_limit=(FD_LIMIT, 4096))
    try:
        limits = Path(f"/proc/{web.proc.pid}/limits").read_text()
    finally:
        reap(web.proc)
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"], line


@pytest.mark.slow
def test_a_head_or_body_not_sent_in_time_is_408(web: Web) -> None:
    """One byte a second of a head, then of a body: each connection is answered 408 with
    the JSON error body and closed, though it never stopped sending."""
    starts = [
        f"GET /api/tasks HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\nX-Slow: ".encode(),
        submit_bytes(web, b"{" + b" " * 99)[:-100],  # the head in full, the body to come
    ]
    socks = []
    for start in starts:
        sock = socket.create_connection(("127.0.0.1", web.port), timeout=1.0)
        sock.sendall(start)
        socks.append(sock)
    answers: list[Any] = [None, None]
    deadline = time.monotonic() + max(HEAD_TIMEOUT, BODY_TIMEOUT) + 20
    while None in answers and time.monotonic() < deadline:
        for i, sock in enumerate(socks):
            if answers[i] is not None:
                continue
            try:
                sock.sendall(b" ")
                answers[i] = read_response(sock)
            except TimeoutError:
                continue
            except OSError as exc:
                answers[i] = exc
    for sock in socks:
        sock.close()
    for answer in answers:
        assert isinstance(answer, tuple), answers
        assert_error(answer, 408, "request_timeout")
    # The service still answers.
    assert exchange(web.port, request(web.port, "GET", "/api/health"))[0] == 200


# ------------------------------------------------------- input and protocol strictness


@pytest.mark.parametrize("body", [
    # An integer far beyond 2^53 (it was an OverflowError).
    json.dumps({"task": "demo.answer", "args": {"seconds": 2**4000}}).encode(),
    # A lone surrogate in an argument (the ledger's insert failed).
    b'{"task": "process.run", "args": {"program": "echo", "args": ["\\ud800"]}}',
    b'{"task": "process.run", "args": {"program": "\\udfff"}}',
    # A lone surrogate in an argument's key (the error middleware itself crashed).
    b'{"task": "process.run", "args": {"program": "echo", "\\ud800": 1}}',
    b'{"task": "demo.answer", "\\ud800x": 1}',
], ids=["huge-integer", "surrogate-argument", "surrogate-program", "surrogate-key",
        "surrogate-member"])  # fmt: skip
def test_values_herald_cannot_keep_are_4xx_json(web: Web, body: bytes) -> None:
    status, _, answer = exchange(web.port, submit_bytes(web, body))
    assert status in (400, 422), answer
    assert answer["error"]["code"] in ("bad_request", "validation_failed"), answer
    # What is echoed is valid JSON and valid UTF-8 (json.loads passed); never the raw
    # surrogate.
    assert "\ud800" not in json.dumps(answer, ensure_ascii=False)
    listed = exchange(web.port, request(web.port, "GET", "/api/tasks", headers=[
        ("Authorization", f"Bearer {web.token}")]))  # fmt: skip
    assert listed[2]["tasks"] == []


def test_protocol_tricks_get_their_codes(web: Web) -> None:
    auth = ("Authorization", f"Bearer {web.token}")
    port = web.port
    own = f"http://127.0.0.1:{port}"
    cases: list[tuple[str, bytes, int, str]] = [
        ("two Host headers", request(port, "GET", "/api/tasks", headers=[
            ("Host", "evil.example"), auth]), 400, "bad_request"),
        ("two Origin headers", request(port, "GET", "/api/tasks", headers=[
            ("Origin", own), ("Origin", "http://evil.example"), auth]), 400, "bad_request"),
        ("two Authorization headers", request(port, "GET", "/api/tasks", headers=[
            auth, ("Authorization", "Bearer x")]), 400, "bad_request"),
        ("a foreign absolute-form target", request(
            port, "GET", f"http://evil.example:{port}/api/tasks", headers=[auth]),
         403, "forbidden_host"),
        ("a foreign absolute-form health", request(
            port, "GET", f"http://evil.example:{port}/api/health"), 403, "forbidden_host"),
        ("a body without Content-Type", submit_bytes(
            web, b'{"task": "demo.answer"}', content_type=None), 415, "unsupported_media_type"),
        ("a long header line", request(port, "GET", "/api/health", headers=[
            ("X-Long", "a" * 9000)]), 431, "header_too_large"),
        ("a long request line", request(port, "GET", "/api/health?" + "a" * 9000),
         414, "uri_too_long"),
        ("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64 + b"\r\n\r\n",
         400, "bad_request"),
    ]  # fmt: skip
    for what, raw, status, code in cases:
        answer = exchange(port, raw)
        assert answer[0] == status and answer[2]["error"]["code"] == code, (what, answer)
    # Herald's own authority in absolute form is fine.
    answer = exchange(port, request(port, "GET", f"{own}/api/tasks", headers=[auth]))
    assert answer[0] == 200, answer
    stop_web(web)
    log = web.stderr()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert log.count("refused a malformed request") >= 3, log[-3000:]


# ------------------------------------------------------------------ file modes


def test_files_herald_creates_are_owner_only(herald: Instance, runtime_dir: Path) -> None:
    client = herald.client
    task = client.submit("demo.answer", {"seconds": 0})
    wait_for(lambda: client.get(task["id"])["state"] == "succeeded", timeout=30)
    found = []
    for top in (herald.data_dir, runtime_dir):
        for path in [top, *top.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            found.append(path.name)
            assert mode & 0o077 == 0, f"{path} is {mode:o}"
    assert {"queue.db", "herald.db", "web.log", "worker.log"} <= set(found), found


def test_a_task_s_own_files_get_the_user_s_modes(herald: Instance, tmp_path: Path) -> None:
    """Herald's files are owner-only; what a task makes for the user is the user's."""
    current = os.umask(0)
    os.umask(current)
    user = int(herald.env.get("HERALD_USER_UMASK", oct(current)), 8)
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("a")
    dest = tmp_path / "a.zip"
    task = herald.client.submit("files.archive", {"source": str(source),
                                                  "destination": str(dest)})  # fmt: skip
    wait_for(lambda: herald.client.get(task["id"])["state"] == "succeeded", timeout=30)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~user
