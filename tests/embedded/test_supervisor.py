"""The supervisor on real child processes: readiness, restarts, giving up, stopping."""

from __future__ import annotations

import asyncio
import os
import signal
import stat

import pytest

from embedded.supervisor import ServiceState, Supervisor, SupervisorError
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


async def test_gives_up_visibly_after_repeated_failures(layout):
    layout.config_file.write_text("this is [not toml")  # every service refuses to start
    failed = []
    sup = Supervisor(layout, max_failures=2,
                     on_state=lambda st: failed.append(st.name)
                     if st.state is ServiceState.FAILED else None)  # fmt: skip
    with pytest.raises(SupervisorError) as info:
        await sup.start()
    assert "gave up" in str(info.value)
    assert "worker" in failed
    assert sup.status()["worker"].state is ServiceState.FAILED
    assert any("config.toml" in line for line in sup.logs("worker"))


def test_private_files_are_owner_only(layout):
    for path in (layout.token_file, layout.auth_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.root.stat().st_mode) == 0o700
