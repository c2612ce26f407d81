"""The supervisor on real child processes: readiness, restarts, giving up, stopping."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat

import pytest

from embedded import supervisor
from embedded.supervisor import ServiceState, Supervisor, SupervisorError, backoff_delay
from services.auth import ensure_install_token
from services.layout import DataLayout


@pytest.fixture
def layout(tmp_path):
    layout = DataLayout(tmp_path / "data")
    ensure_install_token(layout)
    return layout


async def test_start_restart_and_stop(layout):
    states: list[tuple[str, ServiceState]] = []
    sup = Supervisor(layout, on_state=lambda st: states.append((st.name, st.state)))
    await sup.start()
    try:
        assert sup.all_ready
        web = sup.status()["web"]
        assert web.port and sup.api_url.endswith(f":{web.port}")
        old = sup.pid("worker")
        os.kill(old, signal.SIGKILL)
        for _ in range(500):
            st = sup.status()["worker"]
            if st.state is ServiceState.READY and st.pid not in (None, old):
                break
            await asyncio.sleep(0.02)
        assert sup.status()["worker"].restarts == 1
        assert ("worker", ServiceState.RESTARTING) in states
        pids = [sup.pid(n) for n in ("web", "worker", "notifier")]
    finally:
        await sup.stop()
    assert all(st.state is ServiceState.STOPPED for st in sup.status().values())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # every child's log is kept on disk
    assert (layout.log_dir / "worker.log").exists()


async def test_a_service_that_cannot_start_fails_start_with_its_reason(layout):
    layout.config_file.write_text("this is [not toml")  # every service refuses to start
    failed = []
    sup = Supervisor(layout, on_state=lambda st: failed.append(st.name)
                     if st.state is ServiceState.FAILED else None)  # fmt: skip
    with pytest.raises(SupervisorError) as info:
        await sup.start()
    # the reason each child gave (HERALD_FATAL), not "exited with code 2"
    assert "config.toml" in str(info.value) and "worker:" in str(info.value)
    assert "worker" in failed
    st = sup.status()["worker"]
    assert st.state is ServiceState.FAILED and "config.toml" in st.reason
    assert any("config.toml" in line for line in sup.logs("worker"))


async def test_a_port_in_use_is_named(layout):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sup = Supervisor(layout, web_port=port)
        with pytest.raises(SupervisorError) as info:
            await sup.start()
    assert f"web: port {port} is in use" in str(info.value)


async def test_a_free_port_taken_before_the_service_listens_is_replaced(layout):
    sup = Supervisor(layout)  # free ports chosen now, used a moment later
    chosen = sup.status()["web"].port
    with socket.socket() as thief:  # another program's connection got it meanwhile
        thief.bind(("127.0.0.1", chosen))
        thief.listen()
        await sup.start()
        try:
            assert sup.all_ready
            assert sup.status()["web"].port != chosen
            assert sup.api_url.endswith(f":{sup.status()['web'].port}")
        finally:
            await sup.stop()


def test_backoff_doubles_to_its_cap():
    assert [backoff_delay(n) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.6]
    assert backoff_delay(20) == 30.0
    assert backoff_delay(1, 0.5, 2.0) == 0.5 and backoff_delay(9, 0.5, 2.0) == 2.0


async def test_after_start_it_never_gives_up(layout):
    """A service that keeps failing after start-up is retried with growing delays, for as
    long as it takes, its reason and next try in the status; once the cause is gone it is
    back by itself."""
    sup = Supervisor(layout, backoff_first=0.05, backoff_max=0.3)
    await sup.start()
    try:
        layout.config_file.write_text("this is [not toml")  # from now on it cannot start
        os.kill(sup.pid("worker"), signal.SIGKILL)
        seen: set[float] = set()
        for _ in range(1000):  # many more exits than any "give up" threshold
            st = sup.status()["worker"]
            assert st.state is not ServiceState.FAILED
            if st.next_try is not None:
                seen.add(st.next_try)
            if st.restarts >= 8:
                break
            await asyncio.sleep(0.02)
        st = sup.status()["worker"]
        assert st.restarts >= 8 and "config.toml" in st.reason
        assert len(seen) >= 3  # each wait announced when it ends
        status_file = json.loads(layout.status_file.read_text())["services"]["worker"]
        assert "config.toml" in status_file["reason"] and "since" in status_file
        layout.config_file.unlink()  # the cause goes away: it is back with no help
        for _ in range(1000):
            if sup.status()["worker"].state is ServiceState.READY:
                break
            await asyncio.sleep(0.02)
        assert sup.status()["worker"].state is ServiceState.READY
    finally:
        await sup.stop()


async def test_a_log_file_that_cannot_be_written_falls_back_to_stderr(layout, capfd,
                                                                      monkeypatch):  # fmt: skip
    monkeypatch.setattr(supervisor, "LOG_RETRY", 0.1)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    (layout.log_dir / "worker.log").mkdir()  # cannot be opened as a file
    sup = Supervisor(layout)
    await sup.start()
    try:
        os.kill(sup.pid("worker"), signal.SIGKILL)
        for _ in range(500):
            if "worker: killed by SIGKILL" in capfd.readouterr().err:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the worker's lines never reached stderr")
        (layout.log_dir / "worker.log").rmdir()  # writable again: the file is used again
        await asyncio.sleep(0.2)
        for _ in range(500):
            if sup.status()["worker"].state is ServiceState.READY:
                break
            await asyncio.sleep(0.02)
        os.kill(sup.pid("worker"), signal.SIGKILL)
        for _ in range(500):
            path = layout.log_dir / "worker.log"
            if path.is_file() and "killed by SIGKILL" in path.read_text():
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the log file was not written again")
    finally:
        await sup.stop()


def test_private_files_are_owner_only(layout):
    for path in (layout.token_file, layout.auth_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.root.stat().st_mode) == 0o700
