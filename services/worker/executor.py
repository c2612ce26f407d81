"""An executor process: runs one attempt at a time for the dispatcher that forked it.

It is forked by the dispatcher (`services.worker.pool`) after the catalog is loaded, so it
starts in milliseconds and shares the catalog's memory. Right after the fork it makes itself
a session leader (so the dispatcher can signal it and its whole process group), asks the
kernel to kill it when the dispatcher goes away, closes every file descriptor it inherited
but its two sockets and stdio (no database handle of Herald's stays open in a task's
process), points stdout at the log and stdin at /dev/null.

Its main thread waits for a `run` frame on the run socket, runs the task there, reports
through its context and ends with one `done` frame. A second thread reads the control
socket and passes a `cancel` to the running task's context. SIGTERM raises `Terminated` in
the task (its `finally` blocks run, its pending output is sent) and ends the process: the
dispatcher has already decided the attempt's outcome. The process exits when the
dispatcher says `exit`, when either socket closes, and never returns to the caller.

Confined attempts (`fork_attempts`, where the kernel has Landlock): a sandbox cannot be
lifted, so the executor forks a child for each attempt and stays unconfined itself. The
child confines itself to the attempt's policy (`services.worker.sandbox`), runs the task
as above (it sends the frames and reads the control socket itself; the executor then has
no thread of its own, so that nothing but the child reads the control socket) and exits.
The executor waits for it, removes its temp dir and says how it ended in an `ended` frame
(a child that died without its `done` frame lost its attempt).

Runners: a fork, a mount namespace and the process's exit cost 2-4 ms of CPU here, more
than everything else an attempt takes. So a confined child serves the next attempts of the
same principal and policy too (a "runner", made for a principal's attempt here when one of
its attempts ran here before; the first gets a child that ends with it), as long as it is
clean. An executor keeps up to `runners_each()` runners, one per principal (and policy), so
that principals taking turns do not each pay a fork: it forwards each run frame to the
principal's runner over a socket pair of their own and waits for its one-byte report ("k":
done, ready for the next; "x": done, exiting). One principal's task never shares a process
with another's: not even memory is shared. A runner ends, and the next attempt gets a fresh
one, when its ruleset is dropped or no longer true (the folders it was planned from
changed), after an attempt that left a thread or a child process running, changed a signal
handler, ran out of memory or grew the process by `RUNNER_MAX_GROWTH`, after
`RUNNER_MAX_ATTEMPTS`, and when it has been idle for `RUNNER_IDLE` seconds (but the most
recent one, and the most recent of the owner's policy: they wait for the next attempt after
idle). With every runner taken, the least recently used makes room if it was not used in
the last `RUNNER_BUSY` seconds, or if the principal came `RUNNER_HOT` times since it was
(without a runner here); else the attempt gets a child of its own. Between attempts
a runner puts back the working folder, the environment and the umask.

Cancels: only the executor reads the dispatcher's control socket. While an attempt runs (in
a runner or a child of its own), it passes that attempt's cancels to the attempt's process
over the process's own control socket pair; one that arrives before its run frame is kept
and sent with it.

Each principal has rulesets of its own (the executor builds one per principal and policy),
and a runner is granted a temp root of its own in its principal's ruleset, made by the
executor when it starts the runner and removed when the runner ends: no process of another
principal is ever granted it, even while both live. The dispatcher gives each executor a
folder of its own (the run frame's `temp_parent`), which it removes when the executor
ends: the runners' roots are made in it, and each attempt's temp dir in its runner's root
(or in the folder, for an attempt in a child of its own), by the executor, which removes
it after the attempt. So a killed executor leaves nothing behind, and no frame goes to the
dispatcher about them.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import logging
import os
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from services.core.errors import ErrorCode, TaskCancelled, TaskFailure
from services.landlock import libc
from services.runtime import user_umask
from services.tasks.catalog import Catalog, TaskSpec
from services.tasks.context import TaskContext
from services.worker import protocol, sandbox

log = logging.getLogger("herald.executor")

EXIT_OK = 0
EXIT_TERMINATED = 3  # stopped by SIGTERM (a kill of the attempt)
EXIT_LOST_PARENT = 4  # the dispatcher's sockets closed
EXIT_BROKEN = 70  # the executor itself failed (not a task)
MiB = 1024 * 1024
RUNNER_MAX_ATTEMPTS = 1000  # then a fresh runner: what a task leaves behind stays bounded
RUNNER_MAX_GROWTH = 256 * MiB  # resident memory a runner may gain before it is replaced
RUNNERS_TOTAL = 96  # runners a worker keeps in all (one per principal and policy in each
# executor, ~3.5 MB of memory of its own each): 20 principals taking turns on 4 executors
# find theirs
RUNNER_IDLE = 60.0  # seconds unused after which a runner ends (but the most recent one and
# the owner's most recent: the first attempt after idle finds them ready)
RUNNER_BUSY = 10.0  # a runner used within these seconds is not ended to make room ...
RUNNER_HOT = 3  # ... for a principal that came fewer times since (without a runner)
IDLE_LOOK_AFTER = 0.05  # seconds without a frame after which an executor is idle
SEEN_MAX = 256  # principals remembered as having run here (their next attempt gets a runner)


def runners_each(executors: int) -> int:
    """The runners each of a worker's `executors` keeps at most."""
    return max(2, RUNNERS_TOTAL // max(1, executors))


class Terminated(BaseException):
    """Raised in the task's thread by SIGTERM: the attempt was killed; unwind and exit."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


# ----------------------------------------------------------------------- the context


class ExecutorContext(TaskContext):
    """The TaskContext of an attempt in an executor: every report becomes a frame."""

    def __init__(self, executor: Executor, task_id: str, attempt: int,
                 timeout: float | None) -> None:  # fmt: skip
        super().__init__(task_id, attempt, timeout=timeout)
        self._executor = executor

    def _record_progress(self, fraction: float | None, message: str | None) -> None:
        self._executor.send({"t": "progress", "fraction": fraction,
                             "message": None if message is None else str(message)})

    def _record_output(self, lines: list[str]) -> None:
        self._executor.send({"t": "output", "lines": lines})

    def _record_cleanup(self, path: str, add: bool) -> None:
        self._executor.send({"t": "cleanup", "add" if add else "drop": path})


class _OutputWriter(io.TextIOBase):
    """`sys.stdout` during an attempt: each printed line becomes a line of output."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._ctx.output(line)
        return len(text)

    def flush(self) -> None:
        if self._partial:
            self._ctx.output(self._partial)
            self._partial = ""


# ---------------------------------------------------------------------- the process


def _memory_rlimit() -> int:
    """The resource that bounds what a process can allocate: RLIMIT_DATA on Linux (private
    writable memory, what malloc and mmap of anonymous memory take), else RLIMIT_AS."""
    return resource.RLIMIT_DATA if sys.platform.startswith("linux") else resource.RLIMIT_AS


def _memory_in_use() -> int:
    """Bytes of this process counted by `_memory_rlimit` right now."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def rss_bytes() -> int:
    """The most resident memory this process ever had (one system call, no file to read):
    an executor that once grew past the ceiling is recycled even if it shrank since."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _close_inherited(keep: set[int]) -> None:
    """Close every descriptor but `keep`: none of the dispatcher's files (its databases,
    its sockets, the supervisor's pipes) may be reachable from a task."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _become_executor(parent: int, keep: set[int]) -> None:
    """Everything a freshly forked executor does before it serves."""
    os.setsid()  # its own session and process group: killpg reaches all it starts
    os.umask(user_umask())  # a task's files are the user's: the user's modes, not Herald's
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the dispatcher died before the line above
            os._exit(EXIT_LOST_PARENT)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the dispatcher to handle
    signal.signal(signal.SIGTERM, _on_sigterm)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # the worker's stdout carries its readiness line: tasks print to the log
    _close_inherited(keep | {0, 1, 2})
    _fresh_stdio()
    threading.current_thread().name = "executor"
    with contextlib.suppress(OSError, AttributeError):  # "herald-executor" in ps and top
        ctypes.CDLL("libc.so.6").prctl(15, b"herald-executor", 0, 0, 0)


def _fresh_stdio() -> None:
    """New stdio objects (and logging's stream): the inherited ones' internal locks may
    have been held by another thread of the dispatcher at the moment it forked."""
    sys.stdin = open(0, closefd=False, encoding="utf-8", errors="replace")
    sys.stdout = open(1, "w", closefd=False, encoding="utf-8", errors="replace",
                      buffering=1)  # fmt: skip
    sys.stderr = open(2, "w", closefd=False, encoding="utf-8", errors="backslashreplace",
                      buffering=1)  # fmt: skip
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):  # fmt: skip
            handler.setStream(sys.stderr)


@dataclass
class _Runner:
    """A confined process serving attempts of one principal and policy (see the module's
    docstring), as the executor sees it."""

    pid: int
    pipe: socket.socket  # the executor's end: run frames out, one-byte reports in
    control: socket.socket  # the executor's end of its control pair: its cancels out
    key: tuple[str, str]  # (principal, policy)
    ruleset: sandbox.Ruleset  # what it is confined by: it serves while this is kept
    temp_root: str  # its own, granted to it alone
    owner: bool  # confined by the owner's policy (see RUNNER_IDLE)
    used: float = 0.0  # time.monotonic() of its last attempt


def _environ_now() -> dict[Any, Any]:
    """A copy of the environment as `os.environ` keeps it (its encoded mapping where there is
    one: comparing that costs no decoding of every variable)."""
    data = getattr(os.environ, "_data", None)
    return dict(data) if isinstance(data, dict) else dict(os.environ)


def _restore_environ(saved: dict[Any, Any]) -> None:
    """Put the environment back to `saved` (`_environ_now()`), setting and unsetting only
    the variables that differ (an attempt changes TMPDIR, and seldom anything else)."""
    now = _environ_now()
    if now == saved:
        return
    data = getattr(os.environ, "_data", None)
    decode = os.fsdecode if isinstance(data, dict) else str
    for key in now.keys() - saved.keys():
        os.environ.pop(decode(key), None)
    for key, value in saved.items():
        if now.get(key) != value:
            os.environ[decode(key)] = decode(value)


def _attempt_dir(root: str, msg: dict[str, Any]) -> str:
    """The temp dir of the attempt `msg` in a runner's temp `root`."""
    name = f"attempt-{msg.get('id')}-{msg.get('attempt')}".replace(os.sep, "_")
    return os.path.join(root, name)


def _remove(folder: str) -> None:
    """Remove an attempt's temp dir: one system call when it is empty (the usual case)."""
    try:
        os.rmdir(folder)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)


class Executor:
    """The child side of one executor: serves `run` frames until told to exit.

    Args:
        run: the run socket (frames both ways).
        control: the control socket (cancel requests in).
        catalog: the tasks it can run.
        fork_attempts: run each attempt in a child of its own, confined to the policy its
            run frame carries.
        runners: how many runners it keeps at most (see the module's docstring).
    """

    def __init__(self, run: socket.socket, control: socket.socket, catalog: Catalog, *,
                 fork_attempts: bool = False, runners: int = 2) -> None:  # fmt: skip
        self.fork_attempts = fork_attempts
        self.runners_max = max(1, runners)
        self._rulesets = sandbox.RulesetCache(size=self.runners_max + 8)  # (a runner's kept)
        self._hide: bool | None = None  # whether Herald's folders can be hidden (tried once)
        self._rss: Callable[[], int] = rss_bytes  # what "done" frames report
        self.run_sock = run
        self.control = control
        self.catalog = catalog
        self._send_lock = threading.Lock()
        self._current: ExecutorContext | None = None
        self._current_lock = threading.Lock()
        self._early_cancels: set[tuple[Any, Any]] = set()  # arrived before their run frame
        self._reader = protocol.FrameReader()
        self._pending: list[tuple[dict[str, Any], bytes]] = []
        self._frame = b""  # the frame of the last message `_next_message` returned
        self._limit_resource = _memory_rlimit()
        self._runners: OrderedDict[tuple[str, str], _Runner] = OrderedDict()  # LRU first
        self._ending: list[int] = []  # runners killed, not reaped yet
        # whose attempts ran here without a runner, and when the last few did
        self._seen: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._control_reader = protocol.FrameReader()  # the dispatcher's control socket
        self._dirty = False  # the last attempt left this process unfit for another
        self._run_poller: Any = None  # (select.poll of the run socket, made once)

    # ------------------------------------------------------------------ frames

    def send(self, message: dict[str, Any]) -> None:
        """Send one frame; a dispatcher that went away ends the process."""
        self.send_raw(protocol.encode(message))

    def send_raw(self, data: bytes) -> None:
        """Send one encoded frame."""
        try:
            with self._send_lock:
                self.run_sock.sendall(data)
        except OSError:
            os._exit(EXIT_LOST_PARENT)

    def _next_message(self) -> dict[str, Any] | None:
        while not self._pending:
            # The rulesets kept (and the runners) are looked at idle; in a burst the next
            # frame comes within this, and they are not even counted.
            if self.fork_attempts and not self._readable(IDLE_LOOK_AFTER):
                timeout = self._idle_timeout()
                if timeout is not None:
                    timeout = max(0.0, timeout - IDLE_LOOK_AFTER)
                if timeout is not None and not self._readable(timeout):
                    self._rulesets.expire()
                    self._check_runners()
                    continue
            try:
                data = self.run_sock.recv(1 << 16)
            except InterruptedError:
                continue
            except OSError:
                return None
            if not data:
                return None
            self._pending.extend(self._reader.feed_frames(data))
        msg, self._frame = self._pending.pop(0)
        return msg

    def _readable(self, timeout: float) -> bool:
        """Whether the run socket has something to read within `timeout` seconds. (Polled,
        not a socket timeout: that would make the socket's file non-blocking, and a runner
        shares it.)"""
        if self._run_poller is None:
            self._run_poller = select.poll()
            self._run_poller.register(self.run_sock.fileno(), select.POLLIN)
        return bool(self._run_poller.poll(timeout * 1000))

    def _cancels(self, reader: protocol.FrameReader) -> list[dict[str, Any]]:
        """The cancel frames in what the control socket holds now (it blocks until there is
        something); the socket's end (its sender gone) ends the process."""
        try:
            data = self.control.recv(4096)
        except InterruptedError:
            return []
        except OSError:
            data = b""
        if not data:
            os._exit(EXIT_LOST_PARENT)  # (runners and children die with this process)
        return [msg for msg in reader.feed(data) if msg.get("t") == "cancel"]

    def _keep_early(self, msg: dict[str, Any]) -> None:
        """Keep a cancel whose attempt has not come (yet): its run frame may follow."""
        if len(self._early_cancels) > 100:
            self._early_cancels.clear()
        self._early_cancels.add((msg.get("id"), msg.get("attempt")))

    def _watch_control(self) -> None:
        """Control thread: cancel requests for the running attempt; EOF ends the process."""
        reader = protocol.FrameReader()
        while True:
            for msg in self._cancels(reader):
                with self._current_lock:
                    ctx = self._current
                    if (ctx is not None and ctx.task_id == msg.get("id")
                            and ctx.attempt == msg.get("attempt")):  # fmt: skip
                        ctx.request_cancel()
                    else:
                        self._keep_early(msg)

    # ------------------------------------------------------------------- serve

    def serve(self) -> int:
        """Run attempts until told to stop; returns the exit status."""
        if not self.fork_attempts:
            self._start_control()
        while True:
            msg = self._next_message()
            if msg is None:
                self._retire_runners(wait=True)
                return EXIT_LOST_PARENT
            if msg["t"] == "exit":
                self._retire_runners(wait=True)
                return EXIT_OK
            if msg["t"] == "run":
                if self.fork_attempts:
                    self._run_forked(msg)
                else:
                    self._run(msg)

    def _start_control(self) -> None:
        threading.Thread(target=self._watch_control, name="control", daemon=True).start()

    def _run_forked(self, msg: dict[str, Any]) -> None:
        """Run one attempt confined: in this principal's runner when the frame says whose
        it is and where its temp dirs go, else in a child of its own."""
        if self._ending:
            self._reap_ending()
        if (msg.get("id"), msg.get("attempt")) in self._early_cancels:
            msg = {**msg, "cancelled": True}  # its cancel came first
            self._frame = b""  # (not the frame received)
        self._early_cancels.clear()
        parent = msg.get("temp_parent")
        principal, policy = msg.get("principal"), msg.get("sandbox")
        if isinstance(parent, str) and isinstance(principal, str) and isinstance(policy, dict):
            try:
                runner = self._runner_for(principal, policy, parent)
            except (OSError, ValueError, TypeError):
                runner = None  # a child of its own says what went wrong
            if runner is not None:
                self._run_in_runner(runner, msg)
                return
        self._run_once(msg)

    # ------------------------------------------------------------------ cancels

    def _relay_control(self, msg: dict[str, Any], to: socket.socket) -> None:
        """Read what the dispatcher's control socket holds; pass the cancels of the attempt
        `msg` to its process (`to`), keep the others' (their run frame comes later)."""
        for cancel in self._cancels(self._control_reader):
            if (cancel.get("id"), cancel.get("attempt")) == (msg.get("id"), msg.get("attempt")):
                with contextlib.suppress(OSError):  # (gone: it has ended anyway)
                    to.sendall(protocol.encode(cancel))
            else:
                self._keep_early(cancel)

    def _until_readable(self, fd: int, msg: dict[str, Any], to: socket.socket) -> None:
        """Wait until `fd` is readable (the attempt's report, or its process's end), passing
        the attempt's cancels on meanwhile."""
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(self.control.fileno(), select.POLLIN)
        while True:
            try:
                ready = {f for f, _ in poller.poll()}
            except InterruptedError:
                continue
            if self.control.fileno() in ready:
                self._relay_control(msg, to)
            if fd in ready:
                return

    def _forget_others(self, keep: _Runner | None = None) -> None:
        """In a freshly forked attempt process: close the executor's ends of every runner's
        sockets (another principal's runner must be out of reach) and the dispatcher's
        control socket (the executor reads it)."""
        for r in self._runners.values():
            if r is not keep:
                r.pipe.close()
                r.control.close()
        self._runners.clear()
        self.control.close()

    # ------------------------------------------------------------------ runners

    def _runner_for(self, principal: str, policy: dict[str, Any],
                    parent: str) -> _Runner | None:  # fmt: skip
        """This principal's runner for `policy`: the one running if it fits, else a new one
        (its temp root made in `parent`, the dispatcher's folder for this executor), or None
        when none of this principal's attempts ran here recently (see below).

        Raises:
            OSError, ValueError, TypeError: the policy or its rules cannot be had.
        """
        wanted = sandbox.Policy.from_json(policy)
        hide = sandbox.is_owner(wanted) and self._can_hide()
        ruleset = self._rulesets.current(sandbox.flat(wanted) if hide else wanted, principal)
        key = (principal, json.dumps(policy, sort_keys=True))
        r = self._runners.get(key)
        if r is not None and r.ruleset is ruleset and self._alive(r):
            self._runners.move_to_end(key)
            return r
        if r is not None:
            self._retire(r)  # before the next is granted anything
        now = time.monotonic()
        missed = self._seen.get(key)
        if missed is None:
            # The first of this principal's attempts here gets a child of its own that
            # ends with it: a process that outlived its attempt costs this one a copy of
            # every page it writes until it ends, and a principal seen once may not come
            # back (with every attempt another's that costs more than the fork it saves).
            self._seen[key] = deque([now], maxlen=RUNNER_HOT)
            while len(self._seen) > SEEN_MAX:
                self._seen.popitem(last=False)
            return None
        self._seen.move_to_end(key)
        missed.append(now)
        if len(self._runners) >= self.runners_max:
            oldest = next(iter(self._runners.values()))
            hotter = len(missed) == RUNNER_HOT and missed[0] > oldest.used
            if now - oldest.used < RUNNER_BUSY and not hotter:
                # Every runner here served lately, and this principal came no more often
                # than the least recent of them: ending that one would be ending one that
                # comes back (more principals taking turns than there are runners, each in
                # its turn), so this attempt gets a child of its own.
                return None
            self._retire(oldest)  # the least recently used: unused lately, or less wanted
        temp_root = tempfile.mkdtemp(prefix="herald-runner-", dir=parent)
        try:
            ruleset.add_temp_dir(temp_root)
        except OSError:
            shutil.rmtree(temp_root, ignore_errors=True)
            raise
        ours, theirs = socket.socketpair()
        control, their_control = socket.socketpair()
        parent_rss = rss_bytes()
        pid = os.fork()
        if pid == 0:  # the runner: never returns
            def serve() -> int:
                gc.freeze()  # what it inherited is never collected here: its pages stay shared
                ours.close()
                control.close()
                self._forget_others()
                self.control = their_control
                self._rss = lambda: parent_rss  # the executor's size, not the runner's
                return self._serve_runner(theirs, ruleset, temp_root,
                                          (wanted, temp_root) if hide else None)  # fmt: skip
            _run_then_exit(serve)
        theirs.close()
        their_control.close()
        r = _Runner(pid, ours, control, key, ruleset, temp_root, owner=sandbox.is_owner(wanted))
        self._runners[key] = r
        return r

    @staticmethod
    def _alive(r: _Runner) -> bool:
        try:
            return os.waitpid(r.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def _run_in_runner(self, r: _Runner, msg: dict[str, Any]) -> None:
        """Hand the attempt to the runner; wait for its report; a runner that ended during
        the attempt is said in an `ended` frame (without its done frame, it is lost)."""
        # The attempt's temp dir, in the runner's root (where it may write), by a name the
        # runner knows from the frame: the frame goes as it was received.
        mine, frame = _attempt_dir(r.temp_root, msg), self._frame
        try:
            os.mkdir(mine, 0o700)
        except OSError:  # (one left behind by this attempt before: a name of its own)
            mine, frame = tempfile.mkdtemp(prefix="herald-attempt-", dir=r.temp_root), b""
        if not frame:
            frame = protocol.encode({**msg, "temp_dir": mine})
        try:
            r.pipe.sendall(frame)
            self._until_readable(r.pipe.fileno(), msg, r.control)
            report = r.pipe.recv(1)
        except OSError:
            report = b""
        r.used = time.monotonic()
        if report != b"k":
            self._runners.pop(r.key, None)
            r.pipe.close()
            r.control.close()
            status = self._wait(r.pid)
            shutil.rmtree(r.temp_root, ignore_errors=True)
            self.send({"t": "ended", "id": msg.get("id"), "attempt": msg.get("attempt"),
                       "status": status})  # fmt: skip
        _remove(mine)
        # (No refresh here: the next attempt checks the ruleset anyway, and one that is
        # no longer true means a new runner, whose fork costs more than the rebuild.)

    def _idle_timeout(self) -> float | None:
        """How long an idle executor may wait before it has something to look at (rulesets
        that hold a user's files, runners due to end); None: for ever."""
        timeout = self._rulesets.timeout()
        due = [r.used + RUNNER_IDLE for r in self._idle_enders()]
        if due:
            until = max(0.0, min(due) - time.monotonic()) + 0.01
            timeout = until if timeout is None else min(timeout, until)
        return timeout

    def _idle_enders(self) -> list[_Runner]:
        """The runners that end when idle long: all but the most recent one and the most
        recent of the owner's policy."""
        runners = list(self._runners.values())
        owners = [r for r in runners if r.owner]
        keep = {id(runners[-1]), *([id(owners[-1])] if owners else [])} if runners else set()
        return [r for r in runners if id(r) not in keep]

    def _check_runners(self) -> None:
        """While idle: end each runner once its ruleset is dropped or no longer true (its
        rules hold their files, as the ruleset's do), if it died, or idle long."""
        now = time.monotonic()
        idle_long = {id(r) for r in self._idle_enders() if now - r.used >= RUNNER_IDLE}
        for r in list(self._runners.values()):
            if id(r) in idle_long or not self._rulesets.holds(r.ruleset) or not self._alive(r):
                self._retire(r)
        self._reap_ending()

    def _retire(self, r: _Runner) -> None:
        """End a runner (idle: there is nothing of it to save). It is reaped later (its
        teardown need not hold up the next attempt's fork)."""
        self._runners.pop(r.key, None)
        r.pipe.close()
        r.control.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGKILL)
        self._ending.append(r.pid)
        shutil.rmtree(r.temp_root, ignore_errors=True)  # its rule now grants nothing

    def _retire_runners(self, *, wait: bool = False) -> None:
        """End every runner (the executor is ending) and reap them."""
        for r in list(self._runners.values()):
            self._retire(r)
        self._reap_ending(wait=wait)

    def _reap_ending(self, *, wait: bool = False) -> None:
        for pid in list(self._ending):
            try:
                done = os.waitpid(pid, 0 if wait else os.WNOHANG)[0]
            except ChildProcessError:
                done = pid
            except InterruptedError:
                continue
            if done:
                self._ending.remove(pid)

    @staticmethod
    def _wait(pid: int) -> int:
        while True:
            try:
                return os.waitpid(pid, 0)[1]
            except InterruptedError:
                continue
            except ChildProcessError:
                return 0

    def _serve_runner(self, pipe: socket.socket, ruleset: sandbox.Ruleset, temp_root: str,
                      hiding: tuple[sandbox.Policy, str] | None) -> int:  # fmt: skip
        """The runner's body: confine once, then run attempts from `pipe` while clean.

        Args:
            ruleset: the rules to enforce (the owner's flat ones if `hiding`).
            temp_root: the runner's temp root, where the executor makes each attempt's
                temp dir (`_attempt_dir`, or the one a frame names in the root).
            hiding: the owner's policy and the runner's temp root, when Herald's
                folders are to be hidden first. Should that fail (it worked when tried),
                the runner plans the rules around them itself (~1,000 for the owner: tens
                of ms, so only then) and serves that one attempt only.
        """
        with contextlib.suppress(OSError, AttributeError):  # (Linux: Landlock is Linux's)
            libc().prctl(1, signal.SIGKILL, 0, 0, 0)
        reusable = True
        chosen: sandbox.Ruleset | str = ruleset
        if hiding is not None and not sandbox.hide(hiding[0].deny):
            reusable = False
            chosen = _build(*hiding)  # around Herald's folders, the runner's root granted
        problem = self._confine(chosen)
        if problem is None:
            self._start_control()
        cwd, env, threads = os.getcwd(), _environ_now(), threading.active_count()
        stderr, umask, start_rss = sys.stderr, user_umask(), rss_bytes()
        reader = protocol.FrameReader()
        pending: list[dict[str, Any]] = []
        attempts = 0
        while True:
            while not pending:
                try:
                    data = pipe.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    return EXIT_OK  # the executor retired it
                pending.extend(reader.feed(data))
            msg = pending.pop(0)
            if problem is not None:
                self._not_confined(msg, problem)
                pipe.sendall(b"x")
                return EXIT_OK
            temp_dir = msg.get("temp_dir")
            if not isinstance(temp_dir, str) or os.path.dirname(temp_dir) != temp_root:
                temp_dir = _attempt_dir(temp_root, msg)
            os.environ["TMPDIR"] = tempfile.tempdir = temp_dir
            self._dirty = False
            self._run(msg)
            attempts += 1
            clean = reusable and not self._dirty and attempts < RUNNER_MAX_ATTEMPTS
            clean = self._tidy(cwd, env, threads, stderr, umask) and clean
            if clean and rss_bytes() > start_rss + RUNNER_MAX_GROWTH:  # (its peak)
                clean = False
            pipe.sendall(b"k" if clean else b"x")
            if not clean:
                return EXIT_OK

    @staticmethod
    def _tidy(cwd: str, env: dict[Any, Any], threads: int, stderr: Any, umask: int) -> bool:
        """Put back what an attempt may have changed; False if it left what cannot be put
        back (a thread or a child process still running, a signal handler of its own)."""
        clean = True
        try:
            os.chdir(cwd)
        except OSError:
            clean = False
        _restore_environ(env)
        tempfile.tempdir = None
        sys.stderr = stderr
        os.umask(umask)
        if threading.active_count() != threads:
            clean = False
        if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
            clean = False
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break  # no children
            if pid == 0:
                clean = False  # one still runs
                break
        return clean

    # ------------------------------------------------------- one child per attempt

    def _run_once(self, msg: dict[str, Any]) -> None:
        """Run one attempt in a child of its own, confined; wait for it; say how it ended."""
        temp_dir: str | None = None
        parent = msg.get("temp_parent")
        if isinstance(parent, str):
            try:
                temp_dir = tempfile.mkdtemp(prefix="herald-attempt-", dir=parent)
            except OSError as exc:  # the attempt then has no temp dir it may write to
                log.warning("no temp dir for task %s: %s", msg.get("id"), exc)
        parent_rss = rss_bytes()
        ruleset: sandbox.Ruleset | str | None = None
        flat: sandbox.Ruleset | None = None  # the owner's, once Herald's folders are hidden
        hidden: tuple[str, ...] = ()
        policy = msg.get("sandbox")
        who = str(msg.get("principal") or "")
        wanted: sandbox.Policy | None = None
        if isinstance(policy, dict):
            try:  # built here, unconfined, and kept for the next attempts of this policy
                wanted = sandbox.Policy.from_json(policy)
                if sandbox.is_owner(wanted) and self._can_hide():
                    flat = self._rulesets.for_attempt(sandbox.flat(wanted), temp_dir, who)
                    hidden = tuple(wanted.deny)
                else:
                    ruleset = self._rulesets.for_attempt(wanted, temp_dir, who)
            except (OSError, ValueError, TypeError) as exc:
                ruleset = str(exc)
        control, their_control = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the attempt's process: never returns
            def attempt() -> int:
                nonlocal ruleset
                control.close()
                self._forget_others()
                self.control = their_control
                self._rss = lambda: parent_rss  # the executor's size, not the attempt's
                if flat is not None:
                    if sandbox.hide(hidden):
                        ruleset = flat  # every folder of the user's, creating included
                    elif wanted is not None:  # the fallback, around Herald's folders:
                        ruleset = _build(wanted, temp_dir)  # (hundreds of rules, rare)
                if self._become_attempt(msg, temp_dir, ruleset):
                    self._run(msg)
                return EXIT_OK

            _run_then_exit(attempt)
        their_control.close()
        try:
            ended = os.pidfd_open(pid)
        except OSError:  # (no pidfds: cancels reach it only with its run frame)
            ended = None
        if ended is not None:
            try:
                self._until_readable(ended, msg, control)
            finally:
                os.close(ended)
        control.close()
        status = self._wait(pid)
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
        self.send({"t": "ended", "id": msg.get("id"), "attempt": msg.get("attempt"),
                   "status": status})  # fmt: skip
        self._rulesets.refresh()  # while idle, so that the next attempt finds it ready

    def _can_hide(self) -> bool:
        if self._hide is None:
            self._hide = sandbox.can_hide()
            log.info("Herald's folders %s hidden from attempts by a mount namespace",
                     "are" if self._hide else "cannot be")  # fmt: skip
        return self._hide

    def _become_attempt(self, msg: dict[str, Any], temp_dir: str | None,
                        ruleset: sandbox.Ruleset | str | None) -> bool:  # fmt: skip
        """In a freshly forked attempt process: die with the executor, confine, listen
        for cancels. False if it could not be confined (its done frame says why)."""
        with contextlib.suppress(OSError, AttributeError):  # (Linux: Landlock is Linux's)
            libc().prctl(1, signal.SIGKILL, 0, 0, 0)
        if temp_dir:
            os.environ["TMPDIR"] = temp_dir
            tempfile.tempdir = temp_dir
        problem = self._confine(ruleset)
        if problem is not None:
            self._not_confined(msg, problem)
            return False
        self._start_control()
        return True

    def _confine(self, ruleset: sandbox.Ruleset | str | None) -> str | None:
        """In an attempt's process: enforce `ruleset` (a string: why there is none), then
        close the executor's rulesets (a task could add rules to them); what went wrong."""
        problem = ruleset if isinstance(ruleset, str) else None
        if isinstance(ruleset, sandbox.Ruleset):
            try:
                ruleset.enforce()
            except OSError as exc:
                problem = str(exc)
        self._rulesets.close_all()
        return problem

    def _not_confined(self, msg: dict[str, Any], problem: str) -> None:
        """The done frame of an attempt that did not run because it could not be confined."""
        ctx = TaskContext(str(msg.get("id")), int(msg.get("attempt") or 0))
        self._done(ctx, {"outcome": "failed", "error": {
            "code": ErrorCode.SANDBOX, "message":
            f"The task could not be confined to its folders, so it did not run: {problem}"}})

    def _run(self, msg: dict[str, Any]) -> None:
        task_id, attempt = str(msg["id"]), int(msg["attempt"])
        timeout = msg.get("timeout")
        ctx = ExecutorContext(self, task_id, attempt, timeout)
        spec = self.catalog.get(str(msg.get("name")))
        if spec is None:
            self._done(ctx, {"outcome": "failed", "error": {
                "code": ErrorCode.UNKNOWN_TASK,
                "message": f"This worker has no task named {msg.get('name')!r}."}})
            return
        with self._current_lock:
            self._current = ctx
            if msg.get("cancelled") or (task_id, attempt) in self._early_cancels:
                ctx.request_cancel()
            self._early_cancels.clear()
        memory_limit = msg.get("memory_limit")
        saved_limit = self._limit_memory(memory_limit)
        saved_stdout = sys.stdout
        writer = _OutputWriter(ctx)
        sys.stdout = writer
        outcome: dict[str, Any]
        recycle = False
        try:
            try:
                result = spec.func(ctx, **self._arguments(spec, msg.get("args") or {}))
            finally:
                sys.stdout = saved_stdout
                writer.flush()
                ctx.flush()
            try:
                frame = protocol.encode({"t": "done", "outcome": "succeeded", "result": result,
                                         "rss": self._rss()})  # fmt: skip
            except (TypeError, ValueError, RecursionError) as exc:
                outcome = self._failure(spec, ErrorCode.BAD_RESULT,
                                        f"the task's result is not JSON: {exc}")
            else:
                if len(frame) <= protocol.MAX_FRAME:
                    self.send_raw(frame)
                    return
                outcome = self._failure(
                    spec, ErrorCode.BAD_RESULT, f"the task's result is too large "
                    f"({len(frame) // MiB} MB; at most {protocol.MAX_FRAME // MiB} MB)")
        except Terminated:
            with contextlib.suppress(Exception):
                ctx.flush()
            os._exit(EXIT_TERMINATED)
        except TaskCancelled:
            outcome = {"outcome": "cancelled"}
        except MemoryError:
            recycle = not self.fork_attempts  # its heap may be in any state: start afresh
            self._dirty = True  # (a runner ends)
            gc.collect()
            if memory_limit:
                outcome = self._failure(spec, ErrorCode.MEMORY_LIMIT, "The task needed more "
                                        f"than its memory limit of {memory_limit} MB.")
            else:
                outcome = self._failure(spec, ErrorCode.EXCEPTION,
                                        "MemoryError: the machine is out of memory.")
        except TaskFailure as exc:
            outcome = self._failure(spec, exc.code, exc.message, exc=exc)
            if exc.detail:
                outcome["error"]["detail"] = exc.detail
        except BaseException as exc:  # SystemExit from a task is its failure, not ours
            log.warning("task %s (%s) raised %s", task_id, spec.name, type(exc).__name__)
            outcome = self._failure(spec, ErrorCode.EXCEPTION, f"{type(exc).__name__}: {exc}",
                                    exc=exc, tb=_task_traceback(exc))  # fmt: skip
        finally:
            self._restore_memory(saved_limit)
            with self._current_lock:
                self._current = None
        if recycle:
            outcome["recycle"] = True
        self._done(ctx, outcome)

    def _done(self, ctx: TaskContext, outcome: dict[str, Any]) -> None:
        try:
            self.send({"t": "done", **outcome, "rss": self._rss()})
        except (TypeError, ValueError, RecursionError):  # an error text that is not JSON
            self.send({"t": "done", "outcome": "failed", "rss": self._rss(), "error": {
                "code": ErrorCode.EXCEPTION, "message": "the task failed (unprintable)"}})

    @staticmethod
    def _failure(spec: TaskSpec, code: str, message: str, *, exc: BaseException | None = None,
                 tb: str | None = None) -> dict[str, Any]:  # fmt: skip
        error: dict[str, Any] = {"code": str(code), "message": str(message)}
        if tb is not None:
            error["traceback"] = tb
        retry = None
        if exc is not None and isinstance(exc, Exception) and spec.should_retry(exc):
            after = exc.retry_after if isinstance(exc, TaskFailure) else None
            retry = {"after": after}
        return {"outcome": "failed", "error": error, "retry": retry}

    @staticmethod
    def _arguments(spec: TaskSpec, args: dict[str, Any]) -> dict[str, Any]:
        """The call's keyword arguments: defaults for parameters added since the task was
        queued (an upgrade meanwhile); arguments no longer declared are left out."""
        declared = {p.name for p in spec.params}
        given = {k: v for k, v in args.items() if k in declared}
        return {p.name: p.default for p in spec.params if not p.required} | given

    def _limit_memory(self, mb: Any) -> tuple[int, int] | None:
        if not isinstance(mb, int) or mb <= 0:
            return None
        saved = resource.getrlimit(self._limit_resource)
        soft = _memory_in_use() + mb * MiB
        hard = saved[1]
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        try:
            resource.setrlimit(self._limit_resource, (soft, hard))
        except (ValueError, OSError):
            log.warning("could not set a memory limit of %d MB", mb)
            return None
        return saved

    def _restore_memory(self, saved: tuple[int, int] | None) -> None:
        if saved is not None:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(self._limit_resource, saved)


def executor_main(run: socket.socket, control: socket.socket, catalog: Catalog,
                  parent: int, fork_attempts: bool = False,
                  runners: int = 2) -> NoReturn:  # fmt: skip
    """The body of a freshly forked executor; ends the process, never returns."""
    def serve() -> int:
        _become_executor(parent, {run.fileno(), control.fileno()})
        run.setblocking(True)
        control.setblocking(True)
        return Executor(run, control, catalog, fork_attempts=fork_attempts,
                        runners=runners).serve()  # fmt: skip

    _run_then_exit(serve)


def _run_then_exit(body: Callable[[], int]) -> NoReturn:
    """Run the body of a forked child and end the process with its status (EXIT_TERMINATED
    when stopped, EXIT_BROKEN with the traceback on stderr when it raised); never returns."""
    code = EXIT_BROKEN
    try:
        code = body()
    except Terminated:
        code = EXIT_TERMINATED
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _build(policy: sandbox.Policy, temp_dir: str | None) -> sandbox.Ruleset | str:
    """A ruleset for `policy` with `temp_dir` granted, or why there is none."""
    try:
        ruleset = sandbox.Ruleset(policy)
        if temp_dir:
            ruleset.add_temp_dir(temp_dir)
        return ruleset
    except (OSError, ValueError, TypeError) as exc:
        return str(exc)


def _task_traceback(exc: BaseException) -> str:
    """The traceback of a task's exception from the task's own code down (the executor's
    frame that called it is not the user's business)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def describe_exit(status: int) -> str:
    """How an executor ended, for people: "exited with code 1", "killed by SIGSEGV"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"ended ({status})"

