"""Wake-ups between processes: a datagram on a Unix socket says "look now", at most one
per burst.

The web service wakes the worker after it enqueues; whoever records an event wakes the
notifier. A wake-up carries no data that matters (the store is the truth), so a lost one
only costs the receiver's slow fallback timer; sending never blocks and never fails.

One wake-up per burst, not per event: beside each receiver's socket lies a one-byte
"pending" flag, a small file that every sender and the receiver map (`<socket>.pending`).
A sender that finds it set sends nothing: the receiver has a wake-up waiting already. One
that finds it clear sets it and sends. The receiver empties its socket, clears the flag, and
only then reads the store (the eventfd/futex pattern), so a wake-up is never lost:

    sender:   make its write visible (commit) -> read the flag -> if clear: set it, send
    receiver: take every datagram -> clear the flag -> read the store

A sender that found the flag set either read it before the clear, so its commit came before
the receiver's read of the store, which sees it; or after the clear, when it had been set
again by a sender whose datagram is still to come (the socket was emptied before the
clear), which wakes the receiver once more. Two senders that both find it clear both send:
one datagram too many, harmless. (Clearing before emptying the socket loses wake-ups: a
datagram taken by the same drain leaves the flag set with nothing on its way; the stress
test in tests/services/test_wake.py caught that.) No atomic instruction is needed, only that the
clear is not reordered after the receiver's reads: it is a `pwrite` system call, and the
receiver's `recv` and SQLite's locks after it take kernel locks. The flag only ever says
"a datagram is on its way or waiting", so it is never trusted beyond the receiver's next
drain. The file is never removed or recreated (a sender keeps its mapping across restarts of
the receiver, which clears the flag when it binds).

What a wake-up says beyond "look" (a task id hint, "cancel", "pruned", "stop") is always
sent; it sets the flag too, so the plain wake-ups behind it are coalesced into it. A
receiver must therefore take *any* datagram as "look at everything".
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import select
import socket

# What a pruner (the worker's retention, `herald prune`) sends the notifier: "events were
# deleted; tell live clients that lost some they had not been sent yet".
PRUNED_WAKE = b"pruned"
# What `herald token revoke` (or create, renewing a token) sends the notifier: "auth.json
# changed; close the connections whose token no longer holds".
REVOKED_WAKE = b"revoked"
# The plain wake-up: "look now". Only this one is coalesced.
LOOK = b"!"

_CLEAR, _PENDING = 0, 1

log = logging.getLogger(__name__)


def pending_path(address: str) -> str | None:
    """The pending flag's file of a wake-up address (None for an abstract socket: no flag,
    every wake-up is sent)."""
    return None if address.startswith("\0") else address + ".pending"


class _Flag:
    """The one-byte pending flag of a receiver, mapped shared (or absent: always send)."""

    def __init__(self, address: str, *, create_dir: bool = False) -> None:
        self.path = pending_path(address)
        self.fd = -1
        self.map: mmap.mmap | None = None
        if self.path is not None:
            self.open(create_dir)

    def open(self, create_dir: bool = False) -> bool:
        """Map the flag's file, creating it if needed (never truncating it: others map it)."""
        if self.map is not None or self.path is None:
            return self.map is not None
        try:
            if create_dir:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return False  # no run dir yet: send every wake-up until there is one
        try:
            if os.fstat(fd).st_size < 1:
                os.pwrite(fd, b"\0", 0)
            self.map = mmap.mmap(fd, 1, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError):
            os.close(fd)
            return False
        self.fd = fd
        return True

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class WakeSender:
    """Sends wake-ups to one address; silently does nothing while nobody listens.

    `sent` and `coalesced` count datagrams sent and plain wake-ups left out (for the bench)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._flag = _Flag(address)
        self.sent = 0
        self.coalesced = 0

    def _pending(self) -> bool:
        """Whether a wake-up is on its way already; if not, marks one as (about to be)."""
        m = self._flag.map
        if m is None and not self._flag.open():
            return False
        assert self._flag.map is not None
        if self._flag.map[0] != _CLEAR:
            return True
        self._flag.map[0] = _PENDING
        return False

    def wake(self, payload: bytes = LOOK) -> None:
        """Wake the receiver: a plain "look" (the default) is sent only when none is
        pending; any other payload says something and is always sent. Call it after the
        write it announces is visible (committed)."""
        if self._pending() and payload == LOOK:
            self.coalesced += 1
            return
        self._send(payload)

    def hint(self, payload: bytes) -> bool:
        """Send a payload that is only advice (a task id) when no wake-up is pending;
        returns whether it was sent. Whoever skips it must `wake()` after its write."""
        if self._pending():
            self.coalesced += 1
            return False
        self._send(payload)
        return True

    def _send(self, payload: bytes) -> None:
        # Nobody listening, or a full buffer (the receiver is already awake): both fine. The
        # flag stays set either way: a receiver that starts clears it, one that is awake
        # drains and clears it.
        with contextlib.suppress(OSError):
            self._sock.sendto(payload, self.address)
            self.sent += 1

    def close(self) -> None:
        if self.sent or self.coalesced:
            log.info("wake-ups to %s: %d sent, %d left out (one was on its way)",
                     os.path.basename(self.address.lstrip("\0")), self.sent, self.coalesced)
        self._sock.close()
        self._flag.close()


class WakeReceiver:
    """A bound datagram socket that receives wake-ups; select/poll on `fileno()`.

    `drain()` clears the pending flag once it has read the socket: whoever calls it must
    look at everything it watches (the store) after it, whatever the datagrams said."""

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
        self._flag = _Flag(address, create_dir=True)
        self._clear()  # what senders marked while nobody listened was never sent

    def fileno(self) -> int:
        return self._sock.fileno()

    def _clear(self) -> None:
        # A system call, not a store into the mapping: it is not reordered after the
        # reads that follow (see the module's docstring).
        if self._flag.fd >= 0:
            with contextlib.suppress(OSError):
                os.pwrite(self._flag.fd, b"\0", 0)

    def drain(self, *, clear: bool = True) -> list[bytes]:
        """Every datagram waiting now (possibly none); then clears the pending flag.

        After the socket is empty, not before: a datagram sent between a clear and the
        last `recv` would be taken with the flag left set, and every later wake-up left out
        while none is on its way. With `clear=False` the flag stays set, so senders keep
        leaving their wake-ups out while the receiver is awake anyway: it must `park()`
        before it sleeps."""
        out = []
        while True:
            try:
                out.append(self._sock.recv(512))
            except (BlockingIOError, InterruptedError):
                break
        if clear:
            self._clear()
        return out

    def park(self) -> list[bytes] | None:
        """Before sleeping on `fileno()`, for a receiver that drains with `clear=False`:
        None if no sender left a wake-up out since the last park (no system call then);
        else the datagrams that came, with the flag cleared, and the receiver must look at
        everything once more before it sleeps (what comes after is woken for)."""
        m = self._flag.map
        if m is not None and m[0] == _CLEAR:
            return None
        return self.drain()

    def wait(self, timeout: float | None) -> list[bytes]:
        """Block up to `timeout` seconds for wake-ups; returns what arrived (maybe none)."""
        # poll, not select.select: that one fails for a descriptor above 1023.
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
        while True:
            try:
                ready = poller.poll(ms)
                break
            except InterruptedError:  # only where PEP 475 does not retry
                continue
        return self.drain() if ready else []

    def close(self) -> None:
        self._sock.close()
        self._flag.close()
        if not self.address.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address)
