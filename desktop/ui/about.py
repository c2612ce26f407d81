"""The About box: what Herald is, who it is signed in as, and the versions it runs on."""

from __future__ import annotations

import platform
import sys
from html import escape
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import PySide6
from PySide6.QtCore import qVersion
from PySide6.QtWidgets import QMessageBox, QWidget

from services import landlock


def _v(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def versions() -> dict[str, str]:
    return {
        "Herald": _v("herald"),
        "Python": platform.python_version(),
        "Qt": qVersion(),
        "PySide6": PySide6.__version__,
        "qasync": _v("qasync"),
        "aiohttp": _v("aiohttp"),
        "websockets": _v("websockets"),
        "huey": _v("huey"),
        "System": f"{platform.system()} {platform.release()} ({sys.platform})",
        # What confines the tasks on this machine (else only the checks at submit do).
        "Task sandbox": landlock.support().describe(),
    }


def identity_text(me: dict[str, Any] | None) -> str:
    """"Signed in as ..." with what the principal may do (`GET /api/me`), in words."""
    if not me:
        return "Not signed in yet."
    who = f"Signed in as {me.get('principal', '?')}"
    if me.get("owner"):
        return f"{who} (the owner): every task, over every folder but Herald's own."
    tasks = ", ".join(me.get("tasks") or []) or "no task"
    roots = ", ".join(me.get("roots") or []) or "none"
    read_roots = ", ".join(me.get("read_roots") or []) or "none"
    network = "yes" if me.get("network") else "no"
    return (f"{who}: may run {tasks}; read and write under {roots}; only read under "
            f"{read_roots}; network: {network}.")  # fmt: skip


def about_text(identity: dict[str, Any] | None = None) -> str:
    rows = "".join(f"<tr><td>{k}</td><td>&nbsp;{v}</td></tr>" for k, v in versions().items())
    return (
        "<h3>Herald</h3><p>Runs slow jobs in the background and shows their progress and "
        f"results the moment they happen.</p><p>{escape(identity_text(identity))}</p>"
        f"<table>{rows}</table>"
    )


def show_about(parent: QWidget, identity: dict[str, Any] | None = None) -> None:
    QMessageBox.about(parent, "About Herald", about_text(identity))
