"""The notifier as the supervisor runs it: `python -m services.notifier`, a real child."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from services.auth import DEFAULT_PRINCIPAL
from services.runtime import parse_ready

REPO = Path(__file__).resolve().parents[3]
LOCAL = DEFAULT_PRINCIPAL


class Child:
    """A notifier process and what its readiness line said."""

    def __init__(self, proc: asyncio.subprocess.Process, info: dict, log: Path) -> None:
        self.proc = proc
        self.info = info
        self.log = log

    @property
    def url(self) -> str:
        return self.info["url"]


async def start_child(layout, web_port: int, log: Path) -> Child:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.notifier", "--data-dir", str(layout.root),
            "--port", "0", "--web-port", str(web_port),
            cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(15):
        while True:
            line = await proc.stdout.readline()
            assert line, f"the notifier exited before it was ready:\n{log.read_text()}"
            info = parse_ready(line.decode())
            if info is not None:
                break
    assert info["service"] == "notifier"
    assert info["url"] == f"ws://127.0.0.1:{info['port']}/ws"
    return Child(proc, info, log)


async def finish(child: Child) -> int:
    """Wait for the child to exit (killing it if the test left it running)."""
    proc = child.proc
    if proc.returncode is None:
        try:
            async with asyncio.timeout(10):
                return await proc.wait()
        except TimeoutError:
            proc.kill()
    return await proc.wait()


async def test_a_restarted_notifier_sends_exactly_what_was_missed(
    layout, tokens, web_port, writer, open_client, recv, recv_events, start_session, tmp_path
):
    log = tmp_path / "notifier.log"
    child = await start_child(layout, web_port, log)
    try:
        ws = await open_client(child.url)
        await start_session(ws)
        before = writer.lifecycle(LOCAL)
        writer.wake()
        received = await recv_events(ws, len(before))
        assert [m["seq"] for m in received] == [e.seq for e in before]
        last_seq = received[-1]["seq"]

        child.proc.kill()
        assert await child.proc.wait() == -signal.SIGKILL
        async with asyncio.timeout(5):
            await ws.wait_closed()
        assert ws.close_code == 1006  # no closing handshake: it was killed

        missed = writer.lifecycle(LOCAL)
        writer.lifecycle("bob")
        missed += writer.lifecycle(LOCAL, steps=1)
        writer.wake()  # nobody listens: harmless

        child = await start_child(layout, web_port, log)
        ws = await open_client(child.url, since=last_seq)
        welcome = await recv(ws)
        assert welcome["reset"] is False and welcome["head"] == writer.store.head(LOCAL)
        replayed = await recv_events(ws, len(missed))
        assert [(m["seq"], m["event"]) for m in replayed] == [(e.seq, e.type.value) for e in missed]
        assert await recv(ws) == {"v": 1, "type": "caught_up", "seq": missed[-1].seq}

        live = writer.queued(LOCAL)
        writer.wake()
        assert [m["seq"] for m in await recv_events(ws, 1)] == [live.seq]

        # End of stdin is the supervisor's "stop now": clients hear "going away".
        assert child.proc.stdin is not None
        child.proc.stdin.close()
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1001
        assert await finish(child) == 0
    finally:
        await finish(child)


async def test_sigterm_stops_it_cleanly(layout, tokens, web_port, open_client, start_session,
                                        tmp_path):  # fmt: skip
    child = await start_child(layout, web_port, tmp_path / "notifier.log")
    try:
        ws = await open_client(child.url)
        await start_session(ws)
        child.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await ws.wait_closed()
        assert ws.close_code == 1001
        assert await finish(child) == 0
        assert "notifier stopped" in (tmp_path / "notifier.log").read_text()
    finally:
        await finish(child)


def mapped_libraries(pid: int) -> set[str]:
    """The file names of the shared objects a live process has mapped."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps")
async def test_it_serves_without_loading_openssl(layout, tokens, web_port, open_client,
                                                 start_session, tmp_path):  # fmt: skip
    """It speaks plain WebSocket on loopback and runs no task: OpenSSL (4-5 MB resident)
    stays out, and a token's handshake still works (the digests of
    the token and of the WebSocket key are Python's own)."""
    child = await start_child(layout, web_port, tmp_path / "notifier.log")
    try:
        ws = await open_client(child.url)
        welcome = await start_session(ws)
        assert welcome["type"] == "welcome"
        loaded = mapped_libraries(child.proc.pid)
        assert not {lib for lib in loaded if lib.startswith(("libcrypto", "libssl"))}, loaded
        with pytest.raises(InvalidStatus) as refused:
            await open_client(child.url, token="not-the-token")
        assert refused.value.response.status_code == 401
    finally:
        child.proc.send_signal(signal.SIGTERM)
        await finish(child)
