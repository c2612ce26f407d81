"""Desktop notifications without a system tray: the freedesktop notification service.

Under window managers and desktops with no tray (openbox, stock GNOME) `QSystemTrayIcon`
cannot show a message, but a notification server (gnome-shell, dunst, xfce4-notifyd, ...)
owns `org.freedesktop.Notifications` on the session bus. `DesktopNotifications` talks to it
over D-Bus: QtDBus connects to the bus and hears `ActionInvoked` (the user clicked the
notification: the task is selected and the window comes up) and `NotificationClosed`.

The `Notify` call itself is made by `gdbus call` (GLib's command line, with typed GVariant
arguments), run as a QProcess: the method's `replaces_id` is a D-Bus `uint32`, and Qt for
Python has no way to put an unsigned integer in a QtDBus message (a Python int becomes
`int32`, or `uint16` through QDBusArgument), which GDBus-based servers refuse as a
signature mismatch. The process never blocks the event loop, and a server that does not
answer is given up on after `CALL_TIMEOUT` seconds.

The bus is the one `DBUS_SESSION_BUS_ADDRESS` names when the first notification is sent
(else `$XDG_RUNTIME_DIR/bus`, where systemd puts the user's bus); without either, or
without `gdbus`, notifications are unavailable and `notify()` says so by returning False.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
from typing import Protocol

from PySide6.QtCore import SLOT, QObject, QProcess, Signal, Slot
from PySide6.QtDBus import QDBusConnection, QDBusMessage

log = logging.getLogger(__name__)

SERVICE = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"
INTERFACE = "org.freedesktop.Notifications"
CALL_TIMEOUT = 5  # seconds a Notify call may take
EXPIRE_MS = -1  # the server's default
_connection_names = itertools.count()


class Notifier(Protocol):
    """What the window needs of a notification channel (the tray is the other one)."""

    def notify(self, task_id: str, summary: str, body: str, failed: bool) -> bool: ...


def session_bus_address() -> str | None:
    """The session bus to use: $DBUS_SESSION_BUS_ADDRESS, else systemd's user bus."""
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "").strip()
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.exists(os.path.join(runtime, "bus")):
        return f"unix:path={os.path.join(runtime, 'bus')}"
    return None


def gvariant_string(text: str) -> str:
    """`text` as a GVariant text-format string literal (for `gdbus call`)."""
    escaped = (text.replace("\\", "\\\\").replace("'", "\\'")
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))  # fmt: skip
    return f"'{escaped}'"


class DesktopNotifications(QObject):
    """Notifications through org.freedesktop.Notifications, each one about a task.

    Signals:
        clicked(str): the user clicked (the default action of) the notification of this
            task.
        sent(str, int): the server took the notification of this task (its id there).
    """

    clicked = Signal(str)
    sent = Signal(str, int)

    def __init__(self, app_name: str = "Herald", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.app_name = app_name
        self._bus: QDBusConnection | None = None
        self._bus_name = ""
        self._address: str | None = None
        self._unavailable = ""  # why notifications cannot be sent, once known
        self._tasks: dict[int, str] = {}  # the server's notification id -> task id
        self._calls: set[QProcess] = set()

    # --------------------------------------------------------------- interface

    def notify(self, task_id: str, summary: str, body: str, failed: bool) -> bool:
        """Show a notification about `task_id`; False when there is no notification
        service to show it (the reason is logged once)."""
        if not self._connect():
            return False
        gdbus = shutil.which("gdbus")
        if gdbus is None:
            self._give_up("gdbus (GLib's D-Bus tool, package libglib2.0-bin) is not installed")
            return False
        assert self._address is not None
        icon = "dialog-error" if failed else "dialog-information"
        hints = f"{{'desktop-entry': <'herald'>, 'urgency': <byte {2 if failed else 1}>}}"
        args = ["call", "--address", self._address, "--dest", SERVICE, "--object-path", PATH,
                "--method", f"{INTERFACE}.Notify", "--timeout", str(CALL_TIMEOUT),
                gvariant_string(self.app_name), "uint32 0", gvariant_string(icon),
                gvariant_string(summary), gvariant_string(body), "['default', 'Show']",
                hints, f"int32 {EXPIRE_MS}"]  # fmt: skip
        proc = QProcess(self)
        proc.setProgram(gdbus)
        proc.setArguments(args)
        proc.finished.connect(lambda code, _status: self._on_call_finished(proc, task_id, code))
        proc.errorOccurred.connect(lambda _error: self._on_call_finished(proc, task_id, -1))
        self._calls.add(proc)
        proc.start()
        return True

    def close(self) -> None:
        """Stop listening and drop the bus connection (calls under way are stopped)."""
        for proc in list(self._calls):
            proc.kill()
            proc.waitForFinished(500)
        self._calls.clear()
        if self._bus is not None:
            QDBusConnection.disconnectFromBus(self._bus_name)
            self._bus = None

    # --------------------------------------------------------------- internals

    def _connect(self) -> bool:
        if self._bus is not None:
            return True
        if self._unavailable:
            return False
        address = session_bus_address()
        if address is None:
            self._give_up("there is no session bus (DBUS_SESSION_BUS_ADDRESS is not set)")
            return False
        self._bus_name = f"herald-notifications-{os.getpid()}-{next(_connection_names)}"
        bus = QDBusConnection.connectToBus(address, self._bus_name)
        if not bus.isConnected():
            self._give_up(f"cannot connect to the session bus: {bus.lastError().message()}")
            QDBusConnection.disconnectFromBus(self._bus_name)
            return False
        for name, slot in (("ActionInvoked", "_on_bus_action_invoked(QDBusMessage)"),
                           ("NotificationClosed", "_on_bus_notification_closed(QDBusMessage)")):
            if not bus.connect(SERVICE, PATH, INTERFACE, name, self, SLOT(slot)):
                log.warning("cannot listen to %s: %s", name, bus.lastError().message())
        self._bus, self._address = bus, address
        return True

    def _give_up(self, why: str) -> None:
        if not self._unavailable:
            log.warning("no desktop notifications: %s", why)
        self._unavailable = why

    def _on_call_finished(self, proc: QProcess, task_id: str, code: int) -> None:
        if proc not in self._calls:
            return  # errorOccurred and finished both came
        self._calls.discard(proc)
        out = bytes(proc.readAllStandardOutput().data()).decode(errors="replace")
        err = bytes(proc.readAllStandardError().data()).decode(errors="replace").strip()
        proc.deleteLater()
        found = re.search(r"\((?:uint32 )?(\d+),?\)", out)
        if code != 0 or found is None:
            log.warning("the notification service refused a notification: %s",
                        err or out.strip() or f"gdbus exited {code}")  # fmt: skip
            return
        notification = int(found.group(1))
        self._tasks[notification] = task_id
        self.sent.emit(task_id, notification)

    @Slot(QDBusMessage)
    def _on_bus_action_invoked(self, message: QDBusMessage) -> None:
        args = message.arguments()
        if len(args) >= 2 and isinstance(args[0], int):
            task_id = self._tasks.get(args[0])
            if task_id is not None and args[1] == "default":
                self.clicked.emit(task_id)

    @Slot(QDBusMessage)
    def _on_bus_notification_closed(self, message: QDBusMessage) -> None:
        args = message.arguments()
        if args and isinstance(args[0], int):
            self._tasks.pop(args[0], None)
