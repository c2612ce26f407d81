"""The real process: `python -m services.web` announces readiness, serves, stops on stdin EOF."""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.auth import ensure_install_token
from services.layout import DataLayout
from services.runtime import parse_ready

REPO = Path(__file__).resolve().parents[3]


def start(data_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.web", "--data-dir", str(data_dir), "--port", "0"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> dict:
    """The readiness line's details; fails with the child's stderr if it never comes."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.decode(errors="replace").splitlines():
                info = parse_ready(line)
                if info is not None:
                    return info
    proc.kill()
    assert proc.stderr is not None
    err = proc.stderr.read()
    pytest.fail(f"no HERALD_READY line; stderr:\n{err.decode(errors='replace')}")


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child if it still runs, wait for it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def get(port: int, path: str, token: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_process_serves_and_stops_on_stdin_eof(data_dir: Path) -> None:
    token = ensure_install_token(DataLayout(data_dir))
    proc = start(data_dir)
    try:
        info = wait_ready(proc)
        assert info["service"] == "web"
        port = info["port"]
        assert isinstance(port, int) and port > 0
        assert info["url"] == f"http://127.0.0.1:{port}"
        status, body = get(port, "/api/catalog", token)
        assert status == 200 and body["tasks"]
        status, body = get(port, "/api/tasks", "not-the-token")
        assert status == 401
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        reap(proc)


def test_process_stops_cleanly_on_sigterm(data_dir: Path) -> None:
    proc = start(data_dir)
    try:
        port = wait_ready(proc)["port"]
        status, body = get(port, "/api/health")
        assert status == 200 and body["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        reap(proc)


def test_web_service_imports_neither_the_notifier_nor_qt() -> None:
    code = (
        "import sys, services.web.server, services.web.__init__\n"
        "bad = {'websockets', 'PySide6', 'qasync', 'shiboken6'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def mapped_libraries(pid: int) -> set[str]:
    """The file names of the shared objects a live process has mapped."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}


def openssl(pid: int) -> set[str]:
    return {lib for lib in mapped_libraries(pid) if lib.startswith(("libcrypto", "libssl"))}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def test_process_serves_without_loading_openssl(data_dir: Path) -> None:
    """It serves plain HTTP on loopback and makes no outbound connection: OpenSSL and the
    TLS client contexts aiohttp builds at import (the CA bundle parsed twice) stay out, and
    tokens are still checked (their digest is Python's own)."""
    token = ensure_install_token(DataLayout(data_dir))
    proc = start(data_dir)
    try:
        port = wait_ready(proc)["port"]
        assert openssl(proc.pid) == set()
        assert get(port, "/api/catalog", token)[0] == 200
        assert get(port, "/api/catalog", token[:-1] + ("A" if token[-1] != "A" else "B"))[0] == 401
        assert openssl(proc.pid) == set()
    finally:
        reap(proc)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def test_a_task_module_that_needs_ssl_still_loads(data_dir: Path, tmp_path: Path) -> None:
    """OpenSSL is kept out of the service's own imports only: a task module of the catalog
    that uses `ssl` when it is imported gets the real one."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "tls_task.py").write_text(
        "import ssl\n"
        "from services.tasks import task\n"
        "CONTEXT = ssl.create_default_context()\n"
        "@task('tls.check', title='Uses TLS')\n"
        "def check(ctx):\n"
        "    return {'protocol': CONTEXT.protocol.name}\n"
    )
    data_dir.mkdir(mode=0o700)
    (data_dir / "config.toml").write_text('[tasks]\nmodules = ["tls_task"]\n')
    token = ensure_install_token(DataLayout(data_dir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.web", "--data-dir", str(data_dir), "--port", "0"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(mods)])},
    )  # fmt: skip
    try:
        port = wait_ready(proc)["port"]
        status, body = get(port, "/api/catalog", token)
        assert status == 200
        assert "tls.check" in {t["name"] for t in body["tasks"]}
        assert openssl(proc.pid)  # the task module's own import of ssl loaded it
    finally:
        reap(proc)
