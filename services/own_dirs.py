"""Herald's own folders, which no task may read or write: the data dir, the runtime dir and
the config dirs. Pure path arithmetic (nothing is created), shared by the sides that keep
tasks out of them (the worker's sandbox; the checks at submit).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from services.layout import DataLayout

# Set by the supervisor for its services: the runtime dir it writes the runtime file to.
RUNTIME_DIR_ENV = "HERALD_RUNTIME_DIR"
APP = "herald"


def runtime_dirs() -> list[Path]:
    """Where the runtime file of this user's instances lives: what the supervisor said
    (HERALD_RUNTIME_DIR), else every place it would be (XDG_RUNTIME_DIR/herald, and the
    fallback /tmp/herald-UID)."""
    told = os.environ.get(RUNTIME_DIR_ENV)
    if told:
        return [Path(told)]
    found = []
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        found.append(Path(base) / APP)
    if hasattr(os, "getuid"):
        found.append(Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}")
    return found


def config_dirs() -> list[Path]:
    """The user's config folders of Herald: its own, and the desktop app's settings (Qt's
    QSettings with organization "Herald")."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Preferences"
    elif os.name == "nt":
        base = Path(os.environ.get("APPDATA") or Path.home())
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [base / APP, base / "Herald"]


def own_dirs(layout: DataLayout) -> list[Path]:
    """Every folder of Herald's own for the instance of `layout`, absolute, deduplicated."""
    seen: dict[str, Path] = {}
    for path in [layout.root, *runtime_dirs(), *config_dirs()]:
        absolute = Path(os.path.abspath(path))
        seen.setdefault(str(absolute), absolute)
    return list(seen.values())
