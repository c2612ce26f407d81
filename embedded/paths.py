"""Default locations: the data dir and the runtime file that says where an instance runs."""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
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
    """The user's runtime dir for Herald (owner-only), e.g. /run/user/UID/herald.

    Without XDG_RUNTIME_DIR (a root shell, a container) it is /tmp/herald-UID, which must
    be ours and private: another user could have created it first to read our token.

    Raises:
        PermissionError: the fallback dir belongs to someone else or is not private.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        path = Path(base) / APP
    elif sys.platform.startswith("linux") or sys.platform == "darwin":
        path = Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(platformdirs.user_runtime_dir(APP, appauthor=False))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if hasattr(os, "getuid"):
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            raise PermissionError(f"{path} is not a private folder of this user; remove it")
    return path


def runtime_file(data_dir: Path) -> Path:
    """The runtime file of the instance serving `data_dir` (one per data dir)."""
    import hashlib  # here: `herald serve` keeps OpenSSL out of its process (embedded.cli)

    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return runtime_dir() / f"instance-{digest}.json"
