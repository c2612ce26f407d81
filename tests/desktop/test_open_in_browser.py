"""The desktop app's "Open in browser": a fresh one-time sign-in link handed to the
browser `$BROWSER` names (a script that records it), without a dialog; real services."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.desktop.test_app import WAIT, Running
from tests.embedded.test_open import status_of


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aloop, qtbot) -> Iterator[Running]:
    rt = tmp_path / "runtime"
    rt.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(rt))
    r = Running(tmp_path / "data", tmp_path / "settings.ini", qtbot)
    yield r
    if not r.task.done():
        r.quit()


def test_open_in_browser_hands_the_browser_a_link_that_works_once(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qtbot
) -> None:
    record = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{record}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER", str(script))
    action = running.window.open_browser_action
    assert action in running.window.menuBar().actions()[0].menu().actions()  # File menu
    action.trigger()
    qtbot.waitUntil(lambda: record.exists() and record.read_text().strip() != "", timeout=WAIT)
    qtbot.waitUntil(lambda: "browser" in running.window.status_message.text(),
                    timeout=WAIT)  # fmt: skip
    (url,) = record.read_text().split()
    assert url.startswith(running.app.bridge.client.api + "/login?ticket=")
    assert status_of(url)[0] == 303
    assert status_of(url)[0] == 403
