"""The task that runs a program and streams its output, line by line.

The program runs without a shell, with stdin from /dev/null and stderr merged into stdout,
in a session (process group) of its own, so that cancelling stops the whole tree: SIGTERM
to the group, SIGKILL to whatever is left TERM_GRACE seconds later. Its time limit is the
task's own (`"timeout"` at submit, like any task's): the worker then kills the attempt and
everything it started.

Threads: a reader thread owns the pipe and hands lines over through a queue; the task's own
thread does every `ctx` call (the worker records them with its own database connection),
watching the queue, the cancel flag and the deadline.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from typing import IO, Any

from services.core.errors import ErrorCode, TaskCancelled, TaskFailure
from services.tasks.builtin.files import display_path, io_failure
from services.tasks.catalog import Param, ParamType, PathAccess, PathKind, task
from services.tasks.context import TaskContext

TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
EXIT_GRACE = 2.0  # seconds to wait for output after the program exited (children may hold it)
CHECK_INTERVAL = 0.2  # longest wait between two looks at the cancel flag
MAX_LINE = 64 * 1024  # longer lines are split: a program without newlines cannot eat memory
TAIL_LINES = 20  # last output lines kept in a failure's detail
TAIL_WIDTH = 500  # characters of each of them

_EOF = object()
_POSIX = os.name == "posix"


def _read_lines(pipe: IO[bytes], lines: queue.SimpleQueue[Any]) -> None:
    """Reader thread: every line of the pipe, decoded, then _EOF; closes the pipe."""
    try:
        with pipe:
            for raw in iter(lambda: pipe.readline(MAX_LINE), b""):
                text = raw.decode("utf-8", errors="replace")
                lines.put(text.removesuffix("\n").removesuffix("\r"))
    except (OSError, ValueError):
        pass  # the pipe broke: the output ends here
    finally:
        lines.put(_EOF)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send `sig` to the program's whole process group (or to the program off POSIX)."""
    try:
        if _POSIX:
            # The group outlives its leader while any member lives; its id is not reused.
            os.killpg(proc.pid, sig)
        elif sig == signal.SIGTERM:
            proc.terminate()
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _stop(proc: subprocess.Popen[bytes], reader: threading.Thread) -> None:
    """SIGTERM the group; SIGKILL whatever is left after TERM_GRACE; reap the program."""
    deadline = time.monotonic() + TERM_GRACE
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:
        pass
    # The pipe closes when the last member of the group is gone.
    reader.join(timeout=max(0.0, deadline - time.monotonic()))
    _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
    proc.wait()


@task(
    "process.run",
    title="Run a program",
    description=(
        "Runs a program with arguments (no shell) in a folder, streaming its output "
        "(stdout and stderr merged) line by line. It fails (exit_status, with the code and "
        "the last lines of output) when the program exits with a code not in 'Accepted exit "
        "codes' (default 0) or is killed by a signal; the result's exit_code says how it "
        "ended. Cancelling, or its time limit, stops the program and everything it "
        "started. Programs that buffer their output when it is not a terminal show it late."
    ),
    params=[
        Param("program", ParamType.STRING, title="Program", minimum=1, maximum=4096,
              access=PathAccess.EXECUTE,
              description="The program: a name looked up in PATH, or a path."),  # fmt: skip
        Param("args", ParamType.STRING_LIST, title="Arguments", default=[],
              description="Its arguments, one per item."),  # fmt: skip
        Param("cwd", ParamType.PATH, title="Folder", path_kind=PathKind.DIRECTORY,
              default=None, description="Where it runs; by default your home folder."),  # fmt: skip
        Param("ok_exit_codes", ParamType.INTEGER_LIST, title="Accepted exit codes", default=[0],
              minimum=1, maximum=256,
              description="The exit codes that mean success (others fail the task)."),  # fmt: skip
    ],
    path_defaults={"cwd": lambda args: os.path.expanduser("~")},
    display={
        "summary": "exit {exit_code:code} · {lines:count:line}",
        "fields": [
            {"key": "exit_code", "label": "Exit code", "type": "code"},
            {"key": "lines", "label": "Output", "type": "output"},
        ],
    },
)
def run(ctx: TaskContext, program: str, args: list[str] | None = None, cwd: str | None = None,
        ok_exit_codes: list[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run a program, stream its output lines, return its exit code.

    Raises:
        TaskFailure: exit_status when it exits with a code not in `ok_exit_codes` (default
            [0]) or dies of a signal; its detail has the exit code and the last lines.
    """
    accepted = set(ok_exit_codes if ok_exit_codes is not None else [0])
    cwd = cwd or os.path.expanduser("~")
    executable = program if os.sep in program or (os.altsep and os.altsep in program) else (
        shutil.which(program))  # fmt: skip
    if executable is None:
        raise TaskFailure(f"program not found: {program}", code="program_not_found")
    ctx.check_cancelled()
    try:
        proc = subprocess.Popen(
            [executable, *(args or [])],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=_POSIX,
            creationflags=0 if _POSIX else subprocess.CREATE_NEW_PROCESS_GROUP,
        )
    except FileNotFoundError as exc:
        if not os.path.isdir(cwd):
            raise io_failure(exc, display_path(cwd)) from None
        raise TaskFailure(f"program not found: {program}", code="program_not_found") from None
    except PermissionError:
        raise TaskFailure(f"not allowed to run {program}", code="permission_denied") from None
    except OSError as exc:
        raise TaskFailure(f"could not start {program}: {exc.strerror or exc}",
                          code="program_failed_to_start") from None  # fmt: skip

    assert proc.stdout is not None
    lines: queue.SimpleQueue[Any] = queue.SimpleQueue()
    reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines),
                              name=f"output-{proc.pid}", daemon=True)  # fmt: skip
    reader.start()
    count = 0
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    stopped = False
    try:
        ctx.progress(None, f"running pid {proc.pid}")
        exited_at: float | None = None
        while True:
            if ctx.cancelled:
                raise TaskCancelled()
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at >= EXIT_GRACE:
                # The program is done but something it started still holds the output:
                # stop the group; a process that left it keeps only the reader thread.
                _stop(proc, reader)
                stopped = True
                count += _drain(ctx, lines, tail)
                break
            try:
                item = lines.get(timeout=CHECK_INTERVAL)
            except queue.Empty:
                # A quiet program: what it printed last is recorded now, not with the
                # next line (a prompt, "waiting for...", is seen while it waits).
                ctx.flush()
                continue
            if item is _EOF:
                break
            ctx.output(item)
            tail.append(item[:TAIL_WIDTH])
            count += 1
    except BaseException:
        _drain(ctx, lines, tail)  # first what was read: a killed attempt may not get further
        if not stopped:
            _stop(proc, reader)
        _drain(ctx, lines, tail)
        raise
    code = proc.wait()
    if code in accepted:
        ctx.progress(1.0, f"exited with code {code}")
        return {"exit_code": code, "lines": count}
    raise TaskFailure(exit_message(program, code), code=ErrorCode.EXIT_STATUS,
                      detail={"exit_code": code, "lines": count,
                              "last_lines": list(tail)})  # fmt: skip


def exit_message(program: str, code: int) -> str:
    """What a failed program's exit status says, for people."""
    name = os.path.basename(program) or program
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        return f"{name} was killed by {sig}"
    return f"{name} exited with code {code}"


def _drain(ctx: TaskContext, lines: queue.SimpleQueue[Any], tail: deque[str]) -> int:
    """Emit the lines already read (the program was stopped); how many there were."""
    count = 0
    while True:
        try:
            item = lines.get_nowait()
        except queue.Empty:
            return count
        if item is not _EOF:
            ctx.output(item)
            tail.append(item[:TAIL_WIDTH])
            count += 1
