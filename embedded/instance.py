"""The runtime file: where a running instance listens and how to authenticate (as Jupyter
does). Owner-only; written when every service is ready, removed on a clean stop."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from embedded.paths import runtime_file
from services.auth import write_private
from services.runtime import pid_alive


@dataclass(frozen=True)
class InstanceInfo:
    """A running instance, as its runtime file says."""

    pid: int
    data_dir: str
    api: str  # http://127.0.0.1:PORT
    ws: str  # ws://127.0.0.1:PORT/ws
    token: str
    version: str
    started_at: float


def write_instance(info: InstanceInfo) -> Path:
    path = runtime_file(Path(info.data_dir))
    write_private(path, json.dumps(asdict(info), indent=2) + "\n")
    return path


def remove_instance(data_dir: Path, pid: int) -> None:
    """Remove the runtime file if it is this process's."""
    path = runtime_file(data_dir)
    info = read_instance(data_dir, check_alive=False)
    if info is not None and info.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_instance(data_dir: Path, *, check_alive: bool = True) -> InstanceInfo | None:
    """The instance serving `data_dir`, or None if none runs (a stale file is ignored)."""
    path = runtime_file(data_dir)
    try:
        raw = json.loads(path.read_text())
        info = InstanceInfo(**raw)
    except (FileNotFoundError, ValueError, TypeError):
        return None
    if check_alive and not pid_alive(info.pid):
        return None
    return info
