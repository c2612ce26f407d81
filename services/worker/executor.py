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
(a child that died without its `done` frame lost its attempt). The fork costs about a
millisecond; the executor stays small, so it is quick.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import logging
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
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


class Executor:
    """The child side of one executor: serves `run` frames until told to exit.

    Args:
        run: the run socket (frames both ways).
        control: the control socket (cancel requests in).
        catalog: the tasks it can run.
        fork_attempts: run each attempt in a child of its own, confined to the policy its
            run frame carries.
    """

    def __init__(self, run: socket.socket, control: socket.socket, catalog: Catalog, *,
                 fork_attempts: bool = False) -> None:  # fmt: skip
        self.fork_attempts = fork_attempts
        self._rulesets = sandbox.RulesetCache()
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
        self._pending: list[dict[str, Any]] = []
        self._limit_resource = _memory_rlimit()

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
            try:
                if self.fork_attempts:  # the rulesets kept are looked at while idle
                    self.run_sock.settimeout(self._rulesets.timeout())
                data = self.run_sock.recv(1 << 16)
            except TimeoutError:
                self._rulesets.expire()
                continue
            except InterruptedError:
                continue
            except OSError:
                return None
            if not data:
                return None
            self._pending.extend(self._reader.feed(data))
        return self._pending.pop(0)

    def _watch_control(self) -> None:
        """Control thread: cancel requests for the running attempt; EOF ends the process."""
        reader = protocol.FrameReader()
        while True:
            try:
                data = self.control.recv(4096)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            if not data:
                os._exit(EXIT_LOST_PARENT)
            for msg in reader.feed(data):
                if msg.get("t") != "cancel":
                    continue
                with self._current_lock:
                    ctx = self._current
                    if (ctx is not None and ctx.task_id == msg.get("id")
                            and ctx.attempt == msg.get("attempt")):  # fmt: skip
                        ctx.request_cancel()
                    else:
                        if len(self._early_cancels) > 100:
                            self._early_cancels.clear()
                        self._early_cancels.add((msg.get("id"), msg.get("attempt")))

    # ------------------------------------------------------------------- serve

    def serve(self) -> int:
        """Run attempts until told to stop; returns the exit status."""
        if not self.fork_attempts:
            self._start_control()
        while True:
            msg = self._next_message()
            if msg is None:
                return EXIT_LOST_PARENT
            if msg["t"] == "exit":
                return EXIT_OK
            if msg["t"] == "run":
                if self.fork_attempts:
                    self._run_forked(msg)
                else:
                    self._run(msg)

    def _start_control(self) -> None:
        threading.Thread(target=self._watch_control, name="control", daemon=True).start()

    def _run_forked(self, msg: dict[str, Any]) -> None:
        """Run one attempt in a child of its own, confined; wait for it; say how it ended."""
        temp_dir = msg.get("temp_dir") if isinstance(msg.get("temp_dir"), str) else None
        parent_rss = rss_bytes()
        ruleset: sandbox.Ruleset | str | None = None
        flat: sandbox.Ruleset | None = None  # the owner's, once Herald's folders are hidden
        hidden: tuple[str, ...] = ()
        policy = msg.get("sandbox")
        wanted: sandbox.Policy | None = None
        if isinstance(policy, dict):
            try:  # built here, unconfined, and kept for the next attempts of this policy
                wanted = sandbox.Policy.from_json(policy)
                if sandbox.is_owner(wanted) and self._can_hide():
                    flat = self._rulesets.for_attempt(sandbox.flat(wanted), temp_dir)
                    hidden = tuple(wanted.deny)
                else:
                    ruleset = self._rulesets.for_attempt(wanted, temp_dir)
            except (OSError, ValueError, TypeError) as exc:
                ruleset = str(exc)
        self.run_sock.settimeout(None)  # the attempt's frames block, never time out
        pid = os.fork()
        if pid == 0:  # the attempt's process: never returns
            def attempt() -> int:
                nonlocal ruleset
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
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                status = 0
                break
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
        problem = ruleset if isinstance(ruleset, str) else None
        if isinstance(ruleset, sandbox.Ruleset):
            try:
                ruleset.enforce()
            except OSError as exc:
                problem = str(exc)
        self._rulesets.close_all()  # the executor's: a task could add rules to them
        if problem is not None:
            ctx = TaskContext(str(msg.get("id")), int(msg.get("attempt") or 0))
            self._done(ctx, {"outcome": "failed", "error": {
                "code": ErrorCode.SANDBOX, "message":
                f"The task could not be confined to its folders, so it did not run: {problem}"}})
            return False
        self._start_control()
        return True

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
                  parent: int, fork_attempts: bool = False) -> NoReturn:  # fmt: skip
    """The body of a freshly forked executor; ends the process, never returns."""
    def serve() -> int:
        _become_executor(parent, {run.fileno(), control.fileno()})
        run.setblocking(True)
        control.setblocking(True)
        return Executor(run, control, catalog, fork_attempts=fork_attempts).serve()

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

