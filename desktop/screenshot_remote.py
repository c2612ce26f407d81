"""Make docs/remote-server.png: File → Connect to server… after a passed Test, against a
real `herald serve` (in a temp data dir) playing the remote server.

    python -m desktop.screenshot_remote [OUT.png]     (QT_QPA_PLATFORM=offscreen is enough:
                                                       the dialog itself is grabbed)
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_remote(tmp: Path) -> tuple[subprocess.Popen[str], str, str]:
    """A `herald serve` of its own (data and runtime dirs): its process, URL and token."""
    runtime = tmp / "remote-runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HERALD_DATA_DIR": str(tmp / "remote")}
    proc = subprocess.Popen([sys.executable, "-m", "embedded", "serve"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    assert proc.stdout is not None
    url = ""
    for line in proc.stdout:
        if found := re.search(r"API\s+(http://\S+?)(/api)?$", line.strip()):
            url = found.group(1)
        if "Press Ctrl-C to stop" in line:
            break
    else:
        raise SystemExit("herald serve did not start")
    return proc, url, (tmp / "remote" / "token").read_text().strip()


async def scenario(desktop, url: str, token: str, out: Path) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    async def until(predicate, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            await asyncio.sleep(0.05)

    run = asyncio.ensure_future(desktop.run())
    await until(lambda: desktop.window.lights.connection.state == "connected")
    desktop.window.connect_action.trigger()
    box = desktop.server_dialog
    box.saved_box.setCurrentIndex(0)  # New server…
    box.fill("team server", url, token)
    box.test_button.click()
    await until(lambda: "answers at" in box.result_text())
    box.connect_button.setFocus(Qt.FocusReason.OtherFocusReason)
    QApplication.processEvents()
    await asyncio.sleep(0.3)
    box.grab().save(str(out))
    print(f"wrote {out} ({box.width()}x{box.height()}): {box.result_text()}")
    box.reject()
    await desktop.quit(ask=False)
    await run


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "remote-server.png")
    out = out.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="herald-shot-remote-"))
    runtime = tmp / "runtime"
    runtime.mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
    proc, url, token = start_remote(tmp)
    try:
        import qasync
        from PySide6.QtCore import QSettings
        from PySide6.QtWidgets import QApplication

        from desktop.app import DesktopApp, app_icon
        from desktop.servers import Server, ServerBook

        app = QApplication(sys.argv[:1])
        app.setApplicationName("Herald")
        app.setWindowIcon(app_icon())
        loop = qasync.QEventLoop(app)
        asyncio.set_event_loop(loop)
        settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
        ServerBook(settings).save(Server("build farm", url), token)
        desktop = DesktopApp(tmp / "data", settings, server="build farm")
        with loop:
            loop.run_until_complete(scenario(desktop, url, token, out))
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
