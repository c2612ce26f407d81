"""Default locations: the data dir and the runtime file that says where an instance runs."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import platformdirs

APP = "herald"


def default_data_dir() -> Path:
    """`HERALD_DATA_DIR` if set, else the user's data dir (e.g. ~/.local/share/herald)."""
    env = os.environ.get("HERALD_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def runtime_dir() -> Path:
    """The user's runtime dir for Herald (owner-only), e.g. /run/user/UID/herald."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and sys.platform.startswith("linux"):
        path = Path(base) / APP
    else:
        path = Path(platformdirs.user_runtime_dir(APP, appauthor=False))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def runtime_file(data_dir: Path) -> Path:
    """The runtime file of the instance serving `data_dir` (one per data dir)."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return runtime_dir() / f"instance-{digest}.json"
