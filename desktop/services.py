"""The embedded services as the desktop app sees them: the one supervisor, through Qt signals.

`ServiceMonitor` starts web, worker and notifier with `embedded.supervisor.Supervisor` (the
same code as `herald serve`), writes the runtime file so `herald submit` in a shell finds
this instance, and turns the supervisor's callbacks into signals for the status bar and the
log dock. When a headless `herald serve` already runs for the same data dir, the app
attaches to it instead of starting a second set of services.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from embedded.cli import herald_version
from embedded.instance import InstanceInfo, read_instance, remove_instance, write_instance
from embedded.supervisor import ServiceState, ServiceStatus, Supervisor, SupervisorError
from services.auth import ensure_install_token
from services.layout import DataLayout

log = logging.getLogger(__name__)

SERVICE_NAMES = ("web", "worker", "notifier")


class ServiceMonitor(QObject):
    """Owns (or attaches to) the services of one data dir.

    Signals:
        service_changed(name, state, message): a service moved to another ServiceState.
        service_logged(name, line): a service wrote a log line.
        services_ready(): every service is ready (after a start or a restart).
        services_failed(message): the services could not be started, or one gave up.
    """

    service_changed = Signal(str, str, str)
    service_logged = Signal(str, str)
    services_ready = Signal()
    services_failed = Signal(str)

    def __init__(self, data_dir: Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.layout = DataLayout(data_dir)
        self.token = ""
        self.api_url = ""
        self.ws_url = ""
        self.attached_pid: int | None = None  # a headless instance we only talk to
        self._supervisor: Supervisor | None = None
        self._states: dict[str, str] = {n: ServiceState.STOPPED.value for n in SERVICE_NAMES}

    # ------------------------------------------------------------------ queries

    def state(self, name: str) -> str:
        return self._states[name]

    def states(self) -> dict[str, str]:
        return dict(self._states)

    def logs(self, name: str) -> list[str]:
        return self._supervisor.logs(name) if self._supervisor else []

    @property
    def owns_services(self) -> bool:
        return self._supervisor is not None

    def pids(self) -> list[int]:
        """The pids of the children this app runs (none when attached)."""
        if self._supervisor is None:
            return []
        return [p for n in SERVICE_NAMES if (p := self._supervisor.pid(n)) is not None]

    # ------------------------------------------------------------------ control

    async def start(self) -> bool:
        """Start the services (or attach to a running instance); True once all are ready."""
        self.token = ensure_install_token(self.layout)
        running = read_instance(self.layout.root)
        if running is not None and running.pid != os.getpid():
            self.attached_pid = running.pid
            self.api_url, self.ws_url, self.token = running.api, running.ws, running.token
            for name in SERVICE_NAMES:
                self._set(name, ServiceState.READY.value, f"run by pid {running.pid}")
            self.services_ready.emit()
            return True
        if self._supervisor is None:
            self._supervisor = Supervisor(self.layout, on_state=self._on_supervisor_state,
                                          on_log=self.service_logged.emit)  # fmt: skip
        try:
            await self._supervisor.start()
        except SupervisorError as exc:
            log.error("services failed to start: %s", exc)
            self.services_failed.emit(str(exc))
            return False
        self.api_url, self.ws_url = self._supervisor.api_url, self._supervisor.ws_url
        write_instance(InstanceInfo(pid=os.getpid(), data_dir=str(self.layout.root),
                                    api=self.api_url, ws=self.ws_url, token=self.token,
                                    version=herald_version(), started_at=time.time()))  # fmt: skip
        self.services_ready.emit()
        return True

    async def stop(self) -> None:
        """Stop the services this app runs (an attached instance is left alone)."""
        if self._supervisor is not None:
            await self._supervisor.stop()
            remove_instance(self.layout.root, os.getpid())

    async def restart(self) -> bool:
        """Stop and start again (the "Restart services" action)."""
        await self.stop()
        return await self.start()

    # ---------------------------------------------------------------- internals

    def _on_supervisor_state(self, status: ServiceStatus) -> None:
        self._set(status.name, status.state.value, status.message)
        if status.state is ServiceState.FAILED:
            self.services_failed.emit(status.message)

    def _set(self, name: str, state: str, message: str) -> None:
        self._states[name] = state
        self.service_changed.emit(name, state, message)
