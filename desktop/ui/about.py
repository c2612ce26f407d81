"""The About box: what Herald is and the versions it runs on."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

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


def about_text() -> str:
    rows = "".join(f"<tr><td>{k}</td><td>&nbsp;{v}</td></tr>" for k, v in versions().items())
    return (
        "<h3>Herald</h3><p>Runs slow jobs in the background and shows their progress and "
        f"results the moment they happen.</p><table>{rows}</table>"
    )


def show_about(parent: QWidget) -> None:
    QMessageBox.about(parent, "About Herald", about_text())
