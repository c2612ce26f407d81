"""Where Herald keeps its files inside a data dir. Pure path arithmetic, shared by all sides."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

# Linux limits a Unix socket path to 107 bytes; longer ones use the abstract namespace.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class DataLayout:
    """The files of one Herald instance.

    Attributes:
        root: the data dir.
    """

    root: Path

    @property
    def ledger_db(self) -> Path:
        """The task ledger and the event log (SQLite, WAL)."""
        return self.root / "herald.db"

    @property
    def queue_db(self) -> Path:
        """Huey's queue (SQLite)."""
        return self.root / "queue.db"

    @property
    def auth_file(self) -> Path:
        """Principals and their token hashes (owner-only)."""
        return self.root / "auth.json"

    @property
    def token_file(self) -> Path:
        """The install's own token, in clear, for local clients (owner-only)."""
        return self.root / "token"

    @property
    def config_file(self) -> Path:
        return self.root / "config.toml"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the one instance running on this data dir; says its pid."""
        return self.root / "herald.lock"

    @property
    def instance_file(self) -> Path:
        """The running instance's runtime file (API, WebSocket, token), owner-only."""
        return self.run_dir / "instance.json"

    @property
    def run_dir(self) -> Path:
        """Sockets of the running instance (owner-only)."""
        return self.root / "run"

    @property
    def status_file(self) -> Path:
        """The supervisor's view of each service (state, port, pid), for /api/health."""
        return self.run_dir / "services.json"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def wake_address(self, service: str) -> str:
        """The Unix datagram address on which `service` is woken up.

        A filesystem path when it fits, else a name in Linux's abstract namespace
        (leading NUL) derived from the path.
        """
        path = str(self.run_dir / f"{service}.wake")
        if len(path.encode()) <= _MAX_SOCKET_PATH or not sys.platform.startswith("linux"):
            return path
        digest = hashlib.sha256(path.encode()).hexdigest()[:32]
        return f"\0herald-{digest}-{service}"
