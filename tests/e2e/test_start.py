"""Start-up, on real processes: what `herald serve` keeps out of its own process on its way
to ready, where the runtime file's version comes from, and that ready means a round trip
works at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedded.instance import read_instance
from services.auth import ensure_install_token
from services.layout import DataLayout
from tests.e2e.harness import collect_until_terminal, os_environ, start_serve

REPO = Path(__file__).resolve().parents[2]


def _openssl(pid: int) -> set[str]:
    """The OpenSSL libraries a live process has mapped."""
    with open(f"/proc/{pid}/maps") as f:
        libs = {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}
    return {lib for lib in libs if lib.startswith(("libcrypto", "libssl"))}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
def test_serve_runs_its_supervisor_without_openssl_and_ready_means_a_round_trip_works(
        tmp_path_factory: pytest.TempPathFactory, runtime_dir: Path) -> None:  # fmt: skip
    """The `herald serve` process speaks only to its services on 127.0.0.1: OpenSSL (which
    asyncio and hashlib load) stays out of it, tokens still work, and the runtime file says
    the version the web serves. A task submitted the moment it says it serves comes back."""
    herald = start_serve(tmp_path_factory.mktemp("data"), runtime_dir)
    try:
        client = herald.client
        with client.events() as stream:
            task = client.submit("demo.answer", {"seconds": 0})
            events = collect_until_terminal(stream, task["id"])
        assert events[-1].data["result"] == 42
        assert _openssl(herald.proc.pid) == set()
        with os_environ(herald.env):
            info = read_instance(herald.data_dir)
        assert info is not None
        assert info.version == client.health()["version"]
    finally:
        assert herald.stop() == 0


def test_the_web_says_its_version_when_ready(tmp_path: Path) -> None:
    """The web's readiness line carries the version it serves (as its health says it), so
    that the supervisor need not read the package metadata itself on the way to ready."""
    data = tmp_path / "data"
    token = ensure_install_token(DataLayout(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.web", "--data-dir", str(data), "--port", "0"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = next(out for out in proc.stdout if out.startswith("HERALD_READY "))
        ready = json.loads(line.removeprefix("HERALD_READY "))
        health = subprocess.run(
            [sys.executable, "-c",
             "import sys, json, urllib.request as u\n"
             "r = u.Request(f'http://127.0.0.1:{sys.argv[1]}/api/health',"
             " headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
             "print(json.load(u.urlopen(r, timeout=20))['version'])",
             str(ready["port"]), token],
            capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        assert ready["version"] == health.stdout.strip()
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()


def test_the_supervisor_reads_no_package_metadata_to_start(
    tmp_path: Path, runtime_dir: Path
) -> None:
    """Starting an instance (the services, then the runtime file) imports no
    importlib.metadata in the supervisor's process: the version comes from the web."""
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from embedded.instance import Instance\n"
        "async def main():\n"
        "    inst = Instance(Path(sys.argv[1]))\n"
        "    info = await inst.start()\n"
        "    print('importlib.metadata' in sys.modules, info.version)\n"
        "    await inst.stop()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "data")], cwd=REPO, capture_output=True,
        text=True, timeout=60, env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    metadata, version = out.stdout.split()
    assert metadata == "False"
    assert version and version != "None"
