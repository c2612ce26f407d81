"""Wake-ups between processes: a datagram on a Unix socket says "look now", at most one
per burst.

The web service wakes the worker after it enqueues; whoever records an event wakes the
notifier. A wake-up carries no data that matters (the store is the truth): a receiver takes
*any* datagram as "look at everything" (the whole queue, every new event). Sending never
blocks and never fails; a datagram lost anyway (a full socket, no receiver bound) is covered
below, and past that only costs the receiver's slow fallback timer.

One wake-up per burst, not per event: beside each receiver's socket lies a one-byte
"pending" flag F, a small file that every sender and the receiver map (`<socket>.pending`).

    sender S (per write W):  commit W  ->  read F  ->  set: send nothing
                                                   ->  clear: set F, send a datagram
    receiver R:              take every datagram (or none) -> clear F -> read the store,
                             to its end, before it sleeps (it sleeps on the socket)

A receiver may keep F set while it is awake (`drain(clear=False)`, as the worker does while
it works, so senders send nothing meanwhile), and even while it sleeps as long as something
else is certain to wake it and it will then clear F and read (`park()` before it sleeps).

Why no write is ever left unseen. The invariant: **while F is set, R will, at some later
time, clear F and then read the store to its end.** It holds because F is set only (a) by a
sender that found it clear, and then sends a datagram; or (b) while R is awake, or asleep
with a wake-up of its own due, and R clears F only in `drain()`/`park()`, each followed by a
read. In case (a) R either is awake (it parks before sleeping: F set, so it clears and
reads), or sleeps on the socket and the datagram wakes it (if the socket is full, the
datagrams already in it do; if no receiver is bound, the next one clears F when it binds
and reads everything at start). Now take a write W and its sender S:
- S finds F clear: it sets F and sends. By the invariant R clears F and reads after this
  moment, so after W's commit: it sees W.
- S finds F set: by the invariant the clear that ends this "set" comes after S read F, and
  R reads after that clear, hence after W's commit: it sees W.
Either way, for every commit, a wake-up is sent after it or the receiver is already bound to
read after it. Two senders that both find F clear both send: one datagram too many,
harmless. What the proof needs of order: S's commit is visible before S reads F, and R's
clear before R's read. Both sides pass a full barrier in between: S's commit releases
SQLite's file locks (fcntl) and R's clear is a `pwrite`; R's read takes those locks again,
and each of these system calls runs lock-prefixed (fully ordering) instructions in the
kernel. (Emptying the socket *after* the clear would break it: a datagram taken by that
drain leaves F set with nothing on its way and R asleep; the stress test in
tests/services/test_wake.py caught exactly that in a first version.)

So a sender must send *after* its commit, never before it: a "this task is coming" sent
before the enqueue, and nothing after it, left a worker that read the queue in between and
slept to find the task only by its fallback timer (the reverted first version of this, whose
web named the task before enqueueing it).

Which datagrams are coalesced: a plain look (`LOOK`) and a look that names what it is about
(`LOOK + task id`, a hint that lets an idle worker claim the task before reading the queue)
are sent only when F was clear: a hint is advice, never needed. Everything else says more
than "look" (`PRUNED_WAKE`, `REVOKED_WAKE`, "cancel", "stop", "?" + id) and is always sent;
it sets F too, so the plain wake-ups behind it are coalesced into it. The flag lives in a
file that is never removed or recreated (a sender keeps its mapping across restarts of the
receiver, which clears F when it binds). An abstract socket address has no flag: every
wake-up is sent.
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
# The plain wake-up: "look now". Only this one (alone, or followed by a hint) is coalesced.
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
        """Wake the receiver. A look (`LOOK`, or `LOOK` + a hint such as a task id) is sent
        only when none is pending; any other payload says something and is always sent.
        Call it after the write it announces is committed, never before."""
        pending = self._pending()
        if pending and payload[:1] == LOOK:
            self.coalesced += 1
            return
        self._send(payload)

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
