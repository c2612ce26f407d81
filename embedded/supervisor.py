"""The one supervisor: starts web, worker and notifier as child processes and keeps them up.

Used by `herald serve` and by the desktop app alike (it only needs a running asyncio loop;
qasync's works). Each child announces readiness with one line (services.runtime); the
supervisor waits for it, restarts a child that exits unexpectedly with a growing delay on
the same port, and gives up on a service, visibly, after repeated failures. It stops
children by request (closing their stdin), and they die with it even when it is SIGKILLed
(PR_SET_PDEATHSIG in the child, plus end-of-file on that same stdin pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from services.auth import write_private
from services.layout import DataLayout
from services.runtime import parse_ready

log = logging.getLogger("herald.supervisor")

SERVICES = ("web", "worker", "notifier")
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)
LOG_KEEP = 500  # lines of each service's log kept in memory
LOG_FILE_MAX = 5 * 1024 * 1024


class ServiceState(StrEnum):
    """Where a supervised service is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"


@dataclass
class ServiceStatus:
    """What the supervisor knows of one service."""

    name: str
    state: ServiceState = ServiceState.STOPPED
    pid: int | None = None
    port: int | None = None
    url: str | None = None
    restarts: int = 0
    last_exit: int | None = None
    message: str = ""


class SupervisorError(RuntimeError):
    """The services could not be started."""


def service_command(name: str, args: list[str]) -> list[str]:
    """How to run a service: the frozen bundle runs itself with a subcommand."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "service", name, *args]
    return [sys.executable, "-m", f"services.{name}", *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the spawning thread's process dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


@dataclass
class _Child:
    status: ServiceStatus
    args: list[str]
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[dict[str, object]] | None = None
    task: asyncio.Task[None] | None = None
    failures: deque[float] = field(default_factory=deque)
    logs: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_KEEP))


class Supervisor:
    """Runs Herald's services for one data dir.

    Args:
        layout: the data dir.
        web_port, notifier_port: fixed ports, or 0 for free ones (kept across restarts).
        worker_threads: tasks the worker runs at once (None: the config's).
        on_state: called with a ServiceStatus at every transition (the GUI's hook).
        on_log: called with (service, line) for every log line of a child.
        max_failures: failures within `failure_window` seconds after which it gives up.
    """

    def __init__(
        self,
        layout: DataLayout,
        *,
        web_port: int = 0,
        notifier_port: int = 0,
        worker_threads: int | None = None,
        on_state: Callable[[ServiceStatus], None] | None = None,
        on_log: Callable[[str, str], None] | None = None,
        max_failures: int = 5,
        failure_window: float = 60.0,
        ready_timeout: float = 30.0,
    ) -> None:
        self.layout = layout
        self.on_state = on_state
        self.on_log = on_log
        self.max_failures = max_failures
        self.failure_window = failure_window
        self.ready_timeout = ready_timeout
        self._stopping = False
        web_port = web_port or free_port()
        notifier_port = notifier_port or free_port()
        base = ["--data-dir", str(layout.root)]
        self._children = {
            "web": _Child(ServiceStatus("web", port=web_port), [*base, "--port", str(web_port)]),
            "worker": _Child(
                ServiceStatus("worker"),
                [*base] + (["--workers", str(worker_threads)] if worker_threads else []),
            ),
            "notifier": _Child(
                ServiceStatus("notifier", port=notifier_port),
                [*base, "--port", str(notifier_port), "--web-port", str(web_port)],
            ),
        }
        layout.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        layout.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    # ------------------------------------------------------------------ queries

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._children['web'].status.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._children['notifier'].status.port}/ws"

    def status(self) -> dict[str, ServiceStatus]:
        return {name: child.status for name, child in self._children.items()}

    def logs(self, name: str) -> list[str]:
        """The last lines logged by a service."""
        return list(self._children[name].logs)

    def pid(self, name: str) -> int | None:
        return self._children[name].status.pid

    @property
    def all_ready(self) -> bool:
        return all(c.status.state is ServiceState.READY for c in self._children.values())

    # ------------------------------------------------------------------ control

    async def start(self) -> None:
        """Start every service and wait until each is ready.

        Raises:
            SupervisorError: a service gave up before becoming ready.
        """
        self._stopping = False
        for child in self._children.values():
            child.failures.clear()
            child.status.restarts = 0
            child.task = asyncio.ensure_future(self._keep_running(child))
        waits = [self._wait_ready(c) for c in self._children.values()]
        results = await asyncio.gather(*waits, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise SupervisorError("; ".join(str(e) for e in errors))

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask every child to stop (end of its stdin), then terminate what remains."""
        self._stopping = True
        children = list(self._children.values())
        for child in children:
            if child.status.state not in (ServiceState.STOPPED, ServiceState.FAILED):
                self._set(child, ServiceState.STOPPING)
            if child.proc is not None and child.proc.returncode is None and child.proc.stdin:
                child.proc.stdin.close()
        await asyncio.gather(*(self._reap(c, timeout) for c in children))
        for child in children:
            if child.task is not None:
                child.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.task
                child.task = None
            if child.status.state is not ServiceState.FAILED:
                self._set(child, ServiceState.STOPPED)

    async def restart(self) -> None:
        """Stop everything and start again (the "Restart services" action)."""
        await self.stop()
        await self.start()

    # ---------------------------------------------------------------- internals

    async def _wait_ready(self, child: _Child) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if child.status.state is ServiceState.READY:
                return
            if child.status.state is ServiceState.FAILED:
                raise SupervisorError(f"{child.status.name}: {child.status.message}")
            if time.monotonic() > deadline:
                raise SupervisorError(f"{child.status.name} was not ready in time")
            fut = child.ready
            if fut is None or fut.done():  # between two runs
                await asyncio.sleep(0.02)
                continue
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(fut), deadline - time.monotonic())

    async def _keep_running(self, child: _Child) -> None:
        name = child.status.name
        while not self._stopping:
            self._set(child, ServiceState.STARTING if child.status.restarts == 0
                      else ServiceState.RESTARTING)  # fmt: skip
            code = await self._run_once(child)
            if self._stopping:
                return
            now = time.monotonic()
            child.failures.append(now)
            while child.failures and now - child.failures[0] > self.failure_window:
                child.failures.popleft()
            child.status.last_exit = code
            if len(child.failures) >= self.max_failures:
                msg = (f"{name} exited {len(child.failures)} times within "
                       f"{self.failure_window:.0f} s (last exit code {code}); gave up")  # fmt: skip
                log.error("%s", msg)
                self._set(child, ServiceState.FAILED, msg)
                return
            delay = BACKOFF[min(len(child.failures) - 1, len(BACKOFF) - 1)]
            log.warning("%s exited with code %s; restarting in %.1f s", name, code, delay)
            child.status.restarts += 1
            self._set(child, ServiceState.RESTARTING,
                      f"exited with code {code}; restarting in {delay:.1f} s")  # fmt: skip
            await asyncio.sleep(delay)

    async def _run_once(self, child: _Child) -> int | None:
        loop = asyncio.get_running_loop()
        child.ready = loop.create_future()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_TOKEN")}
        try:
            proc = await asyncio.create_subprocess_exec(
                *service_command(child.status.name, child.args),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            self._log(child, f"could not start: {exc}")
            return None
        child.proc = proc
        child.status.pid = proc.pid
        readers = [
            asyncio.ensure_future(self._read(child, proc.stdout, watch_ready=True)),
            asyncio.ensure_future(self._read(child, proc.stderr, watch_ready=False)),
        ]
        code = await proc.wait()
        await asyncio.gather(*readers, return_exceptions=True)
        if not child.ready.done():
            child.ready.set_result({})
        child.status.pid = None
        child.proc = None
        self._log(child, f"exited with code {code}")
        return code

    async def _read(self, child: _Child, stream: asyncio.StreamReader | None,
                    watch_ready: bool) -> None:  # fmt: skip
        if stream is None:
            return
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the stream limit
                raw = await stream.read(65536)
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if watch_ready and child.ready is not None and not child.ready.done():
                info = parse_ready(line)
                if info is not None:
                    port = info.get("port")
                    if isinstance(port, int):
                        child.status.port = port
                    url = info.get("url")
                    child.status.url = url if isinstance(url, str) else None
                    child.ready.set_result(info)
                    self._set(child, ServiceState.READY, "")
                    continue
            self._log(child, line)

    async def _reap(self, child: _Child, timeout: float) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(proc.wait(), timeout)
            return
        except TimeoutError:
            log.warning("%s did not stop in %.0f s; terminating", child.status.name, timeout)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _set(self, child: _Child, state: ServiceState, message: str | None = None) -> None:
        st = child.status
        if message is not None:
            st.message = message
        if st.state is state and message is None:
            return
        st.state = state
        log.info("service %s: %s%s", st.name, state.value, f" ({st.message})" if st.message else "")
        self._write_status()
        if self.on_state is not None:
            try:
                self.on_state(st)
            except Exception:
                log.exception("on_state callback failed")

    def _log(self, child: _Child, line: str) -> None:
        child.logs.append(line)
        path = self.layout.log_dir / f"{child.status.name}.log"
        try:
            if path.exists() and path.stat().st_size > LOG_FILE_MAX:
                path.replace(path.with_suffix(".log.1"))
            with open(path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError:
            pass
        if self.on_log is not None:
            try:
                self.on_log(child.status.name, line)
            except Exception:
                log.exception("on_log callback failed")

    def _write_status(self) -> None:
        body = {
            "supervisor_pid": os.getpid(),
            "updated": time.time(),
            "services": {
                n: {k: v for k, v in asdict(c.status).items() if k != "name"}
                for n, c in self._children.items()
            },
        }
        with contextlib.suppress(OSError):
            write_private(self.layout.status_file, json.dumps(body, indent=2) + "\n")
