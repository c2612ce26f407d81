"""Wake-ups between processes: a datagram on a Unix socket says "look now".

The web service wakes the worker after it enqueues; whoever records an event wakes the
notifier. A wake-up carries no data that matters (the store is the truth), so a lost one
only costs the receiver's slow fallback timer. Sending never blocks and never fails.
"""

from __future__ import annotations

import contextlib
import os
import socket

# What a pruner (the worker's retention, `herald prune`) sends the notifier: "events were
# deleted; tell live clients that lost some they had not been sent yet".
PRUNED_WAKE = b"pruned"
# What `herald token revoke` (or create, renewing a token) sends the notifier: "auth.json
# changed; close the connections whose token no longer holds".
REVOKED_WAKE = b"revoked"


class WakeSender:
    """Sends wake-ups to one address; silently does nothing while nobody listens."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def wake(self, payload: bytes = b"!") -> None:
        # Nobody listening, or a full buffer (the receiver is already awake): both fine.
        with contextlib.suppress(OSError):
            self._sock.sendto(payload, self.address)

    def close(self) -> None:
        self._sock.close()


class WakeReceiver:
    """A bound datagram socket that receives wake-ups; select/poll on `fileno()`."""

    def __init__(self, address: str) -> None:
        self.address = address
        if not address.startswith("\0"):
            os.makedirs(os.path.dirname(address), mode=0o700, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(address)
        if not address.startswith("\0"):
            os.chmod(address, 0o600)
        self._sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> list[bytes]:
        """Every datagram waiting now (possibly none)."""
        out = []
        while True:
            try:
                out.append(self._sock.recv(512))
            except (BlockingIOError, InterruptedError):
                return out

    def wait(self, timeout: float | None) -> list[bytes]:
        """Block up to `timeout` seconds for wake-ups; returns what arrived (maybe none)."""
        import select

        ready, _, _ = select.select([self._sock], [], [], timeout)
        return self.drain() if ready else []

    def close(self) -> None:
        self._sock.close()
        if not self.address.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
