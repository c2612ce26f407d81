"""The one supervisor: starts web, worker and notifier as child processes and keeps them up.

Used by `herald serve` and by the desktop app alike (it only needs a running asyncio loop;
qasync's works). Each child announces readiness with one line (services.runtime); the
supervisor waits for it and restarts a child that exits unexpectedly, on the same port, for
as long as it runs: the delay doubles from 0.2 s up to 30 s while the child keeps dying
young, and starts over once it stayed up for a while. It never gives up on a service once
started, because a service given up strands every task accepted after it (a full disk, a
kill -9 loop and two poison tasks all used to end there). Only at start-up does a service
that cannot start at all make `start()` fail, with the reason the child gave
(`HERALD_FATAL`) or the last line it printed.

Children die with the supervisor even when it is SIGKILLed: each asks the kernel for a
signal when its parent dies (services.runtime.die_with_parent, told the supervisor's pid
in HERALD_PARENT_PID), and reads end-of-file on the stdin pipe the supervisor holds. No
`preexec_fn` (it runs Python between fork and exec, unsafe with Qt's threads).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from typing import IO

from embedded.paths import runtime_dir
from services.auth import Exposure, write_private
from services.layout import DataLayout
from services.own_dirs import RUNTIME_DIR_ENV
from services.runtime import (
    PARENT_ENV,
    is_loopback,
    owner_only_files,
    parse_fatal,
    parse_ready,
)

log = logging.getLogger("herald.supervisor")

SERVICES = ("web", "worker", "notifier")
BACKOFF_FIRST = 0.2  # seconds before the first restart of a service that died young
BACKOFF_MAX = 30.0  # the delay doubles up to this
STABLE_AFTER = 10.0  # a service up this long is healthy again: the next delay is the first
START_TRIES = 3  # at start-up, a service that exits this often before it is ready fails start
LOG_KEEP = 500  # lines of each service's log kept in memory
LOG_FILE_MAX = 5 * 1024 * 1024
TAIL_KEEP = 20  # lines of a run's stderr kept to explain its exit
PORT_CHANGES = 5  # at start-up, free ports tried in turn when the chosen one is taken meanwhile
LOG_RETRY = 5.0  # seconds before a log file that could not be written is tried again


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
    """What the supervisor knows of one service.

    Attributes:
        since: when (epoch seconds) it entered its current state.
        reason: why its last run ended: the reason it gave, or the last line it printed.
        next_try: when (epoch seconds) it is started again, while it waits to be.
    """

    name: str
    state: ServiceState = ServiceState.STOPPED
    pid: int | None = None
    port: int | None = None
    url: str | None = None
    restarts: int = 0
    last_exit: int | None = None
    message: str = ""
    since: float = field(default_factory=time.time)
    reason: str = ""
    next_try: float | None = None


class SupervisorError(RuntimeError):
    """The services could not be started."""


@dataclass(frozen=True)
class Deployment:
    """Which services this instance runs and how clients reach them (`herald serve`'s
    options; the defaults are the desktop's: everything, on loopback, plain HTTP).

    Attributes:
        services: the services run here (any non-empty subset of SERVICES); the others run
            elsewhere, or not at all, and are reported as such, never started.
        worker_processes: worker processes, each its own dispatcher (the ledger's leases
            keep them from running a task twice).
        web_host, notifier_host: the addresses the web and the notifier listen on.
        allowed_hosts: the names a non-loopback bind is reached by (the Host check).
        tls_cert, tls_key: serve https and wss with these PEM files.
        insecure_http: a non-loopback bind without TLS, on purpose.
        notifier_url: the notifier's public WebSocket URL, when it runs on another host.
        web_urls: the web's public URLs, when it runs on another host (the notifier admits
            its page's origin).
        backend: the storage's URL (None: SQLite in the data dir).
    """

    services: tuple[str, ...] = ("web", "worker", "notifier")
    worker_processes: int = 1
    web_host: str = "127.0.0.1"
    notifier_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure_http: bool = False
    notifier_url: str | None = None
    web_urls: tuple[str, ...] = ()
    backend: str | None = None

    def listen_args(self, host: str) -> list[str]:
        """What a listening service is told of where and how it listens."""
        out = ["--host", host]
        for name in self.allowed_hosts:
            out += ["--allowed-host", name]
        if self.tls_cert and self.tls_key:
            out += ["--tls-cert", self.tls_cert, "--tls-key", self.tls_key]
        elif self.insecure_http and not is_loopback(host):
            out.append("--insecure-http")
        return out

    def web_exposure(self, port: int) -> Exposure:
        return Exposure(port, tuple(n.lower() for n in self.allowed_hosts),
                        loopback=is_loopback(self.web_host),
                        tls=bool(self.tls_cert))  # fmt: skip


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


def exit_text(code: int | None) -> str:
    """How a process ended, in words: "exited with code 1", "killed by SIGKILL"."""
    if code is None:
        return "could not be started"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def backoff_delay(short_runs: int, first: float = BACKOFF_FIRST,
                  cap: float = BACKOFF_MAX) -> float:  # fmt: skip
    """The delay before the next start after `short_runs` consecutive runs that died young."""
    return min(cap, first * 2 ** max(0, short_runs - 1))


@dataclass
class _Child:
    status: ServiceStatus
    args: list[str]
    kind: str = ""  # which service it runs ("worker" for worker-2 too); default: its name
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Future[dict[str, object]] | None = None
    info: dict[str, object] = field(default_factory=dict)  # its last readiness line's details
    task: asyncio.Task[None] | None = None
    short_runs: int = 0  # consecutive runs that ended before STABLE_AFTER
    early_exits: int = 0  # consecutive runs that ended before the service was ever ready
    ever_ready: bool = False
    port_changes: int = 0  # free ports found taken before it could listen on them
    fatal: str | None = None  # the reason this run gave for not starting
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_KEEP))
    logs: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_KEEP))


class _LogFile:
    """One service's log file, kept open (a line costs a write, not an open and a stat),
    rotated by size; when it cannot be written (a full disk) lines go to our stderr
    instead, and the file is tried again a few seconds later."""

    def __init__(self, path: os.PathLike[str] | str, name: str) -> None:
        self.path = os.fspath(path)
        self.name = name
        self._file: IO[str] | None = None
        self._size = 0
        self._broken_until = 0.0

    def write(self, line: str) -> None:
        if self._broken_until and time.monotonic() < self._broken_until:
            self._fallback(line)
            return
        try:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8", errors="replace")
                self._size = self._file.tell()
            if self._size > LOG_FILE_MAX:
                self._file.close()
                self._file = None
                os.replace(self.path, self.path + ".1")
                self._file = open(self.path, "a", encoding="utf-8", errors="replace")
                self._size = 0
            self._file.write(line + "\n")
            self._file.flush()
            self._size += len(line) + 1
            if self._broken_until:
                self._broken_until = 0.0
                log.warning("%s's log file %s can be written again", self.name, self.path)
        except OSError as exc:
            if not self._broken_until:
                log.error("cannot write %s (%s); %s's log goes to stderr for now",
                          self.path, exc, self.name)  # fmt: skip
            self._broken_until = time.monotonic() + LOG_RETRY
            self.close()
            self._fallback(line)

    def _fallback(self, line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"{self.name}: {line}\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class Supervisor:
    """Runs Herald's services for one data dir.

    Args:
        layout: the data dir.
        web_port, notifier_port: fixed ports, or 0 for free ones (kept across restarts).
        worker_threads: tasks each worker process runs at once (None: the config's).
        deployment: which services run here, and how they are reached (default: all of
            them, one worker process, loopback only).
        on_state: called with a ServiceStatus at every transition (the GUI's hook).
        on_log: called with (service, line) for every log line of a child.
        backoff_first, backoff_max: the first and the longest delay before a restart.
        stable_after: seconds up after which a service's next restart is quick again.
        start_tries: exits before ready, at start-up, after which `start()` fails.
        keep_fds: file descriptors every child inherits (the instance's lock, so that no
            second instance starts while a child of this one still runs).
    """

    def __init__(
        self,
        layout: DataLayout,
        *,
        web_port: int = 0,
        notifier_port: int = 0,
        worker_threads: int | None = None,
        deployment: Deployment | None = None,
        on_state: Callable[[ServiceStatus], None] | None = None,
        on_log: Callable[[str, str], None] | None = None,
        backoff_first: float = BACKOFF_FIRST,
        backoff_max: float = BACKOFF_MAX,
        stable_after: float = STABLE_AFTER,
        start_tries: int = START_TRIES,
        ready_timeout: float = 30.0,
        keep_fds: tuple[int, ...] = (),
    ) -> None:
        # Everything Herald creates from here on, here and in its services (which inherit
        # it), is its owner's only: logs, status, databases and their WAL files.
        owner_only_files()
        self.layout = layout
        self.on_state = on_state
        self.on_log = on_log
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.start_tries = start_tries
        self.ready_timeout = ready_timeout
        self.keep_fds = keep_fds
        self._stopping = False
        self._starting = False
        self._status_retry: asyncio.TimerHandle | None = None
        self._status_failed = False
        self._auto_ports = {name for name, port in (("web", web_port),
                                                    ("notifier", notifier_port)) if not port}
        web_port = web_port or free_port()
        notifier_port = notifier_port or free_port()
        self.deployment = dep = deployment or Deployment()
        base = ["--data-dir", str(layout.root)]
        try:  # a folder no task may touch: the services are told where it is
            base += ["--runtime-dir", str(runtime_dir())]
        except OSError as exc:
            log.warning("no runtime dir (%s): tasks are not kept out of one", exc)
        if dep.backend:
            base += ["--backend", dep.backend]
        self._children: dict[str, _Child] = {}
        self._notifier_base: list[str] = []
        if "web" in dep.services:
            web_args = [*base, "--port", str(web_port), *dep.listen_args(dep.web_host)]
            if "worker" in dep.services and dep.worker_processes > 1:  # it wakes each
                web_args += ["--worker-processes", str(dep.worker_processes)]
            if dep.notifier_url:
                web_args += ["--notifier-url", dep.notifier_url]
            self._children["web"] = _Child(ServiceStatus("web", port=web_port), web_args)
        if "worker" in dep.services:
            concurrency = ["--concurrency", str(worker_threads)] if worker_threads else []
            for i in range(dep.worker_processes):
                name = "worker" if i == 0 else f"worker-{i + 1}"
                which = ([] if dep.worker_processes == 1 else
                         ["--worker-processes", str(dep.worker_processes),
                          "--worker-index", str(i + 1)])  # fmt: skip
                self._children[name] = _Child(ServiceStatus(name),
                                              [*base, *concurrency, *which], kind="worker")
        if "notifier" in dep.services:
            self._notifier_base = [*base, "--port", str(notifier_port),
                                   *dep.listen_args(dep.notifier_host)]  # fmt: skip
            self._children["notifier"] = _Child(
                ServiceStatus("notifier", port=notifier_port),
                self._notifier_base + self._page_args(web_port))
        self.elsewhere = tuple(n for n in SERVICES if n not in dep.services)
        layout.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        layout.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._logfiles = {n: _LogFile(layout.log_dir / f"{n}.log", n) for n in self._children}

    # ------------------------------------------------------------------ queries

    def _page_args(self, web_port: int) -> list[str]:
        """What the notifier is told of the web's page, whose origin it admits: the web's
        port here (its loopback origins), and its public origins when it has any (a
        non-loopback bind, or TLS) or when it runs on another host (`web_urls`)."""
        dep = self.deployment
        out: list[str] = []
        if "web" in dep.services:
            out += ["--web-port", str(web_port)]
            exposure = dep.web_exposure(web_port)
            if exposure != Exposure.local(web_port):
                for origin in sorted(exposure.page_origins()):
                    out += ["--web-origin", origin]
            return out
        for url in dep.web_urls:
            scheme, _, rest = url.partition("://")
            authority = rest.split("/", 1)[0]
            out += ["--web-origin", f"{scheme.lower()}://{authority.lower()}"]
            if "--web-port" not in out and authority.rpartition(":")[2].isdigit():
                out += ["--web-port", authority.rpartition(":")[2]]  # its cookie's name
        return out

    @property
    def api_url(self) -> str:
        """Where the web service is reached ("" when it does not run here)."""
        web = self._children.get("web")
        if web is None:
            return ""
        return web.status.url or f"http://127.0.0.1:{web.status.port}"

    @property
    def ws_url(self) -> str:
        """Where the notifier is reached (its public URL when it runs elsewhere; "" when
        nobody said)."""
        notifier = self._children.get("notifier")
        if notifier is None:
            return self.deployment.notifier_url or ""
        return notifier.status.url or f"ws://127.0.0.1:{notifier.status.port}/ws"

    def command(self, name: str) -> list[str]:
        """The command line service `name` is started with (no secret is ever on it)."""
        child = self._children[name]
        return service_command(child.kind or name, child.args)

    @property
    def services_here(self) -> tuple[str, ...]:
        """The services this supervisor runs (worker-2... for more worker processes)."""
        return tuple(self._children)

    def status(self) -> dict[str, ServiceStatus]:
        return {name: child.status for name, child in self._children.items()}

    def logs(self, name: str) -> list[str]:
        """The last lines logged by a service."""
        return list(self._children[name].logs)

    def pid(self, name: str) -> int | None:
        return self._children[name].status.pid

    def ready_info(self, name: str) -> dict[str, object]:
        """What a service said in its last readiness line (empty before it was ready, or
        when it does not run here)."""
        child = self._children.get(name)
        return {} if child is None else dict(child.info)

    @property
    def all_ready(self) -> bool:
        return all(c.status.state is ServiceState.READY for c in self._children.values())

    # ------------------------------------------------------------------ control

    async def start(self) -> None:
        """Start every service and wait until each is ready.

        Raises:
            SupervisorError: a service could not start (its reason is in the message).
        """
        self._stopping = False
        self._starting = True
        for child in self._children.values():
            child.short_runs = child.early_exits = 0
            child.ever_ready = False
            child.status.restarts = 0
            child.task = asyncio.ensure_future(self._keep_running(child))
        try:
            waits = [self._wait_ready(c) for c in self._children.values()]
            results = await asyncio.gather(*waits, return_exceptions=True)
            while not any(isinstance(r, BaseException) for r in results) and not self.all_ready:
                # One was started again meanwhile (the notifier, told the web's new port).
                waits = [self._wait_ready(c) for c in self._children.values()
                         if c.status.state is not ServiceState.READY]  # fmt: skip
                results = await asyncio.gather(*waits, return_exceptions=True)
        finally:
            self._starting = False
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
            child.status.next_try = None
            if child.status.state is not ServiceState.FAILED:
                self._set(child, ServiceState.STOPPED)
        for f in self._logfiles.values():
            f.close()
        if self._status_retry is not None:
            self._status_retry.cancel()
            self._status_retry = None

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
                why = f" (last: {child.status.reason})" if child.status.reason else ""
                raise SupervisorError(f"{child.status.name} was not ready within "
                                      f"{self.ready_timeout:.0f} s{why}")  # fmt: skip
            fut = child.ready
            if fut is None or fut.done():  # between two runs
                await asyncio.sleep(0.02)
                continue
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(fut), deadline - time.monotonic())

    async def _keep_running(self, child: _Child) -> None:
        name = child.status.name
        while not self._stopping:
            child.status.next_try = None
            if child.status.restarts == 0:
                self._set(child, ServiceState.STARTING, "")
            else:
                self._set(child, ServiceState.RESTARTING,
                          f"starting again; last time: {child.status.reason}")  # fmt: skip
            began = time.monotonic()
            code = await self._run_once(child)
            if self._stopping:
                return
            lived = time.monotonic() - began
            child.status.last_exit = code
            child.status.reason = self._exit_reason(child, code)
            if child.ever_ready:
                child.early_exits = 0
            elif self._new_port(child):
                continue  # the free port it was given was taken meanwhile: another, at once
            else:
                child.early_exits += 1
            if self._starting and not child.ever_ready and child.early_exits >= self.start_tries:
                # Cannot start at all: say why, and let start() fail with it.
                log.error("%s cannot start: %s", name, child.status.reason)
                self._set(child, ServiceState.FAILED, child.status.reason)
                return
            child.short_runs = 1 if lived >= self.stable_after else child.short_runs + 1
            delay = backoff_delay(child.short_runs, self.backoff_first, self.backoff_max)
            log.warning("%s %s; restarting in %.1f s", name, child.status.reason, delay)
            child.status.restarts += 1
            child.status.next_try = time.time() + delay
            self._set(child, ServiceState.RESTARTING,
                      f"{child.status.reason}; restarting in {delay:.1f} s")  # fmt: skip
            await asyncio.sleep(delay)

    def _new_port(self, child: _Child) -> bool:
        """A service that never got ready because the free port chosen for it was taken
        since (another program's connection got it first) gets another one. Only before it
        was ever ready: afterwards its clients know its port, which stays."""
        name = child.status.name
        if (name not in self._auto_ports or not child.status.reason.startswith("port ")
                or child.port_changes >= PORT_CHANGES):  # fmt: skip
            return False
        child.port_changes += 1
        port = free_port()
        log.warning("%s: port %s was taken before it could listen; trying port %d", name,
                    child.status.port, port)  # fmt: skip
        child.args[child.args.index("--port") + 1] = str(port)
        child.status.port = port
        notifier = self._children.get("notifier")
        if name == "web" and notifier is not None:  # it admits the page by its origin
            notifier.args[:] = self._notifier_base + self._page_args(port)
            proc = notifier.proc
            if proc is not None and proc.returncode is None and proc.stdin is not None:
                proc.stdin.close()  # it stops; it is started again with the new port
                self._set(notifier, ServiceState.RESTARTING, f"the web's port is now {port}")
        return True

    def _exit_reason(self, child: _Child, code: int | None) -> str:
        """Why a run ended: its own fatal reason, else how it ended and its last line."""
        if child.fatal:
            return child.fatal
        how = exit_text(code)
        last = next((line for line in reversed(child.tail) if line.strip()), "")
        return f"{how}: {last.strip()}" if last and code != 0 else how

    async def _run_once(self, child: _Child) -> int | None:
        loop = asyncio.get_running_loop()
        child.ready = loop.create_future()
        child.fatal = None
        child.tail.clear()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_TOKEN")}
        env[PARENT_ENV] = str(os.getpid())
        with contextlib.suppress(OSError):  # where no task may look (the worker's sandbox)
            env[RUNTIME_DIR_ENV] = str(runtime_dir())
        try:
            proc = await asyncio.create_subprocess_exec(
                *service_command(child.kind or child.status.name, child.args),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                pass_fds=self.keep_fds,
            )
        except OSError as exc:
            child.fatal = f"could not be started: {exc}"
            self._log(child, child.fatal)
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
        self._log(child, exit_text(code))
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
            if watch_ready:
                reason = parse_fatal(line)
                if reason is not None:
                    child.fatal = reason
                    self._log(child, f"cannot start: {reason}")
                    continue
            if watch_ready and child.ready is not None and not child.ready.done():
                info = parse_ready(line)
                if info is not None:
                    port = info.get("port")
                    if isinstance(port, int):
                        child.status.port = port
                    url = info.get("url")
                    child.status.url = url if isinstance(url, str) else None
                    child.info = info
                    child.ready.set_result(info)
                    child.ever_ready = True
                    self._set(child, ServiceState.READY, "")
                    continue
            if not watch_ready:
                child.tail.append(line)
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
        if st.state is not state:
            st.since = time.time()
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
        self._logfiles[child.status.name].write(line)
        if self.on_log is not None:
            try:
                self.on_log(child.status.name, line)
            except Exception:
                log.exception("on_log callback failed")

    def _write_status(self) -> None:
        """Write the status file /api/health reads; when that fails (a full disk), say so
        once and try again every second until it works, so health never stays stale."""
        body = {
            "supervisor_pid": os.getpid(),
            "updated": time.time(),
            # The services another instance runs (or none): reported, never started here.
            "elsewhere": list(self.elsewhere),
            "services": {
                n: {k: v for k, v in asdict(c.status).items() if k != "name"}
                for n, c in self._children.items()
            },
        }
        try:
            write_private(self.layout.status_file, json.dumps(body, indent=2) + "\n")
        except OSError as exc:
            if not self._status_failed:
                log.error("cannot write %s: %s; trying again every second",
                          self.layout.status_file, exc)  # fmt: skip
            self._status_failed = True
            self._retry_status()
            return
        if self._status_failed:
            self._status_failed = False
            log.warning("%s written again", self.layout.status_file)

    def _retry_status(self) -> None:
        if self._status_retry is not None or self._stopping:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def again() -> None:
            self._status_retry = None
            self._write_status()

        self._status_retry = loop.call_later(1.0, again)
