"""The executor processes as the dispatcher sees them: starting, talking to, killing.

Executors are forked from the dispatcher's main thread once the catalog is loaded (fast,
and frozen-bundle safe: no new interpreter, no re-import), each with a run socket and a
control socket (`services.worker.protocol`). The dispatcher is a child subreaper: whatever an
executor starts and leaves behind is re-parented to it, so that killing an attempt can also
kill what it left, and nothing becomes a stray.

Killing an attempt: SIGTERM to the executor's process group and to every descendant found
under it, then SIGKILL to the same (found again) once `TERM_GRACE` has passed.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import socket
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from services.worker import protocol
from services.worker.executor import executor_main

if TYPE_CHECKING:
    from services.store.sqlite import TaskRecord
    from services.tasks.catalog import Catalog, TaskSpec

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
HAVE_PIDFD = hasattr(os, "pidfd_open")
SEND_TIMEOUT = 5.0  # seconds a frame to an executor may take (its socket buffer is empty)


class ExecutorState(StrEnum):
    """Where an executor is in its life."""

    IDLE = "idle"  # waiting for a run frame
    BUSY = "busy"  # running an attempt
    RETIRING = "retiring"  # told to exit (recycled) or being killed
    DEAD = "dead"  # reaped


class StopReason(StrEnum):
    """Why the dispatcher is stopping an attempt by force."""

    CANCEL = "cancel"  # cancelled, and it did not stop at a checkpoint within its grace
    TIMEOUT = "timeout"  # its time limit passed
    SHUTDOWN = "shutdown"  # the worker is stopping; the task will run again
    BROKEN = "broken"  # its process sent something that is not a frame


@dataclass
class Attempt:
    """The attempt an executor runs, as the dispatcher tracks it."""

    record: TaskRecord
    spec: TaskSpec
    started: float  # monotonic
    deadline: float | None = None  # monotonic time of its time limit
    cancel_sent: float | None = None  # monotonic time the soft cancel was sent
    stopping: StopReason | None = None
    term_sent: float | None = None
    kill_sent: float | None = None
    temp_paths: set[str] = field(default_factory=set)
    done: bool = False  # its done frame arrived

    @property
    def task_id(self) -> str:
        return self.record.id

    @property
    def number(self) -> int:
        return self.record.attempt


@dataclass
class ExecutorProcess:
    """One executor process and the dispatcher's end of its sockets."""

    pid: int
    run: socket.socket
    control: socket.socket
    started: float
    state: ExecutorState = ExecutorState.IDLE
    attempt: Attempt | None = None
    tasks_run: int = 0
    rss: int = 0
    reader: protocol.FrameReader = field(default_factory=protocol.FrameReader)
    status: int | None = None  # waitpid status once reaped
    pidfd: int | None = None  # readable once the process has ended (Linux)
    # whose attempts it ran lately, the most recent last (their runners may serve more)
    principals: OrderedDict[str, None] = field(default_factory=OrderedDict)
    temp_folder: str | None = None  # where its attempts' temp dirs go (the dispatcher's)

    def send(self, message: dict[str, Any], *, control: bool = False) -> bool:
        """Send a frame; False if the executor cannot be reached (it is dying)."""
        sock = self.control if control else self.run
        data = protocol.encode(message)
        try:
            sent = sock.send(data)  # all of it, nearly always: the executor reads promptly
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        if sent == len(data):
            return True
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(data[sent:])
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.setblocking(False)

    def receive(self) -> tuple[list[dict[str, Any]], bool]:
        """Every frame readable now, and whether the socket reached its end.

        Raises:
            protocol.FrameError: the executor sent something that is not a frame.
        """
        messages: list[dict[str, Any]] = []
        while True:
            try:
                data = self.run.recv(1 << 18)
            except (BlockingIOError, InterruptedError):
                return messages, False
            except OSError:
                return messages, True
            if not data:
                return messages, True
            messages.extend(self.reader.feed(data))

    def close(self) -> None:
        for sock in (self.run, self.control):
            with contextlib.suppress(OSError):
                sock.close()
        if self.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None


def become_subreaper() -> bool:
    """Have orphaned descendants re-parented to this process (Linux); whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def spawn(catalog: Catalog, *, fork_attempts: bool = False, runners: int = 2) -> ExecutorProcess:
    """Fork one executor (`fork_attempts`: that runs each attempt in a confined child, in
    up to `runners` runners).

    Raises:
        OSError: the fork failed (out of processes or memory).
    """
    run_parent, run_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl_parent, ctl_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        for sock in (run_parent, run_child, ctl_parent, ctl_child):
            sock.close()
        raise
    if pid == 0:  # the child: never returns
        # What it inherited stays frozen: the cycle collector never runs those objects'
        # finalizers here (they may take locks another thread of the dispatcher held
        # when it forked), and their pages stay shared with the dispatcher's.
        gc.freeze()
        executor_main(run_child, ctl_child, catalog, parent, fork_attempts, runners)
    run_child.close()
    ctl_child.close()
    run_parent.setblocking(False)
    ctl_parent.setblocking(False)
    pidfd = None
    if HAVE_PIDFD:
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(pid)
    return ExecutorProcess(pid, run_parent, ctl_parent, time.monotonic(), pidfd=pidfd)


# ------------------------------------------------------------------- processes


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    out: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold anything: parse after the last ")".
        fields = stat[stat.rfind(b")") + 2:].split()
        with contextlib.suppress(ValueError, IndexError):
            out[int(name)] = int(fields[1])
    return out


def descendants(pid: int, parents: dict[int, int] | None = None) -> list[int]:
    """Every process below `pid` (children, their children, ...), found in /proc."""
    parents = _parents() if parents is None else parents
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def signal_tree(ex: ExecutorProcess, sig: int, also: list[int] | None = None) -> None:
    """Send `sig` to an executor's process group, everything below it and `also`."""
    targets = set(descendants(ex.pid)) | set(also or ())
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(ex.pid, sig)
    for p in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def strays(executor_pids: set[int]) -> list[int]:
    """This process's children that are not executors: what killed attempts left behind
    (re-parented here because this process is a subreaper), with their descendants."""
    parents = _parents()
    me = os.getpid()
    roots = [p for p, parent in parents.items() if parent == me and p not in executor_pids]
    found = list(roots)
    for root in roots:
        found.extend(descendants(root, parents))
    return found


def reap_children(pids: list[int] | None = None) -> list[tuple[int, int]]:
    """(pid, status) of every child that has ended (or of those of `pids`), without
    blocking."""
    ended = []
    if pids is not None:
        for pid in pids:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done:
                ended.append((done, status))
        return ended
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        except InterruptedError:
            continue
        if pid == 0:
            return ended
        ended.append((pid, status))
