"""The desktop app on a remote Herald (a saved server: URL + token) instead of its own.

The "remote" server is a real `herald serve` in another data dir and another runtime dir,
started by the test, not by the app (loopback: what makes it remote is that the app did not
start it and finds it by URL alone). The TLS part of the client is tested against a small
aiohttp + websockets server over https/wss with a CA made for the test (openssl).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from PySide6.QtCore import QSettings, Qt

from desktop.app import DesktopApp
from desktop.servers import CheckFailure, Server, ServerBook, ServerCheckError, check_server
from embedded.client import AsyncEventStream, TlsFailure, tls_context
from tests.desktop.test_app import WAIT
from tests.e2e.harness import Instance, os_environ, pid_alive, start_serve


def children() -> set[int]:
    """The PIDs of this process's children (every thread's: Qt and asyncio may spawn from
    either)."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            found.update(int(p) for p in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return {p for p in found if pid_alive(p)}


class Remote:
    """A `herald serve` the test started: its URL and owner token, as a user would copy."""

    def __init__(self, serve: Instance) -> None:
        self.serve = serve
        with os_environ(serve.env):
            client = serve.client
        self.url = client.api
        self.token = (serve.data_dir / "token").read_text().strip()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This app's own runtime and config dirs (the tokens file goes in the config dir)."""
    rt = tmp_path / "runtime"
    rt.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(rt))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("HERALD_SERVER", raising=False)
    return tmp_path


@pytest.fixture
def remote(env: Path) -> Iterator[Remote]:
    serve = start_serve(env / "remote-data", env / "remote-runtime")
    try:
        yield Remote(serve)
    finally:
        serve.stop()


class App:
    """A DesktopApp on the test's qasync loop, with its settings in an ini file."""

    def __init__(self, env: Path, qtbot, server: str | None = None) -> None:
        self.qtbot = qtbot
        self.settings_file = env / "settings.ini"
        self.settings = QSettings(str(self.settings_file), QSettings.Format.IniFormat)
        self.app = DesktopApp(env / "data", self.settings, server=server)
        self.task = asyncio.ensure_future(self.app.run())

    @property
    def window(self):
        return self.app.window

    @property
    def live(self) -> bool:
        return self.window.lights.connection.state == "connected"

    def wait_live(self) -> None:
        self.qtbot.waitUntil(lambda: self.live and self.window.catalog_list.count() > 0,
                             timeout=WAIT)  # fmt: skip

    def run_task(self, name: str, **values) -> str:
        w = self.window
        w.select_catalog_task(name)
        w.form.set_values(values)
        before = {t["id"] for t in self.app.model.all_tasks()}
        self.qtbot.mouseClick(w.form.run_button, Qt.MouseButton.LeftButton)
        self.qtbot.waitUntil(
            lambda: bool({t["id"] for t in self.app.model.all_tasks()} - before), timeout=WAIT
        )
        (task_id,) = {t["id"] for t in self.app.model.all_tasks()} - before
        return task_id

    def state(self, task_id: str) -> str | None:
        task = self.app.model.task_by_id(task_id)
        return task["state"] if task else None

    def wait_state(self, task_id: str, state: str) -> None:
        self.qtbot.waitUntil(lambda: self.state(task_id) == state, timeout=WAIT)

    def quit(self) -> None:
        asyncio.ensure_future(self.app.quit(ask=False))
        self.qtbot.waitUntil(self.task.done, timeout=WAIT)
        assert self.task.result() == 0


def save(env: Path, name: str, url: str, token: str) -> ServerBook:
    settings = QSettings(str(env / "settings.ini"), QSettings.Format.IniFormat)
    book = ServerBook(settings)
    book.save(Server(name, url), token)
    return book


def tokens_file(env: Path) -> Path:
    return env / "config" / "herald" / "server-tokens.json"


# ------------------------------------------------------------------ the remote server


def test_the_app_runs_tasks_on_a_remote_server_and_starts_no_service(env, remote, aloop,
                                                                     qtbot):  # fmt: skip
    save(env, "lab", remote.url, remote.token)
    before = children()  # the remote `herald serve` is one (the test started it)
    r = App(env, qtbot, server="lab")
    try:
        r.wait_live()
        assert not r.app.monitor.owns_services and r.app.monitor.pids() == []
        assert r.window.server_label.text() == "Server: lab"
        assert r.window.windowTitle().startswith("Herald on lab")
        # Local-only actions are off, each saying why.
        assert not r.window.restart_action.isEnabled()
        assert "server" in r.window.restart_action.toolTip()
        assert not r.window.logs_action.isEnabled()
        assert r.window.open_browser_action.isEnabled()  # a loopback server: its links work

        task_id = r.run_task("demo.answer", seconds=0.5)
        r.wait_state(task_id, "succeeded")
        task = r.app.model.task_by_id(task_id)
        assert task["result"] == 42
        assert r.app.model.index(r.app.model.row_of(task_id), 6).data() == "42"
        # It ran on the remote server: its own ledger has it.
        assert remote.serve.client.get(task_id)["state"] == "succeeded"

        long_id = r.run_task("demo.answer", seconds=60)
        r.wait_state(long_id, "running")
        assert "running" in r.window.windowTitle()
        r.window.select_task(long_id)
        qtbot.keyClick(r.window.table, Qt.Key.Key_Delete)
        r.wait_state(long_id, "cancelled")

        # A task submitted on the server by someone else with the same token shows up live.
        out = remote.serve.cli("submit", "demo.answer", "seconds=0", "--json")
        assert out.returncode == 0, out.stderr
        other = json.loads(out.stdout)["id"]
        r.wait_state(other, "succeeded")

        assert children() == before  # the app started no supervisor, no service
    finally:
        r.quit()
    assert remote.serve.proc.poll() is None  # quitting leaves the server alone


def test_the_choice_survives_a_restart_of_the_app(env, remote, aloop, qtbot):
    save(env, "lab", remote.url, remote.token)
    r = App(env, qtbot, server="lab")
    r.wait_live()
    task_id = r.run_task("demo.answer", seconds=0)
    r.wait_state(task_id, "succeeded")
    r.quit()

    again = App(env, qtbot)  # no --server: the last choice
    try:
        again.wait_live()
        assert again.app.monitor.remote is not None and again.app.monitor.remote.name == "lab"
        assert not again.app.monitor.owns_services
        again.wait_state(task_id, "succeeded")  # the server's history
    finally:
        again.quit()


def test_a_lost_connection_reconnects_and_resumes_without_duplicates(env, remote, aloop,
                                                                    qtbot):  # fmt: skip
    save(env, "lab", remote.url, remote.token)
    r = App(env, qtbot, server="lab")
    try:
        r.wait_live()
        states: list[str] = []
        seqs: list[int] = []
        r.app.bridge.connection_changed.connect(lambda state, _retry: states.append(state))
        r.app.bridge.events_received.connect(lambda events: seqs.extend(e.seq for e in events))
        first = r.run_task("demo.answer", seconds=0)
        r.wait_state(first, "succeeded")
        os.kill(remote.serve.service_pid("notifier"), signal.SIGKILL)
        qtbot.waitUntil(lambda: "reconnecting" in states, timeout=WAIT)
        assert "reconnecting" in r.window.lights.connection.text() or r.live
        # Meanwhile a task runs on the server: its events are replayed on reconnection.
        out = remote.serve.cli("submit", "demo.answer", "seconds=0", "--json")
        assert out.returncode == 0, out.stderr
        missed = json.loads(out.stdout)["id"]
        qtbot.waitUntil(lambda: r.live, timeout=WAIT)
        r.wait_state(missed, "succeeded")
        assert seqs == sorted(set(seqs))  # each event once, in order
    finally:
        r.quit()


# ------------------------------------------------------------------------- the dialog


def open_dialog(r: App):
    r.window.connect_action.trigger()
    box = r.app.server_dialog
    assert box is not None and box.isVisible()
    return box


def test_the_dialog_refuses_a_wrong_token_and_saves_nothing(env, remote, aloop, qtbot):
    save(env, "lab", remote.url, remote.token)
    r = App(env, qtbot, server="lab")
    try:
        r.wait_live()
        tokens_before = tokens_file(env).read_bytes()
        box = open_dialog(r)
        assert box.token_edit.echoMode() == box.token_edit.EchoMode.Password
        box.saved_box.setCurrentIndex(0)  # New server…
        box.fill("team", remote.url, "not-the-token")
        qtbot.mouseClick(box.connect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "401" in box.result_text(), timeout=WAIT)
        assert "refused the token" in box.result_text()
        assert box.isVisible()  # still open, to fix the token
        assert ServerBook(QSettings(str(env / "settings.ini"),
                                    QSettings.Format.IniFormat)).names() == ["lab"]  # fmt: skip
        assert tokens_file(env).read_bytes() == tokens_before
        assert r.app.monitor.remote.name == "lab"  # still on the server it was on

        # Test with the right token passes and still saves nothing; Connect saves it.
        box.fill("team", remote.url, remote.token)
        qtbot.mouseClick(box.test_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "answers at" in box.result_text(), timeout=WAIT)
        assert tokens_file(env).read_bytes() == tokens_before
        qtbot.mouseClick(box.connect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: r.app.monitor.remote.name == "team" and r.live, timeout=WAIT)
        assert r.window.server_label.text() == "Server: team"
        assert r.app.server_dialog is None
        r.wait_live()
    finally:
        r.quit()

    settings = QSettings(str(env / "settings.ini"), QSettings.Format.IniFormat)
    assert ServerBook(settings).names() == ["lab", "team"]
    assert settings.value("servers/current") == "team"
    # The tokens are in their own owner-only file, never in the shared ini.
    path = tokens_file(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["tokens"] == {"lab": remote.token, "team": remote.token}
    assert remote.token not in (env / "settings.ini").read_text()


def test_the_dialog_says_what_is_wrong_with_the_server(env, remote, aloop, qtbot):
    save(env, "lab", remote.url, remote.token)
    r = App(env, qtbot, server="lab")
    try:
        r.wait_live()
        box = open_dialog(r)
        box.saved_box.setCurrentIndex(0)
        cases = [
            ("http://127.0.0.1:1", remote.token, "Cannot reach"),  # nothing listens
            (remote.url.replace("http:", "https:"), remote.token, "TLS failed"),
            (remote.url + "/nowhere", remote.token, "no path"),
        ]
        for url, token, said in cases:
            box.fill("x", url, token)
            qtbot.mouseClick(box.test_button, Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda s=said: s in box.result_text(), timeout=WAIT)
        box.reject()
    finally:
        r.quit()


def test_switching_to_this_computer_and_back(env, remote, aloop, qtbot):
    save(env, "lab", remote.url, remote.token)
    r = App(env, qtbot, server="lab")
    try:
        r.wait_live()
        on_lab = r.run_task("demo.answer", seconds=0)
        r.wait_state(on_lab, "succeeded")
        (local,) = [a for a in r.window.servers_menu.actions() if a.text() == "This computer"]
        local.trigger()
        qtbot.waitUntil(lambda: r.app.monitor.owns_services and r.live, timeout=WAIT)
        assert r.window.server_label.text() == "This computer"
        assert r.window.restart_action.isEnabled() and r.window.logs_action.isEnabled()
        assert r.state(on_lab) is None  # another server's task is not in this table
        pids = r.app.monitor.pids()
        assert len(pids) == 3
        mine = r.run_task("demo.answer", seconds=0)
        r.wait_state(mine, "succeeded")

        (lab,) = [a for a in r.window.servers_menu.actions() if a.text() == "lab"]
        lab.trigger()
        qtbot.waitUntil(lambda: r.app.monitor.remote is not None and r.live, timeout=WAIT)
        qtbot.waitUntil(lambda: not any(pid_alive(p) for p in pids), timeout=WAIT)
        r.wait_state(on_lab, "succeeded")
        assert r.state(mine) is None
    finally:
        r.quit()


def test_herald_server_names_the_saved_server(env, remote, monkeypatch):
    book = save(env, "lab", remote.url, remote.token)
    assert book.startup_choice() == ""  # nothing chosen yet: this computer
    monkeypatch.setenv("HERALD_SERVER", "lab")
    assert book.startup_choice() == "lab"
    assert book.startup_choice("local") == ""  # --server beats the environment
    with pytest.raises(KeyError, match="lab"):
        book.startup_choice("nope")  # the message lists the saved ones


# ------------------------------------------------------------------------------- TLS


def lan_address() -> str | None:
    """This machine's address on a network (not loopback), if it has one: where the
    route to the outside leaves from (a UDP connect sends nothing)."""
    import socket

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


LAN = lan_address()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a certificate it signed for 127.0.0.1 (and another CA that signed
    nothing here)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN=Herald test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    names = "IP:127.0.0.1" + (f",IP:{LAN}" if LAN else "")
    (d / "ext.cnf").write_text(f"subjectAltName={names}\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")  # fmt: skip
    return {"ca": d / "ca.pem", "other": d / "other-ca.pem", "cert": d / "server.pem",
            "key": d / "server.key"}  # fmt: skip


@pytest.fixture
async def tls_herald(pki: dict[str, Path]):
    """An https API (health, me) and a wss notifier (a welcome, then one event) on
    127.0.0.1, answering as Herald does; yields (api URL, token)."""
    from aiohttp import web
    from websockets.asyncio.server import serve

    from services.core.envelope import encode_welcome

    token = "tls-test-token"
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki["cert"], pki["key"])

    def handshake(conn, request):
        if request.headers.get("Authorization") != f"Bearer {token}":
            return conn.respond(401, "unauthorized\n")
        return None

    async def stream(conn):
        await conn.send(encode_welcome("local", 0, False))
        await conn.wait_closed()

    notifier = await serve(stream, "127.0.0.1", 0, ssl=server_tls, process_request=handshake)
    ws_port = notifier.sockets[0].getsockname()[1]

    async def health(request):
        body = {"status": "ok", "services": {"web": {"state": "ready"}}}
        if request.headers.get("Authorization") == f"Bearer {token}":
            body["version"] = "test"
            body["services"]["notifier"] = {"state": "ready", "port": ws_port,
                                            "url": f"ws://127.0.0.1:{ws_port}/ws"}  # fmt: skip
        return web.json_response(body)

    async def me(request):
        if request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"error": {"code": "unauthorized",
                                                "message": "A valid bearer token is required."}},
                                     status=401)  # fmt: skip
        return web.json_response({"principal": "local", "owner": True})

    app = web.Application()
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/me", me)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"https://127.0.0.1:{port}", token
    finally:
        await runner.cleanup()
        notifier.close()
        await notifier.wait_closed()


async def test_https_and_wss_with_the_servers_ca_file(tls_herald, pki):
    api, token = tls_herald
    found = await check_server(api, token, str(pki["ca"]))
    assert found.api == api and found.principal == "local"
    assert found.ws.startswith("wss://127.0.0.1:")  # https API: wss notifier, same host
    stream = AsyncEventStream(found.ws, token, tls=found.tls, give_up_after=0)
    welcome = await stream.open()
    assert welcome.type == "welcome"
    await stream.close()


async def test_a_self_signed_server_without_its_ca_is_a_tls_failure(tls_herald, pki):
    api, token = tls_herald
    for ca_file in ("", str(pki["other"])):  # the system's trust store; another CA
        with pytest.raises(ServerCheckError) as caught:
            await check_server(api, token, ca_file)
        assert caught.value.failure is CheckFailure.TLS
        assert "certificate could not be verified" in caught.value.message
    found = await check_server(api, token, str(pki["ca"]))
    stream = AsyncEventStream(found.ws, token, tls=tls_context(pki["other"]), give_up_after=0)
    with pytest.raises(TlsFailure):
        await stream.open()
    with pytest.raises(ServerCheckError) as caught:
        await check_server(api, "wrong", str(pki["ca"]))
    assert caught.value.failure is CheckFailure.UNAUTHORIZED and "401" in caught.value.message


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_remote(env: Path, pki: dict[str, Path]) -> Iterator[Remote]:
    """A real `herald serve` over https and wss, its certificate signed by the test's CA."""
    serve = start_serve(env / "tls-data", env / "tls-runtime",
                        "--listen", f"127.0.0.1:{free_port()}",
                        "--notifier-listen", f"127.0.0.1:{free_port()}",
                        "--allowed-host", "127.0.0.1", "--tls-cert", str(pki["cert"]),
                        "--tls-key", str(pki["key"]))  # fmt: skip
    try:
        remote = Remote(serve)
        assert remote.url.startswith("https://")
        yield remote
    finally:
        serve.stop()


def test_the_app_on_a_herald_served_over_https_and_wss(env, remote, tls_remote, pki, aloop,
                                                      qtbot):  # fmt: skip
    save(env, "lab", remote.url, remote.token)
    r = App(env, qtbot, server="lab")
    try:
        r.wait_live()
        box = open_dialog(r)
        box.saved_box.setCurrentIndex(0)
        box.fill("secure", tls_remote.url, tls_remote.token)  # no CA file: not trusted
        qtbot.mouseClick(box.connect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "certificate could not be verified" in box.result_text(),
                        timeout=WAIT)  # fmt: skip
        assert "secure" not in ServerBook(r.settings).names()
        box.fill("secure", tls_remote.url, tls_remote.token, str(pki["ca"]))
        qtbot.mouseClick(box.connect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: r.app.monitor.remote.name == "secure", timeout=WAIT)
        r.wait_live()
        assert r.app.monitor.api_url.startswith("https://")
        assert r.app.monitor.ws_url.startswith("wss://")
        task_id = r.run_task("demo.answer", seconds=0.3)
        r.wait_state(task_id, "succeeded")
        assert r.app.model.task_by_id(task_id)["result"] == 42
    finally:
        r.quit()


@pytest.mark.skipif(LAN is None, reason="this machine has no address beyond loopback")
def test_a_server_on_another_address_over_tls(env, pki, aloop, qtbot):
    """A server bound beyond loopback (0.0.0.0) and reached by its network address, as
    from another machine: the Host check lets the app in by that name, and Open in
    browser is offered only because the server's sign-in links name that address."""
    serve = start_serve(env / "lan-data", env / "lan-runtime",
                        "--listen", f"0.0.0.0:{free_port()}",
                        "--notifier-listen", f"0.0.0.0:{free_port()}",
                        "--allowed-host", str(LAN), "--tls-cert", str(pki["cert"]),
                        "--tls-key", str(pki["key"]))  # fmt: skip
    try:
        port = urlsplit(Remote(serve).url).port
        url = f"https://{LAN}:{port}"
        token = (serve.data_dir / "token").read_text().strip()
        book = save(env, "lan", url, token)
        book.save(Server("lan", url, str(pki["ca"])), token)
        assert not book.get("lan").is_loopback
        r = App(env, qtbot, server="lan")
        try:
            r.wait_live()
            assert r.app.monitor.ws_url.startswith(f"wss://{LAN}:")
            qtbot.waitUntil(r.window.open_browser_action.isEnabled, timeout=WAIT)
            task_id = r.run_task("demo.answer", seconds=0)
            r.wait_state(task_id, "succeeded")
            # A path a result names is the server's: a file of that name here is another.
            view = r.window.detail.result_view
            opened: list[object] = []
            view.opener = lambda url: opened.append(url) or True
            assert not view.open_path(str(serve.data_dir))
            assert "on the server lan, not on this computer" in view.problem.text()
            assert opened == []
        finally:
            r.quit()
    finally:
        serve.stop()
