"""The embedded services as the desktop app sees them: the one supervisor, through Qt signals.

`ServiceMonitor` starts web, worker and notifier through `embedded.instance.Instance` (the
same code as `herald serve`: the data dir's lock, token repair, the supervisor, the runtime
file that lets `herald submit` in a shell find this instance), and turns the supervisor's
callbacks into signals for the status bar and the log dock. When another instance (a
headless `herald serve`) holds the data dir, the app attaches to it instead of starting a
second set of services.

Pointed at a remote server (`use_remote()`: a saved server, see desktop.servers) it starts
nothing: `start()` checks the server (health, then the token) and takes its endpoints,
and the lights say what the server's health says of each of its services.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from desktop.servers import Server, ServerCheckError, check_server
from embedded.instance import AlreadyRunning, Instance, StartupError, wait_for_running
from embedded.supervisor import ServiceState, ServiceStatus, Supervisor, SupervisorError

log = logging.getLogger(__name__)

SERVICE_NAMES = ("web", "worker", "notifier")


class ServiceMonitor(QObject):
    """Owns (or attaches to) the services of one data dir.

    Signals:
        service_changed(name, state, message): a service moved to another ServiceState.
        service_logged(name, line): a service wrote a log line.
        services_ready(): every service is ready (after a start or a restart).
        services_failed(message): the services could not be started.
        notice(message): something was repaired on the way up (e.g. a new token).
    """

    service_changed = Signal(str, str, str)
    service_logged = Signal(str, str)
    services_ready = Signal()
    services_failed = Signal(str)
    notice = Signal(str)

    def __init__(self, data_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.instance = Instance(data_dir, on_state=self._on_supervisor_state,
                                 on_log=self.service_logged.emit)  # fmt: skip
        self.layout = self.instance.layout
        self.token = ""
        self.api_url = ""
        self.ws_url = ""
        self.attached_pid: int | None = None  # a headless instance we only talk to
        self.tls: Any = None  # the TLS context of an https server (None: the default)
        self.remote: Server | None = None  # the remote server used instead of our own
        self._remote_token = ""
        self.principal = ""  # who the remote server says the token is
        self._states: dict[str, str] = {n: ServiceState.STOPPED.value for n in SERVICE_NAMES}

    # ------------------------------------------------------------------ queries

    def state(self, name: str) -> str:
        return self._states[name]

    def states(self) -> dict[str, str]:
        return dict(self._states)

    @property
    def _supervisor(self) -> Supervisor | None:
        if self.remote is not None or self.attached_pid is not None:
            return None
        return self.instance.supervisor

    def logs(self, name: str) -> list[str]:
        sup = self._supervisor
        return sup.logs(name) if sup else []

    @property
    def owns_services(self) -> bool:
        return self._supervisor is not None

    def pids(self) -> list[int]:
        """The pids of the children this app runs (none when attached)."""
        sup = self._supervisor
        if sup is None:
            return []
        return [p for n in SERVICE_NAMES if (p := sup.pid(n)) is not None]

    # ------------------------------------------------------------------ control

    def use_remote(self, server: Server | None, token: str = "") -> None:
        """From the next `start()` on, use `server` (with its token) instead of this
        computer's services; None: this computer's again. Stop first what runs."""
        self.remote = server
        self._remote_token = token if server is not None else ""
        self.attached_pid = None
        self.api_url = self.ws_url = self.token = self.principal = ""
        self.tls = None
        for name in SERVICE_NAMES:
            self._set(name, ServiceState.STOPPED.value, "")

    async def start(self) -> bool:
        """Start the services (or attach to a running instance, or check the remote
        server); True once all are ready."""
        if self.remote is not None:
            return await self._start_remote(self.remote)
        try:
            info = await self.instance.start()
        except AlreadyRunning as exc:
            running = exc.info or await wait_for_running(self.layout.root)
            if running is None:
                message = f"{exc}, but it did not get ready; try again in a moment"
                log.error("%s", message)
                self.services_failed.emit(message)
                return False
            self.attached_pid = running.pid
            self.api_url, self.ws_url, self.token = running.api, running.ws, running.token
            for name in SERVICE_NAMES:
                self._set(name, ServiceState.READY.value, f"run by pid {running.pid}")
            self.services_ready.emit()
            return True
        except (StartupError, SupervisorError, OSError) as exc:
            log.error("services failed to start: %s", exc)
            self.services_failed.emit(str(exc))
            return False
        self.attached_pid = None
        self.api_url, self.ws_url, self.token = info.api, info.ws, info.token
        for notice in self.instance.notices:
            self.notice.emit(notice)
        self.services_ready.emit()
        return True

    async def _start_remote(self, server: Server) -> bool:
        for name in SERVICE_NAMES:
            self._set(name, ServiceState.STARTING.value, f"connecting to {server.name}")
        try:
            found = await check_server(server.url, self._remote_token, server.ca_file)
        except ServerCheckError as exc:
            log.error("cannot use the server %s: %s", server.name, exc.message)
            for name in SERVICE_NAMES:
                self._set(name, ServiceState.FAILED.value, exc.message)
            self.services_failed.emit(exc.message)
            return False
        if self.remote is not server:  # switched again meanwhile
            return False
        self.api_url, self.ws_url, self.token = found.api, found.ws, found.token
        self.tls, self.principal = found.tls, found.principal
        services = found.health.get("services") or {}
        for name in SERVICE_NAMES:
            status = services.get(name) if isinstance(services, dict) else None
            state = str(status.get("state", "unknown")) if isinstance(status, dict) else "unknown"
            message = (status.get("message") or "") if isinstance(status, dict) else ""
            self._set(name, state, f"{name} on {server.name} ({server.url}): {state}"
                      + (f": {message}" if message else ""))  # fmt: skip
        self.services_ready.emit()
        return True

    async def stop(self) -> None:
        """Stop the services this app runs (an attached instance or a remote server is
        left alone)."""
        if self.attached_pid is None and self.remote is None:
            await self.instance.stop()

    async def restart(self) -> bool:
        """Stop and start again (the "Restart services" action)."""
        await self.stop()
        return await self.start()

    # ---------------------------------------------------------------- internals

    def _on_supervisor_state(self, status: ServiceStatus) -> None:
        # FAILED happens only while starting; start() then says it (services_failed).
        self._set(status.name, status.state.value, status.message)

    def _set(self, name: str, state: str, message: str) -> None:
        self._states[name] = state
        self.service_changed.emit(name, state, message)
