"""The `herald` command line.

    herald                      open the desktop app
    herald serve                run the services headless until Ctrl-C or SIGTERM
    herald submit TASK k=v ...  submit a task (--wait: live progress, exit 0/1; --json;
                                --timeout SECONDS: each attempt's time limit)
    herald tasks | show ID | cancel ID | catalog
    herald logs ID [--follow]   a task's whole output (from the event log); --follow: and
                                its new lines live until it ends
    herald token create NAME [--allow TASK]... [--root DIR]... [--read-root DIR]...
                                a second principal, with its own token (printed alone
                                on stdout) and what it may do
    herald token list | revoke NAME
    herald prune [--older-than 7d] [--keep N] [--vacuum]
                                delete old finished tasks and their events
    herald service NAME ...     (internal) run one service; the frozen app's children
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedded import herald_version
from embedded.paths import default_data_dir, runtime_dir
from services.core.retry import format_seconds
from services.core.wording import (
    attempt_line,
    attempt_text,
    cancel_text,
    countdown,
    failure_text,
    limits_text,
    retry_text,
    waiting_attempt,
)

if TYPE_CHECKING:
    from services.core.events import Event

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
STREAM_GIVE_UP = 30.0  # seconds `submit --wait` waits for a lost event stream to return


def _positive_seconds(text: str) -> float:
    """argparse type of --timeout: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(text: str) -> float:
    """argparse type of --older-than: a number with a unit (s, m, h, d, w; days if none)."""
    t = text.strip().lower()
    unit = _UNITS.get(t[-1:]) if t else None
    try:
        value = float(t[:-1] if unit else t) * (unit or 86400)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an age: {text!r} (e.g. 7d, 12h, 30m)") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a positive age, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="herald",
        description="Run slow jobs in the background; get progress and results pushed live.",
    )
    p.add_argument("--version", action="version", version=f"herald {herald_version()}")
    p.add_argument("--self-check", action="store_true",
                   help="open the app, exit 0 once its services are ready and live updates "
                        "flow (1 otherwise): a smoke test of an installation")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where Herald keeps its files (default: $HERALD_DATA_DIR or the "
                        "user data dir)")  # fmt: skip
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("serve", help="run the services headless until Ctrl-C or SIGTERM")
    s.add_argument("--port", type=int, default=0, help="the API's port (default: a free one)")
    s.add_argument("--ws-port", type=int, default=0, help="the WebSocket's port")
    s.add_argument("--workers", type=int, default=None, help="tasks run at once")

    s = sub.add_parser("submit", help="submit a task")
    s.add_argument("task", help="the task's name (see `herald catalog`)")
    s.add_argument("args", nargs="*", metavar="KEY=VALUE", help="the task's arguments")
    s.add_argument("--wait", action="store_true", help="show live progress; exit 0 on success")
    s.add_argument("--json", action="store_true", help="print the task as JSON")
    s.add_argument("--idempotency-key", default=None,
                   help="a retried submit with the same key returns the same task")  # fmt: skip
    s.add_argument("--timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="each attempt's time limit (default: the task's own, see `herald "
                        "catalog`); an attempt still running then is stopped")  # fmt: skip

    s = sub.add_parser("tasks", help="list your tasks, newest first")
    s.add_argument("--state", default=None, help="only tasks in these states (comma separated)")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("show", help="show one task")
    s.add_argument("id")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("logs", help="print a task's whole output (from the event log)")
    s.add_argument("id", help="the task's id")
    s.add_argument("--follow", "-f", action="store_true",
                   help="then keep printing its new lines live until it ends (Ctrl-C stops "
                        "following; the task goes on)")  # fmt: skip

    s = sub.add_parser("cancel", help="cancel a task")
    s.add_argument("id")

    s = sub.add_parser("catalog", help="list the tasks Herald can run")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("token", help="manage principals and their tokens")
    tsub = s.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = tsub.add_parser("create", help="create a principal (or renew its token and "
                                       "capabilities); prints its token")  # fmt: skip
    t.add_argument("name")
    t.add_argument("--allow", action="append", default=None, metavar="TASK",
                   help="a task it may run (repeat it; '*' for all; default: every task "
                        "but process.run)")  # fmt: skip
    t.add_argument("--root", action="append", default=[], metavar="DIR",
                   help="a folder its tasks may read and write under (repeat it; default: "
                        "none, so tasks with a path are refused)")  # fmt: skip
    t.add_argument("--read-root", action="append", default=[], metavar="DIR",
                   help="a folder its tasks may only read under (repeat it)")
    t.add_argument("--network", action="store_true",
                   help="its tasks may open network connections")
    t = tsub.add_parser("list", help="the principals and what each may do")
    t.add_argument("--json", action="store_true")
    t = tsub.add_parser("revoke", help="remove a principal: its token stops working and its "
                                       "open connections are closed")  # fmt: skip
    t.add_argument("name")

    s = sub.add_parser("prune", help="delete old finished tasks and their events now "
                                     "(also done by the worker; works with or without a "
                                     "running instance)")  # fmt: skip
    s.add_argument("--older-than", type=_duration, default=None, metavar="AGE",
                   help="finished longer ago than AGE, e.g. 7d, 12h, 30m (default: "
                        "[retention] max_age_days in config.toml, 30 d)")  # fmt: skip
    s.add_argument("--keep", type=int, default=None, metavar="N",
                   help="and all but the N newest finished tasks (default: [retention] "
                        "max_tasks, 10000; 0 keeps none)")  # fmt: skip
    s.add_argument("--vacuum", action="store_true",
                   help="then shrink herald.db to what it holds (freed space is otherwise "
                        "reused by new tasks; a running instance waits meanwhile)")  # fmt: skip

    s = sub.add_parser("service", help=argparse.SUPPRESS)
    s.add_argument("name", choices=["web", "worker", "notifier"])
    s.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "service":  # fast path for children: no parsing of our own
        return _service(argv[1:])
    args = _parser().parse_args(argv)
    data_dir = (args.data_dir.expanduser().resolve() if args.data_dir else default_data_dir())
    cmd = args.command
    if cmd is None:
        return _gui(data_dir, args.self_check)
    if cmd == "serve":
        return _serve(data_dir, args)
    if cmd == "token":
        return _token(data_dir, args)
    if cmd == "prune":
        return _prune(data_dir, args)
    from embedded.client import ApiError, HeraldClient, NotRunning, ServiceUnavailable

    args.resolved_data_dir = data_dir
    try:
        with HeraldClient.for_data_dir(data_dir) as client:
            return _client_command(client, cmd, args)
    except NotRunning as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        print(f"herald: {exc.message}", file=sys.stderr)
        for field, msg in exc.fields.items():
            print(f"  {field}: {msg}", file=sys.stderr)
        return EXIT_USAGE if exc.status in (400, 404, 422) else EXIT_FAILED
    except ServiceUnavailable as exc:
        print(f"herald: {exc}", file=sys.stderr)
        _say_what_is_down(data_dir)
        return EXIT_FAILED
    except BrokenPipeError:  # the reader left (`herald tasks | head`): not Herald's problem
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return EXIT_OK
    except OSError as exc:
        print(f"herald: cannot reach the running instance: {exc}", file=sys.stderr)
        _say_what_is_down(data_dir)
        return EXIT_FAILED


def _say_what_is_down(data_dir: Path, submitted: bool = False) -> None:
    """Which of the instance's services are down, since when and why (from the
    supervisor's status file), on stderr."""
    from embedded.instance import services_down

    lines = services_down(data_dir)
    for line in lines:
        print(f"herald: {line}", file=sys.stderr, flush=True)
    if submitted and any(line.startswith("worker ") for line in lines):
        print("herald: the task was accepted; it runs once the worker is back",
              file=sys.stderr, flush=True)  # fmt: skip


def _client_command(client: Any, cmd: str, args: argparse.Namespace) -> int:
    """The commands that talk to a running instance."""
    if cmd == "submit":
        return _submit(client, args)
    if cmd == "tasks":
        return _tasks(client, args)
    if cmd == "show":
        task = client.get(args.id)
        _print_task(task, args.json, None if args.json else _display_of(client, task))
        return EXIT_OK
    if cmd == "logs":
        return _logs(client, args)
    if cmd == "cancel":
        return _cancel(client, args)
    if cmd == "catalog":
        return _catalog(client, args)
    return EXIT_USAGE


# ----------------------------------------------------------------------- commands


def _service(argv: list[str]) -> int:
    if not argv:
        print("herald service: which service? web, worker or notifier", file=sys.stderr)
        return EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name == "web":
        from services.web.server import main as web_main

        return web_main(rest)
    if name == "worker":
        from services.worker.server import main as worker_main

        return worker_main(rest)
    if name == "notifier":
        from services.notifier.server import main as notifier_main

        return notifier_main(rest)
    print(f"herald service: unknown service {name!r}", file=sys.stderr)
    return EXIT_USAGE


def _gui(data_dir: Path, self_check: bool = False) -> int:
    """The desktop app; headless serving where it cannot run (no display, no Qt)."""
    reason = ""
    if (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        reason = "there is no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    else:
        try:
            from desktop.app import main as gui_main
        except ImportError as exc:  # Qt or one of its system libraries is missing
            reason = f"Qt cannot be loaded ({exc})"
    if reason:
        if self_check:
            print(f"herald: self-check failed: {reason}", file=sys.stderr)
            return EXIT_FAILED
        print(f"herald: not opening the window: {reason}.\n"
              "Starting the services headless instead (as `herald serve`); use\n"
              "`herald submit`, `herald tasks` and the HTTP API from another shell.\n",
              file=sys.stderr)  # fmt: skip
        return _serve(data_dir, _parser().parse_args(["serve"]))
    return int(gui_main(data_dir, self_check=self_check))


def _token(data_dir: Path, args: argparse.Namespace) -> int:
    from services.access import protected_dirs
    from services.auth import ALL_TASKS, create_principal, is_under, load_entries, revoke_principal
    from services.layout import DataLayout
    from services.wake import REVOKED_WAKE, WakeSender

    layout = DataLayout(data_dir)
    try:
        if args.token_command == "list":
            return _token_list(load_entries(layout), args.json)
        if args.token_command == "revoke":
            if not revoke_principal(layout, args.name):
                print(f"herald: there is no principal {args.name!r}", file=sys.stderr)
                return EXIT_FAILED
        else:
            try:
                runtime: Path | None = runtime_dir()
            except OSError:
                runtime = None
            protected = protected_dirs(layout, runtime)
            for folder in [*args.root, *args.read_root]:
                real = os.path.realpath(os.path.expanduser(folder))
                if any(is_under(real, d) or is_under(d, real) for d in protected):
                    raise ValueError(f"{folder} holds or lies in Herald's own files; no "
                                     "principal may be given it")  # fmt: skip
            if args.allow is not None:
                _check_task_names(layout, args.allow, ALL_TASKS)
            token = create_principal(layout, args.name, allow=args.allow, roots=args.root,
                                     read_roots=args.read_root, network=args.network)  # fmt: skip
    except ValueError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # A revoked or renewed token's open WebSockets are closed at once (the notifier looks
    # again at auth.json on this wake-up; without it, within its fallback interval).
    sender = WakeSender(layout.wake_address("notifier"))
    sender.wake(REVOKED_WAKE)
    sender.close()
    if args.token_command == "revoke":
        print(f"Principal {args.name!r} revoked.", file=sys.stderr)
        return EXIT_OK
    print(token)
    print(f"Principal {args.name!r} created. Keep this token secret: send it as "
          "`Authorization: Bearer <token>`.", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _check_task_names(layout: Any, names: list[str], everything: str) -> None:
    """Refuse a name no task of the catalog has (a typo would allow nothing)."""
    from services.config import load_config
    from services.tasks.catalog import load_catalog

    catalog = load_catalog(load_config(layout).task_modules)
    unknown = [n for n in names if n != everything and n not in catalog]
    if unknown:
        raise ValueError("no such task: " + ", ".join(unknown) + " (see `herald catalog`)")


def _token_list(entries: dict[str, Any], as_json: bool) -> int:
    from services.auth import DEFAULT_DENIED

    rows = []
    for name, entry in sorted(entries.items()):
        caps = entry.capabilities
        rows.append({"principal": name, "owner": caps.owner,
                     "allow": None if caps.allow is None else sorted(caps.allow),
                     "roots": list(caps.roots), "read_roots": list(caps.read_roots),
                     "network": caps.network})  # fmt: skip
    if as_json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for row in rows:
        if row["owner"]:
            print(f"{row['principal']}  owner: every task, every folder but Herald's own")
            continue
        allow = ("every task but " + ", ".join(sorted(DEFAULT_DENIED))
                 if row["allow"] is None else ", ".join(row["allow"]) or "no task")  # fmt: skip
        print(f"{row['principal']}  tasks: {allow}")
        print(f"    read+write: {', '.join(row['roots']) or '-'}")
        print(f"    read only:  {', '.join(row['read_roots']) or '-'}")
        print(f"    network:    {'yes' if row['network'] else 'no'}")
    return EXIT_OK


def _prune(data_dir: Path, args: argparse.Namespace) -> int:
    """`herald prune`: retention now, on the store itself (SQLite lets it share the file
    with a running instance; its short transactions interleave with the services')."""
    from services.config import load_config
    from services.layout import DataLayout
    from services.store.sqlite import TaskStore

    layout = DataLayout(data_dir)
    if not layout.ledger_db.exists():
        print(f"herald: no task ledger in {data_dir}: nothing to prune", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(layout)
    except ValueError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return EXIT_USAGE
    older_than = args.older_than if args.older_than is not None else config.retention_seconds
    keep = args.keep if args.keep is not None else config.retention_keep
    if keep is not None and keep < 0:
        print("herald: --keep must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    rules = []
    if older_than is not None:
        age = f"{older_than / 86400:g} d" if older_than >= 86400 else format_seconds(older_than)
        rules.append(f"finished more than {age} ago")
    if keep is not None:
        rules.append(f"beyond the newest {keep} finished")
    store = TaskStore(layout.ledger_db)
    try:
        done = store.prune(older_than=older_than, keep=keep)
        if done.events:
            from services.wake import PRUNED_WAKE, WakeSender

            sender = WakeSender(layout.wake_address("notifier"))  # if one runs
            sender.wake(PRUNED_WAKE)
            sender.close()
        if args.vacuum:
            store.vacuum()
        store.checkpoint(truncate=True, wait=2.0)
        sizes = store.sizes()
    finally:
        store.close()
    print(f"Pruned {done.tasks} task(s) and {done.events} event(s)"
          + (f" ({' or '.join(rules)})" if rules else " (no retention rule is set)")
          + f"; {layout.ledger_db.name} is {sizes['db'] / 1e6:.1f} MB, its WAL "
            f"{sizes['wal'] / 1e6:.1f} MB.")  # fmt: skip
    return EXIT_OK


def _serve(data_dir: Path, args: argparse.Namespace) -> int:
    import logging

    from embedded.instance import AlreadyRunning, Instance, StartupError
    from embedded.supervisor import ServiceState, SupervisorError

    logging.basicConfig(level=os.environ.get("HERALD_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")  # fmt: skip
    serving = False

    def on_state(st: Any) -> None:
        if not serving:
            return  # while starting, a failure is said once, by start()
        if st.state is ServiceState.FAILED:
            print(f"herald: {st.name} failed: {st.message}", file=sys.stderr, flush=True)
        elif st.state is ServiceState.RESTARTING and st.message:
            print(f"herald: {st.name} {st.message}", file=sys.stderr, flush=True)
        elif st.state is ServiceState.READY and st.restarts:
            print(f"herald: {st.name} is back (restart {st.restarts})", file=sys.stderr,
                  flush=True)  # fmt: skip

    async def run() -> int:
        nonlocal serving
        inst = Instance(data_dir, web_port=args.port, notifier_port=args.ws_port,
                        workers=args.workers, on_state=on_state)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await inst.start()
        except AlreadyRunning as exc:
            print(f"herald: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except StartupError as exc:
            print(f"herald: cannot start: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except SupervisorError as exc:
            print(f"herald: could not start the services: {exc}", file=sys.stderr)
            print(f"herald: their logs are in {inst.layout.log_dir}", file=sys.stderr)
            return EXIT_FAILED
        serving = True
        assert inst.supervisor is not None
        sup = inst.supervisor
        print(f"Herald {herald_version()} is serving\n"
              f"  API        {sup.api_url}/api\n"
              f"  WebSocket  {sup.ws_url}\n"
              f"  Data dir   {data_dir}\n"
              f"  Token      {inst.layout.token_file}\n"
              f"  Logs       {inst.layout.log_dir}\n"
              "Press Ctrl-C to stop.", flush=True)  # fmt: skip
        for notice in inst.notices:  # last, where they are seen
            print(f"herald: {notice}", file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            serving = False
            print("Stopping...", flush=True)
            await inst.stop()
        return EXIT_OK

    return asyncio.run(run())


def _find_spec(client: Any, task: str) -> dict[str, Any]:
    """The catalog entry of `task` (exits with a message if there is none)."""
    spec = next((t for t in client.catalog() if t["name"] == task), None)
    if spec is None:
        raise SystemExit(f"herald: unknown task {task!r}; see `herald catalog`")
    return spec


def _parse_kv(spec: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """Typed arguments from KEY=VALUE words, by the catalog entry's declared parameters."""
    from services.core.params import Param, ParamType

    task = spec["name"]
    params = {p["name"]: p for p in spec["params"]}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"herald: expected KEY=VALUE, got {pair!r}")
        p = params.get(key)
        if p is None:
            raise SystemExit(f"herald: {task} has no parameter {key!r}; it takes: "
                             + (", ".join(params) if params else "nothing"))  # fmt: skip
        param = Param(key, ParamType(p["type"]))
        try:
            value = param.from_text(text)
        except ValueError as exc:
            raise SystemExit(f"herald: {key} {exc}") from None
        if param.type is ParamType.PATH and text:
            value = os.path.abspath(os.path.expanduser(text))
        out[key] = value
    return out


def _submit(client: Any, args: argparse.Namespace) -> int:
    spec = _find_spec(client, args.task)
    task_args = _parse_kv(spec, args.args)
    if not args.wait:
        task = client.submit(args.task, task_args, args.idempotency_key, timeout=args.timeout)
        _say_what_is_down(args.resolved_data_dir, submitted=True)
        if args.json:
            print(json.dumps(task, indent=2))
        else:
            print(task["id"])
        return EXIT_OK
    return _submit_and_wait(client, args, spec, task_args)


def _note(bar: _ProgressBar, text: str) -> None:
    """A line about the waited task on stderr (retries, limits), below the progress bar."""
    bar.clear()
    print(f"herald: {text}", file=sys.stderr, flush=True)


def _submit_and_wait(client: Any, args: argparse.Namespace, spec: dict[str, Any],
                     task_args: dict[str, Any]) -> int:  # fmt: skip
    # Give up if the notifier stays away this long (the instance was stopped, say).
    stream = client.events(give_up_after=STREAM_GIVE_UP)
    stream.open()  # before submitting, so no event of the task can be missed
    bar = _ProgressBar(args.task, enabled=sys.stderr.isatty() and not args.json)
    task, early_interrupt = _submit_uninterrupted(client, args, task_args)
    task_id = task["id"]
    limit = task.get("timeout")
    max_attempts = task.get("max_attempts")
    retry_at: float | None = None  # Unix time of the next attempt while one is awaited
    interrupted_at: float | None = None
    final: dict[str, Any] | None = None
    last: Event | None = None  # the terminal event
    try:
        while final is None:
            # A Ctrl-C inside the generator ends it: make a new one each time round.
            try:
                if early_interrupt:  # Ctrl-C while the task was being submitted
                    early_interrupt = False
                    raise KeyboardInterrupt
                for msg in stream.messages(timeout=0.5):
                    if interrupted_at is not None and time.monotonic() - interrupted_at > 15:
                        final = client.get(task_id)  # the task ignores the cancel: stop waiting
                        break
                    if msg is not None and msg.type == "reset":
                        # Events were pruned: the task's own end may be among them.
                        now = client.get(task_id)
                        if now.get("state") in ("succeeded", "failed", "cancelled"):
                            final = now
                            break
                    ev = msg.event if msg is not None else None
                    if ev is None or ev.task_id != task_id:
                        if retry_at is not None:  # keep the countdown current
                            bar.message(f"next try {countdown(retry_at - time.time())}")
                        continue
                    etype = ev.type.value
                    if etype == "progress":
                        bar.update(ev.data.get("fraction"), ev.data.get("message") or "")
                    elif etype == "output" and not args.json:
                        bar.clear()
                        for line in ev.data.get("lines", []):
                            print(line, flush=True)
                    elif etype == "started":
                        retry_at = None
                        attempt = int(ev.data.get("attempt") or ev.attempt or 1)
                        if isinstance(ev.data.get("timeout"), int | float):
                            limit = ev.data["timeout"]
                        bar.label = _bar_label(args.task, attempt, max_attempts, limit)
                        if attempt > 1:
                            _note(bar, f"attempt {attempt_text(attempt, max_attempts)} started")
                    elif etype == "retrying":
                        if isinstance(ev.data.get("max_attempts"), int):
                            max_attempts = ev.data["max_attempts"]
                        at = ev.data.get("at")
                        retry_at = float(at) if isinstance(at, int | float) else None
                        _note(bar, retry_text(ev))
                    elif ev.terminal:
                        last = ev
                        final = client.get(task_id)
                        break
            except KeyboardInterrupt:
                if interrupted_at is not None:
                    raise
                interrupted_at = time.monotonic()
                bar.clear()
                answer = client.cancel(task_id)
                grace = spec.get("cancel_grace")
                if answer.get("state") == "running":
                    what = cancel_text(grace if isinstance(grace, int | float) else None)
                    print(f"Cancelling: {what}. (Ctrl-C again to stop waiting.)",
                          file=sys.stderr)  # fmt: skip
                else:
                    print("Cancelling... (Ctrl-C again to stop waiting)", file=sys.stderr)
    except KeyboardInterrupt:
        bar.clear()
        return EXIT_INTERRUPTED
    finally:
        stream.close()
    bar.clear()
    if args.json:
        print(json.dumps(final, indent=2))
    elif final["state"] == "succeeded":
        result = final.get("result")
        print(result if isinstance(result, str | int | float) and not isinstance(result, bool)
              else json.dumps(result, indent=2))  # fmt: skip
    elif final["state"] == "failed":
        print(f"herald: {failure_text(final)}", file=sys.stderr)
    elif final["state"] == "cancelled" and last is not None and last.data.get("reason"):
        print(f"herald: task cancelled: {last.data['reason']}", file=sys.stderr)
    else:
        print(f"herald: task {final['state']}", file=sys.stderr)
    if interrupted_at is not None:
        return EXIT_INTERRUPTED
    return EXIT_OK if final["state"] == "succeeded" else EXIT_FAILED


def _submit_uninterrupted(client: Any, args: argparse.Namespace,
                          task_args: dict[str, Any]) -> tuple[dict[str, Any], bool]:  # fmt: skip
    """Submit, with a Ctrl-C during the request held back until it is answered (then the
    task it created can be cancelled, rather than left running unwatched). Returns the task
    and whether Ctrl-C was pressed meanwhile."""
    pressed = False

    def hold(signum: int, frame: Any) -> None:
        nonlocal pressed
        pressed = True

    try:
        previous = signal.signal(signal.SIGINT, hold)
    except ValueError:  # not the main thread (a test calling main()): nothing to hold
        return client.submit(args.task, task_args, args.idempotency_key,
                             timeout=args.timeout), False  # fmt: skip
    try:
        task = client.submit(args.task, task_args, args.idempotency_key, timeout=args.timeout)
        _say_what_is_down(args.resolved_data_dir, submitted=True)  # Ctrl-C still held
    finally:
        signal.signal(signal.SIGINT, previous)
    return task, pressed


def _bar_label(task: str, attempt: int, max_attempts: int | None, limit: Any) -> str:
    """The progress line's label: the task, and its attempt and time limit when they tell."""
    parts = []
    if attempt > 1 or (max_attempts or 0) > 1:
        parts.append(f"attempt {attempt_text(attempt, max_attempts)}")
    if isinstance(limit, int | float) and limit > 0:
        parts.append(f"limit {format_seconds(limit)}")
    return f"{task} ({', '.join(parts)})" if parts else task


class _ProgressBar:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self._shown = False

    def update(self, fraction: float | None, message: str) -> None:
        if not self.enabled:
            return
        width = max(10, min(30, shutil.get_terminal_size().columns - 60))
        if fraction is None:
            bar, pct = "." * width, "    "
        else:
            filled = int(round(fraction * width))
            bar, pct = "#" * filled + "-" * (width - filled), f"{fraction * 100:3.0f}%"
        line = f"{self.label} [{bar}] {pct} {message}"
        cols = shutil.get_terminal_size().columns
        sys.stderr.write("\r" + line[: cols - 1].ljust(cols - 1))
        sys.stderr.flush()
        self._shown = True

    def message(self, text: str) -> None:
        self.update(None, text)

    def clear(self) -> None:
        if self._shown:
            cols = shutil.get_terminal_size().columns
            sys.stderr.write("\r" + " " * (cols - 1) + "\r")
            sys.stderr.flush()
            self._shown = False


def _fmt_time(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def _tasks(client: Any, args: argparse.Namespace) -> int:
    tasks = client.list_tasks(state=args.state, limit=args.limit).tasks
    if args.json:
        print(json.dumps(tasks, indent=2))
        return EXIT_OK
    if not tasks:
        print("No tasks yet. Try `herald submit demo.answer seconds=1 --wait`.")
        return EXIT_OK
    print(f"{'ID':32}  {'TASK':16}  {'STATE':10}  {'PROGRESS':>8}  SUBMITTED")
    for t in tasks:
        prog = "" if t.get("progress") is None else f"{t['progress'] * 100:.0f}%"
        print(f"{t['id']:32}  {t['task'][:16]:16}  {t['state']:10}  {prog:>8}  "
              f"{_fmt_time(t.get('created_at'))}")  # fmt: skip
    return EXIT_OK


def _display_of(client: Any, task: dict[str, Any]) -> dict[str, Any] | None:
    """How the task's result reads (its catalog entry's display), if it has one."""
    from embedded.client import ApiError, ServiceUnavailable

    if task.get("result") is None:
        return None
    try:
        catalog = client.catalog()
    except (ApiError, ServiceUnavailable):
        return None  # the result is still shown, as JSON
    spec = next((t for t in catalog if t.get("name") == task.get("task")), None)
    return spec.get("display") if spec else None


def _print_task(task: dict[str, Any], as_json: bool,
                display: dict[str, Any] | None = None) -> None:  # fmt: skip
    from services.core import resultview

    if as_json:
        print(json.dumps(task, indent=2))
        return
    for key in ("id", "task"):
        print(f"{key:12} {task.get(key)}")
    state = task.get("state")
    waiting = waiting_attempt(task)
    print(f"{'state':12} {state}" + (" (waiting to be tried again)" if waiting else ""))
    print(f"{'attempt':12} {attempt_line(task)}")
    lost = task.get("lost_attempts") or 0
    if lost:
        print(f"{'lost':12} {lost} attempt{'s' if lost != 1 else ''} lost: the process running "
              f"{'them' if lost != 1 else 'it'} died")  # fmt: skip
    if isinstance(task.get("timeout"), int | float):
        print(f"{'time limit':12} {format_seconds(task['timeout'])} per attempt")
    for key in ("created_at", "started_at", "finished_at"):
        print(f"{key:12} {task.get(key)}")
    print(f"{'args':12} {json.dumps(task.get('args'))}")
    if task.get("message"):
        print(f"{'message':12} {task['message']}")
    if task.get("result") is not None and display:
        # As the desktop shows it: the summary, then each field (tables as columns).
        view = resultview.render(task["result"], display, width=200)
        print(f"{'result':12} {view.summary}")
        for line in resultview.text_lines(view):
            print(f"  {line}".rstrip())
        if any(f.type is resultview.FieldType.OUTPUT for f in view.fields):
            print(f"  (the whole output: herald logs {task.get('id')})")
    elif task.get("result") is not None:
        print(f"{'result':12} {json.dumps(task['result'], indent=2)}")
    if task.get("error"):
        err = task["error"]
        label = "last error" if waiting else "error"
        print(f"{label:12} {err.get('code')}: {err.get('message')}")
        if err.get("traceback"):
            print(err["traceback"])


def _logs(client: Any, args: argparse.Namespace) -> int:
    """`herald logs ID [--follow]`: the task's output from its first line, from the event
    log; with --follow, then its new lines as they come, until it ends."""
    stream = None
    if args.follow:  # open before reading the log, so no line falls between the two
        stream = client.events(give_up_after=STREAM_GIVE_UP)
        stream.open()
    try:
        task_id = client.get(args.id)["id"]
        last, ended = _print_output(client.timeline(task_id))
        while stream is not None and not ended:
            for msg in stream.messages(timeout=0.5):
                if msg is not None and msg.type == "reset":  # events were pruned: re-read
                    seen, ended = _print_output(client.timeline(task_id, after=last))
                    last = max(last, seen)
                    if ended:
                        break
                    continue
                ev = msg.event if msg is not None else None
                if ev is None or ev.task_id != task_id or ev.seq <= last:
                    continue
                seen, ended = _print_output([ev])
                last = max(last, seen)
                if ended:
                    break
            else:
                break  # the stream closed
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if stream is not None:
            stream.close()
    return EXIT_OK


def _print_output(events: list[Event]) -> tuple[int, bool]:
    """Print the output lines of `events`; (their last seq, whether the task ended)."""
    last, ended = 0, False
    chunk: list[str] = []
    for ev in events:
        last = max(last, ev.seq)
        if ev.type.value == "output":
            chunk.extend(str(line) for line in ev.data.get("lines") or ())
        ended = ended or ev.terminal
    if chunk:
        sys.stdout.write("\n".join(chunk) + "\n")
        sys.stdout.flush()
    return last, ended


def _cancel(client: Any, args: argparse.Namespace) -> int:
    task = client.cancel(args.id)
    state = task["state"]
    if state == "running":
        grace: float | None = None
        from embedded.client import ApiError, ServiceUnavailable

        try:
            spec = next((t for t in client.catalog() if t["name"] == task.get("task")), None)
        except (ApiError, ServiceUnavailable):
            spec = None  # the cancel went through: say the generic sentence
        if spec is not None and isinstance(spec.get("cancel_grace"), int | float):
            grace = float(spec["cancel_grace"])
        print(f"{task['id']}: running; {cancel_text(grace)}")
    elif state == "cancelled":
        print(f"{task['id']}: cancelled")
    else:  # it finished before the request arrived
        print(f"{task['id']}: already {state}; nothing to cancel")
    return EXIT_OK


def _catalog(client: Any, args: argparse.Namespace) -> int:
    tasks = client.catalog()
    if args.json:
        print(json.dumps(tasks, indent=2))
        return EXIT_OK
    for t in tasks:
        print(f"{t['name']}  {t['title']}")
        limits = limits_text(t)
        if limits:
            print(f"    limits: {limits}")
        for p in t["params"]:
            default = "" if p["required"] else f" = {json.dumps(p.get('default'))}"
            print(f"    {p['name']}: {p['type']}{default}  {p.get('description', '')}".rstrip())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
