"""Notifications without a tray: over a private D-Bus session bus to a test notification
server (a QtDBus object on its own connection that owns org.freedesktop.Notifications)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtDBus import QDBusConnection, QDBusMessage, QDBusVirtualObject
from PySide6.QtWidgets import QSystemTrayIcon, QWidget

from tests.desktop import test_app as base

SERVICE = INTERFACE = "org.freedesktop.Notifications"  # the freedesktop spec's names
PATH = "/org/freedesktop/Notifications"

runtime = base.runtime  # the fixture, for this module's tests
WAIT = 20_000


class NotificationServer(QDBusVirtualObject):
    """Owns org.freedesktop.Notifications on the bus at `address`; records Notify calls."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []
        self.bus = QDBusConnection.connectToBus(address, "test-notification-server")
        assert self.bus.isConnected(), self.bus.lastError().message()
        assert self.bus.registerVirtualObject(PATH, self)
        assert self.bus.registerService(SERVICE)

    def introspect(self, path: str) -> str:
        return ""

    def handleMessage(self, message: QDBusMessage, connection: QDBusConnection) -> bool:  # noqa: N802
        if message.interface() != INTERFACE or message.member() != "Notify":
            return False
        args = message.arguments()
        call = {"id": len(self.calls) + 1, "signature": message.signature(),
                "app": args[0], "icon": args[2], "summary": args[3], "body": args[4],
                "actions": args[5]}  # fmt: skip
        self.calls.append(call)
        reply = message.createReply()
        reply.setArguments([call["id"]])
        connection.send(reply)
        return True

    def click(self, notification_id: int) -> None:
        signal = QDBusMessage.createSignal(PATH, INTERFACE, "ActionInvoked")
        signal.setArguments([notification_id, "default"])
        assert self.bus.send(signal)

    def close(self) -> None:
        self.bus.unregisterService(SERVICE)
        self.bus.unregisterObject(PATH)
        QDBusConnection.disconnectFromBus("test-notification-server")


@pytest.fixture
def session_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private session bus (a real dbus-daemon) for this test only."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.skip("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)")
    if shutil.which("gdbus") is None:
        pytest.skip("gdbus is not installed (Debian: apt-get install libglib2.0-bin)")
    proc = subprocess.Popen([daemon, "--session", "--print-address", "--nofork"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("unix:"), address
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield address
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def server(session_bus: str) -> Iterator[NotificationServer]:
    s = NotificationServer(session_bus)
    yield s
    s.close()


def test_without_a_tray_task_ends_are_notified_over_dbus(tmp_path: Path, runtime, aloop,
                                                          qtbot, server):  # fmt: skip
    assert not QSystemTrayIcon.isSystemTrayAvailable()  # offscreen: as under openbox
    r = base.Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    other = QWidget()  # the user works in another window
    try:
        w = r.window
        w.activateWindow()  # while the window is active, nothing is notified
        qtbot.waitUntil(w.isActiveWindow, timeout=WAIT)
        seen = r.run_task("demo.answer", seconds=0)
        r.wait_state(seen, "succeeded")
        cancelled = r.run_task("demo.answer", seconds=60)
        r.wait_state(cancelled, "running")
        other.show()
        other.activateWindow()
        qtbot.waitUntil(lambda: not w.isActiveWindow(), timeout=WAIT)

        w.cancel_requested.emit([cancelled])  # the user's own cancel: no news
        r.wait_state(cancelled, "cancelled")
        failed = r.run_task("process.run", program="/no/such/program")
        done = r.run_task("demo.answer", seconds=0.3)
        r.wait_state(failed, "failed")
        r.wait_state(done, "succeeded")
        qtbot.waitUntil(lambda: len(server.calls) >= 2, timeout=WAIT)
        qtbot.wait(300)  # a notification for the cancel would be here by now
        assert len(server.calls) == 2, server.calls  # not the cancel, not while active
        by_summary = {c["summary"]: c for c in server.calls}
        assert set(by_summary) == {"Run a program failed", "The answer succeeded"}, by_summary
        bad = by_summary["Run a program failed"]
        assert "no such" in bad["body"].lower() or "not found" in bad["body"].lower()
        assert bad["icon"] == "dialog-error"
        assert bad["signature"] == "susssasa{sv}i"  # what servers check: replaces_id is a u
        assert "default" in bad["actions"] and bad["app"] == "Herald"

        # Clicking a notification selects its task and brings the window up.
        w.select_task(done)
        server.click(bad["id"])
        qtbot.waitUntil(lambda: w.selected_ids() == [failed], timeout=WAIT)
    finally:
        other.close()
        r.quit()
