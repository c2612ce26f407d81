"""Roles and deployment, end to end: `herald serve --services`, `--workers`, `--listen`
beyond loopback with the Host check, TLS (https and wss with a CA made here), and every
refusal of the options (exit 2 and a message that says what to do)."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from embedded.supervisor import Deployment, Supervisor
from services.core.events import EventType
from services.layout import DataLayout
from services.store.sqlite import TaskStore
from tests.e2e.harness import Instance, start_serve, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")
PUBLIC_NAME = "herald.test"


def _serve(data: Path, runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`herald serve` that is expected to exit by itself (a refusal)."""
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HERALD_DATA_DIR": str(data)}
    return subprocess.run([sys.executable, "-m", "embedded", "serve", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _output(inst: Instance) -> str:
    """What `herald serve` printed up to now."""
    seen = [inst.started_output]
    while not inst.lines.empty():
        seen.append(inst.lines.get_nowait())
    return "".join(seen)


def _free_port(host: str = "0.0.0.0") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a certificate it signed for PUBLIC_NAME, made with openssl here."""
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Herald test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    run("req", *ec, "-keyout", "key.pem", "-out", "cert.csr", "-subj", f"/CN={PUBLIC_NAME}")
    (d / "ext.cnf").write_text(f"subjectAltName=DNS:{PUBLIC_NAME}\n")
    run("x509", "-req", "-in", "cert.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}


def _client_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx


def _raw_request(port: int, host_header: str, path: str = "/api/health", *,
                 ctx: ssl.SSLContext | None = None, headers: dict[str, str] | None = None,
                 ) -> tuple[int, dict[str, Any] | None]:  # fmt: skip
    """One HTTP request to 127.0.0.1:`port` (over TLS to PUBLIC_NAME with `ctx`) with
    this Host header; its status and JSON body (None if not JSON)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn: socket.socket = ctx.wrap_socket(sock, server_hostname=PUBLIC_NAME) if ctx else sock
    with conn:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host_header}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def _token(data: Path) -> str:
    return (data / "token").read_text().strip()


def _wait_terminal(inst: Instance, ids: list[str], timeout: float = 120) -> dict[str, Any]:
    client = inst.client
    done: dict[str, Any] = {}

    def all_done() -> bool:
        for task_id in ids:
            if task_id not in done:
                task = client.get(task_id)
                if task["state"] in TERMINAL:
                    done[task_id] = task
        return len(done) == len(ids)

    wait_for(all_done, timeout=timeout, interval=0.2)
    return done


# ------------------------------------------------------------------ refusals


BAD_OPTIONS = [
    (["--services", "web,mailer"], "unknown service 'mailer'"),
    (["--services", ","], "name at least one"),
    (["--workers", "0"], "worker processes, 1-64"),
    (["--workers", "2", "--services", "web"], "--workers: no worker runs here"),
    (["--concurrency", "0"], "attempts at once, 1-256"),
    (["--services", "notifier", "--concurrency", "2"], "--concurrency: no worker runs here"),
    (["--backend", "postgres://db/1"], "--backend: unknown backend"),
    (["--backend", "redis://"], "names no host"),
    (["--backend", "redis://h:99999/0"], "the port is not a number in 1-65535"),
    (["--backend", "redis://h:6379/zero"], "the database is a number"),
    (["--listen", "0.0.0.0"], "no port"),
    (["--listen", "herald.example:8443"], "is not an IP address"),
    (["--listen", "::1:8443"], "an IPv6 address goes in brackets"),
    (["--listen", "127.0.0.1:0"], "the port must be 1-65535"),
    (["--listen", "127.0.0.1:8443", "--port", "8080"], "give one"),
    (["--services", "worker", "--listen", "127.0.0.1:8443"], "the web does not run here"),
    (["--listen", "0.0.0.0:8443"], "--allowed-host NAME"),
    (["--notifier-listen", "0.0.0.0:8444", "--allowed-host", "h.example"],
     "--tls-cert FILE --tls-key FILE, or say --insecure-http"),
    (["--listen", "0.0.0.0:8443", "--allowed-host", "h.example"],
     "--tls-cert FILE --tls-key FILE, or say --insecure-http"),
    (["--allowed-host", "https://h.example:8443"], "without scheme or port"),
    (["--tls-cert", "/nonexistent/cert.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"],
     "--tls-cert /nonexistent/c.pem: No such file or directory"),
    (["--tls-cert", "/dev/null", "--tls-key", "/dev/null", "--insecure-http"],
     "contradict each other"),
    (["--services", "worker,notifier", "--notifier-url", "wss://n.example:8444/ws"],
     "no web runs here"),
    (["--notifier-url", "https://n.example/ws"], "expected ws or wss://HOST:PORT"),
    (["--web-url", "https://w.example:8443"], "the web runs too"),
    (["--services", "notifier", "--web-url", "ftp://w.example"],
     "expected http or https://HOST:PORT"),
]


@pytest.mark.parametrize(("args", "message"), BAD_OPTIONS,
                         ids=[" ".join(a) for a, _ in BAD_OPTIONS])  # fmt: skip
def test_bad_serve_options_exit_2_with_a_clear_message(tmp_path, args, message):
    out = _serve(tmp_path / "data", tmp_path / "runtime", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr, out.stderr
    assert out.stderr.startswith("herald serve: error: ")
    # Refused before anything started: no service ran, no runtime file was written.
    assert not (tmp_path / "data" / "run" / "instance.json").exists()
    assert not (tmp_path / "data" / "logs").exists()


def test_help_names_the_roles_options():
    out = subprocess.run([sys.executable, "-m", "embedded", "serve", "--help"],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert out.returncode == 0
    for option in ("--services", "--workers", "--concurrency", "--backend", "--listen",
                   "--notifier-listen", "--allowed-host", "--tls-cert", "--tls-key",
                   "--insecure-http", "--notifier-url", "--web-url"):  # fmt: skip
        assert option in out.stdout
    assert "worker processes" in out.stdout and "attempts each worker process" in out.stdout


def test_the_backend_reaches_every_service(tmp_path):
    """`--backend URL` is on each service's command line (the services decide what they
    can do with it); the default passes none (the data dir's SQLite)."""
    url = "redis://10.0.0.5:6379/3"
    sup = Supervisor(DataLayout(tmp_path / "data"),
                     deployment=Deployment(backend=url, worker_processes=2))  # fmt: skip
    for name in ("web", "worker", "worker-2", "notifier"):
        command = sup.command(name)
        assert command[command.index("--backend") + 1] == url
    plain = Supervisor(DataLayout(tmp_path / "plain"))
    assert all("--backend" not in plain.command(n) for n in plain.services_here)


# ------------------------------------------------------------------ roles


def test_two_worker_processes_run_a_hundred_tasks_each_exactly_once(tmp_path, runtime_dir):
    data = tmp_path / "data"
    inst = start_serve(data, runtime_dir, "--workers", "2", "--concurrency", "2")
    try:
        status = inst.status()
        assert {"worker", "worker-2"} <= set(status)
        pids = {inst.service_pid("worker"), inst.service_pid("worker-2")}
        assert len(pids) == 2  # two processes, each its own dispatcher
        client = inst.client
        ids = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(100)]
        done = _wait_terminal(inst, ids)
        assert {t["state"] for t in done.values()} == {"succeeded"}
        for task_id in ids:
            started = [e for e in client.timeline(task_id) if e.type == EventType.STARTED]
            assert len(started) == 1, (task_id, started)  # run once: no lease was taken twice
            assert done[task_id]["attempt"] == 1
        info = json.loads((data / "run" / "instance.json").read_text())
        assert info["services"] == ["web", "worker", "worker-2", "notifier"]
    finally:
        assert inst.stop() == 0


def test_a_subset_runs_without_the_missing_service(tmp_path, runtime_dir):
    """`--services web,worker`: tasks complete, the notifier is reported as not run here
    (never started, never restarted), and health is ok."""
    data = tmp_path / "data"
    inst = start_serve(data, runtime_dir, "--services", "web,worker")
    try:
        printed = _output(inst)
        assert "Services   web, worker (not here: notifier)" in printed
        assert "(none known: the notifier runs elsewhere; give --notifier-url)" in printed
        client = inst.client
        ids = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(5)]
        done = _wait_terminal(inst, ids)
        assert {t["state"] for t in done.values()} == {"succeeded"}
        body = json.loads((data / "run" / "services.json").read_text())
        assert set(body["services"]) == {"web", "worker"}
        assert body["elsewhere"] == ["notifier"]
        assert client.health()["status"] == "ok"
        assert not (data / "logs" / "notifier.log").exists()  # it never ran here
        info = json.loads((data / "run" / "instance.json").read_text())
        assert info["services"] == ["web", "worker"] and info["ws"] == ""
    finally:
        assert inst.stop() == 0


def test_web_only_enqueues_and_a_worker_only_instance_runs_the_tasks(tmp_path, runtime_dir):
    data = tmp_path / "data"
    web = start_serve(data, runtime_dir, "--services", "web")
    try:
        client = web.client
        health = client.health()
        assert health["status"] == "ok" and set(health["services"]) == {"web"}
        ids = [client.submit("demo.answer", {"seconds": 0})["id"] for _ in range(10)]
        time.sleep(1.0)  # what a worker would need to pick one up: none is there
        assert {client.get(i)["state"] for i in ids} == {"queued"}
    finally:
        assert web.stop() == 0
    # The data dir's lock stays one instance's: the worker runs after the web stopped.
    worker = start_serve(data, runtime_dir, "--services", "worker")
    try:
        assert "API        (no web here)" in _output(worker)
        store = TaskStore(DataLayout(data).ledger_db)
        try:
            def states() -> set[str]:
                return {rec.state.value for i in ids if (rec := store.get_task(i)) is not None}

            wait_for(lambda: states() == {"succeeded"}, timeout=60, interval=0.2)
        finally:
            store.close()
    finally:
        assert worker.stop() == 0


# ------------------------------------------------------------------ beyond loopback


def test_tls_on_a_public_bind_with_the_host_check(tmp_path, runtime_dir, tls_files):
    """Web and notifier on 0.0.0.0 over TLS: a client that trusts the CA gets https and
    wss under the allowed name; plain HTTP, other names, loopback names (not a loopback
    bind) and the page's origin spelled with http are refused."""
    data = tmp_path / "data"
    web_port, ws_port = _free_port(), _free_port()
    inst = start_serve(data, runtime_dir, "--listen", f"0.0.0.0:{web_port}",
                       "--notifier-listen", f"0.0.0.0:{ws_port}",
                       "--allowed-host", PUBLIC_NAME, "--tls-cert", str(tls_files["cert"]),
                       "--tls-key", str(tls_files["key"]))  # fmt: skip
    try:
        printed = _output(inst)
        assert f"API        https://{PUBLIC_NAME}:{web_port}/api" in printed
        assert f"WebSocket  wss://{PUBLIC_NAME}:{ws_port}/ws" in printed
        assert "WARNING" not in printed
        ctx = _client_context(tls_files["ca"])
        token = _token(data)
        auth = {"Authorization": f"Bearer {token}"}
        status, body = _raw_request(web_port, f"{PUBLIC_NAME}:{web_port}", ctx=ctx, headers=auth)
        assert status == 200 and body is not None and body["status"] == "ok"
        assert body["ws"] == f"wss://{PUBLIC_NAME}:{ws_port}/ws"  # where clients find it
        for wrong in (f"127.0.0.1:{web_port}", f"localhost:{web_port}",
                      f"evil.example:{web_port}", PUBLIC_NAME, f"{PUBLIC_NAME}:1"):  # fmt: skip
            assert _raw_request(web_port, wrong, ctx=ctx)[0] == 403, wrong
        page = f"https://{PUBLIC_NAME}:{web_port}"
        assert _raw_request(web_port, f"{PUBLIC_NAME}:{web_port}", "/api/me", ctx=ctx,
                            headers={**auth, "Origin": page})[0] == 200  # fmt: skip
        assert _raw_request(web_port, f"{PUBLIC_NAME}:{web_port}", "/api/me", ctx=ctx,
                            headers={**auth, "Origin": f"http://{PUBLIC_NAME}:{web_port}"},
                            )[0] == 403  # fmt: skip
        # The sign-in link names the public https URL.
        ticket = subprocess.run(
            ["curl", "-sS", "--cacert", str(tls_files["ca"]), "--resolve",
             f"{PUBLIC_NAME}:{web_port}:127.0.0.1", "-X", "POST", "-H",
             f"Authorization: Bearer {token}", f"{page}/api/login-tickets"],
            capture_output=True, text=True, timeout=30)  # fmt: skip
        assert json.loads(ticket.stdout)["url"].startswith(f"{page}/login?ticket=")
        # Plain HTTP on the TLS port gets no HTTP answer.
        with socket.create_connection(("127.0.0.1", web_port), timeout=10) as plain:
            plain.sendall(f"GET /api/health HTTP/1.1\r\nHost: {PUBLIC_NAME}:{web_port}\r\n"
                          "Connection: close\r\n\r\n".encode())  # fmt: skip
            try:
                answer = plain.recv(65536)
            except ConnectionResetError:
                answer = b""
        assert not answer.startswith(b"HTTP/")
        # A client that does not trust the CA is refused at the handshake.
        with pytest.raises(ssl.SSLCertVerificationError):
            _raw_request(web_port, f"{PUBLIC_NAME}:{web_port}", ctx=ssl.create_default_context())
        # wss: the welcome, with the page's https origin; http origin, loopback Host refused.
        uri = f"wss://{PUBLIC_NAME}:{ws_port}/ws"
        with connect(uri, ssl=ctx, sock=socket.create_connection(("127.0.0.1", ws_port)),
                     additional_headers={**auth, "Origin": page}) as ws:  # fmt: skip
            welcome = json.loads(ws.recv(timeout=10))
            assert welcome["type"] == "welcome" and welcome["principal"] == "local"
        with pytest.raises(InvalidStatus) as refused:
            connect(uri, ssl=ctx, sock=socket.create_connection(("127.0.0.1", ws_port)),
                    additional_headers={**auth, "Origin": f"http://{PUBLIC_NAME}:{web_port}"})
        assert refused.value.response.status_code == 403
        assert _raw_request(ws_port, f"127.0.0.1:{ws_port}", "/ws", ctx=ctx,
                            headers={**auth, "Upgrade": "websocket", "Connection": "Upgrade",
                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                     "Sec-WebSocket-Version": "13"})[0] == 403  # fmt: skip
    finally:
        assert inst.stop() == 0


def test_insecure_http_on_a_public_bind_is_said_and_logged(tmp_path, runtime_dir):
    data = tmp_path / "data"
    web_port = _free_port()
    inst = start_serve(data, runtime_dir, "--listen", f"0.0.0.0:{web_port}",
                       "--allowed-host", PUBLIC_NAME, "--insecure-http")  # fmt: skip
    try:
        printed = _output(inst)
        assert "WARNING    plain HTTP beyond loopback (--insecure-http): web on 0.0.0.0" in printed
        assert "herald.serve WARNING: serving plain HTTP beyond loopback" in printed
        log = (data / "logs" / "web.log").read_text()
        assert "WARNING" in log and "--insecure-http" in log
        status, body = _raw_request(web_port, f"{PUBLIC_NAME}:{web_port}")
        assert status == 200 and body is not None and body["status"] == "ok"
        assert _raw_request(web_port, f"127.0.0.1:{web_port}")[0] == 403
        # The notifier stayed on loopback, where it is reached by the loopback names.
        info = json.loads((data / "run" / "instance.json").read_text())
        assert info["api"] == f"http://{PUBLIC_NAME}:{web_port}"
        assert info["ws"].startswith("ws://127.0.0.1:")
    finally:
        assert inst.stop() == 0
