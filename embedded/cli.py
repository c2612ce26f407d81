"""The `herald` command line.

    herald                      open the desktop app
    herald serve                run the services headless until Ctrl-C or SIGTERM
    herald submit TASK k=v ...  submit a task (--wait: live progress, exit 0/1; --json;
                                --timeout SECONDS: each attempt's time limit)
    herald tasks [--watch] | show ID | cancel ID | catalog
    herald follow ID            re-attach to a task's live progress (Ctrl-C detaches)
    herald rerun ID [--wait]    run a task again with the same arguments and time limit
    herald rm ID...             delete finished tasks
    herald completion bash|zsh  print a shell completion script
    herald open [--print]       open the task page in the default browser through a
                                one-time sign-in link (--print: print the link instead)
    herald logs ID [--follow]   a task's whole output (from the event log); --follow: and
                                its new lines live until it ends
    herald token create NAME [--allow TASK]... [--root DIR]... [--read-root DIR]...
                                a second principal, with its own token (printed alone
                                on stdout) and what it may do
    herald token list | revoke NAME
    herald prune [--older-than 7d] [--keep N] [--vacuum]
                                delete old finished tasks and their events
    herald service NAME ...     (internal, not in --help) run one service; the frozen
                                app's children

An ID is a task's id or a unique prefix of it (4 hex digits or more), like git's.
Exit codes (`ExitCode`): 0 success, 1 the task failed or was cancelled, 2 usage or
validation error, 3 Herald not running or unreachable, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from enum import IntEnum
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



class ExitCode(IntEnum):
    """What `herald` exits with, for scripts (also in `herald --help` and the README)."""

    OK = 0  # success; with --wait or follow: the task succeeded
    FAILED = 1  # the task failed, timed out or was cancelled (or serving failed)
    USAGE = 2  # usage or validation error: bad arguments, an unknown task or id, a 4xx
    UNREACHABLE = 3  # Herald is not running for this data dir, or cannot be reached
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells say it)


EXIT_OK, EXIT_FAILED, EXIT_USAGE = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE
EXIT_UNREACHABLE, EXIT_INTERRUPTED = ExitCode.UNREACHABLE, ExitCode.INTERRUPTED

EPILOG = """\
An ID is a task's id or a unique prefix of it, 4 hex digits or more (as git takes).

exit codes:
  0    success (with --wait or follow: the task succeeded)
  1    the task failed, timed out or was cancelled
  2    usage or validation error (bad arguments, an unknown task or id, refused by the API)
  3    Herald is not running for this data dir, or cannot be reached
  130  interrupted (Ctrl-C)
"""

SERVE_DESCRIPTION = """\
Run Herald's services headless until Ctrl-C or SIGTERM. By default all three (web,
worker, notifier) on 127.0.0.1, on free ports, storing in the data dir.

Roles: --services runs some of them (e.g. web,notifier on a front host; worker on
others), --workers N runs N worker processes. One instance runs per data dir; on SQLite
all of a deployment's services run in that one instance.

Beyond loopback: --listen 0.0.0.0:8443 --allowed-host herald.example.com --tls-cert
FILE --tls-key FILE (or --insecure-http on a network you trust). See docs/deploy.md.
"""

MAX_WORKER_PROCESSES = 64
MAX_CONCURRENCY = 256  # as [worker] concurrency in config.toml

STREAM_GIVE_UP = 30.0  # seconds `submit --wait` waits for a lost event stream to return
MIN_ID_PREFIX = 4  # the shortest id prefix taken (the web service says the same)
TERMINAL_STATES = ("succeeded", "failed", "cancelled")
_HEX = frozenset("0123456789abcdefABCDEF")


class UsageError(Exception):
    """A mistake in what was typed (an unknown task, a bad KEY=VALUE): said, exit 2."""


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


class _VersionAction(argparse.Action):
    """`--version`: the version is looked up when asked for, not each time the parser is
    built (every command, `herald serve` included, would pay the metadata scan)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS) -> None:  # fmt: skip
        super().__init__(option_strings, dest=dest, default=default, nargs=0,
                         help="show the version and exit")  # fmt: skip

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:  # fmt: skip
        print(f"herald {herald_version()}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="herald",
        description="Run slow jobs in the background; get progress and results pushed live.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--version", action=_VersionAction)
    p.add_argument("--self-check", action="store_true",
                   help="open the app, exit 0 once its services are ready and live updates "
                        "flow (1 otherwise): a smoke test of an installation")  # fmt: skip
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where Herald keeps its files (default: $HERALD_DATA_DIR or the "
                        "user data dir)")  # fmt: skip
    p.add_argument("--server", default=None, metavar="NAME",
                   help="the desktop app: use this saved server (File → Connect to server…) "
                        "instead of this computer's services; local: this computer "
                        "(default: $HERALD_SERVER, else the last choice)")  # fmt: skip
    # `herald service NAME` (the frozen app's children) is taken by main() before parsing:
    # it is no command of this parser, so no help lists it.
    sub = p.add_subparsers(dest="command", metavar="COMMAND",
                           help="what to do (none: open the desktop app)")  # fmt: skip

    s = sub.add_parser("serve", help="run the services headless until Ctrl-C or SIGTERM",
                       description=SERVE_DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    s.add_argument("--port", type=int, default=0,
                   help="the API's port on 127.0.0.1 (default: a free one)")  # fmt: skip
    s.add_argument("--ws-port", type=int, default=0,
                   help="the WebSocket's port on 127.0.0.1 (default: a free one)")
    s.add_argument("--services", default=None, metavar="LIST",
                   help="which services run here, comma separated: any of web, worker, "
                        "notifier (default: all three); the others are reported as run "
                        "elsewhere, never started")  # fmt: skip
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes, each its own dispatcher (default: 1); each runs "
                        "up to --concurrency attempts at once")  # fmt: skip
    s.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="attempts each worker process runs at once (default: "
                        "[worker] concurrency in config.toml, 4)")  # fmt: skip
    s.add_argument("--backend", default=None, metavar="URL",
                   help="where tasks and events are stored: sqlite (the data dir, the "
                        "default) or redis://HOST:PORT/DB")  # fmt: skip
    s.add_argument("--listen", default=None, metavar="ADDR:PORT",
                   help="the web's address and port (default: 127.0.0.1 and a free port); "
                        "anything but loopback needs --allowed-host and TLS or "
                        "--insecure-http")  # fmt: skip
    s.add_argument("--notifier-listen", default=None, metavar="ADDR:PORT",
                   help="the notifier's address and port (the same rules)")
    s.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name clients reach this host by (repeat it): the Host check "
                        "accepts exactly these with the port, plus the loopback names for "
                        "a loopback bind")  # fmt: skip
    s.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                   help="serve https and wss with this certificate chain (PEM)")
    s.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                   help="the certificate's private key (PEM)")
    s.add_argument("--insecure-http", action="store_true",
                   help="listen beyond loopback without TLS, on a network you trust "
                        "(tokens cross it in clear; logged as a warning)")  # fmt: skip
    s.add_argument("--notifier-url", default=None, metavar="URL",
                   help="the notifier's public WebSocket URL (wss://HOST:PORT/ws), which "
                        "the web tells clients when the notifier runs on another host")
    s.add_argument("--web-url", action="append", default=[], metavar="URL",
                   help="the web's public URL (https://HOST:PORT), whose page may connect "
                        "to a notifier when the web runs on another host (repeat it)")

    s = sub.add_parser("submit", help="submit a task", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    s.add_argument("task", help="the task's name (see `herald catalog`)")
    s.add_argument("args", nargs="*", metavar="KEY=VALUE",
                   help="the task's arguments; a list as KEY='a b' (split like a shell) or "
                        "by repeating KEY=a KEY=b")  # fmt: skip
    s.add_argument("--wait", action="store_true",
                   help="print the id on stderr, show live progress and output, then the "
                        "result; exit 0 on success, 1 on failure (Ctrl-C cancels)")  # fmt: skip
    s.add_argument("--json", action="store_true", help="print the task as JSON")
    s.add_argument("--idempotency-key", default=None,
                   help="a retried submit with the same key returns the same task")  # fmt: skip
    s.add_argument("--timeout", type=_positive_seconds, default=None, metavar="SECONDS",
                   help="each attempt's time limit (default: the task's own, see `herald "
                        "catalog`); an attempt still running then is stopped")  # fmt: skip

    s = sub.add_parser("tasks", help="list your tasks, newest first, as a table")
    s.add_argument("--state", default=None, help="only tasks in these states (comma separated)")
    s.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    s.add_argument("--json", action="store_true", help="print them as JSON")
    s.add_argument("--watch", action="store_true",
                   help="redraw the table as tasks change (live events); Ctrl-C ends")

    s = sub.add_parser("show", help="show one task")
    s.add_argument("id", help="the task's id or a unique prefix of it")
    s.add_argument("--json", action="store_true", help="print it as JSON")

    s = sub.add_parser("logs", help="print a task's whole output (from the event log)")
    s.add_argument("id", help="the task's id or a unique prefix of it")
    s.add_argument("--follow", "-f", action="store_true",
                   help="then keep printing its new lines live until it ends (Ctrl-C stops "
                        "following; the task goes on)")  # fmt: skip

    s = sub.add_parser("cancel", help="cancel a task")
    s.add_argument("id", help="the task's id or a unique prefix of it")

    s = sub.add_parser("follow", help="re-attach to a task's live progress and output; "
                                      "Ctrl-C stops following (it never cancels)")  # fmt: skip
    s.add_argument("id", help="the task's id or a unique prefix of it")
    s.add_argument("--json", action="store_true", help="print the finished task as JSON")

    s = sub.add_parser("rerun", help="run a task again: the same task, arguments and time "
                                     "limit; prints the new id")  # fmt: skip
    s.add_argument("id", help="the task's id or a unique prefix of it")
    s.add_argument("--wait", action="store_true", help="then follow it as `submit --wait`")
    s.add_argument("--json", action="store_true", help="print the new task as JSON")

    s = sub.add_parser("rm", help="delete finished tasks (a running one is refused: cancel "
                                  "it first)")  # fmt: skip
    s.add_argument("ids", nargs="+", metavar="ID",
                   help="the tasks' ids or unique prefixes of them")

    s = sub.add_parser("catalog", help="list the tasks Herald can run and their parameters")
    s.add_argument("--json", action="store_true", help="print the catalog as JSON")

    s = sub.add_parser("open", help="open the task page in the default browser, signed in "
                                    "through a one-time link (valid 60 s, once)")  # fmt: skip
    s.add_argument("--print", action="store_true", dest="print_link",
                   help="print the link instead of opening a browser")

    s = sub.add_parser("completion", help="print a shell completion script: add `source "
                       "<(herald completion bash)` to ~/.bashrc, or save the zsh one as "
                       "_herald in a folder of $fpath")  # fmt: skip
    s.add_argument("shell", nargs="?", choices=["bash", "zsh"], help="bash or zsh")
    s.add_argument("--words", default=None, metavar="KIND",
                   help="print completion candidates, one a line (what the scripts call): "
                        "tasks, ids, or params:TASK")  # fmt: skip

    backend_help = ("the Redis backend whose principals to manage (redis://HOST:PORT/DB; "
                    "default: this data dir's auth.json)")  # fmt: skip
    s = sub.add_parser("token", help="manage principals and their tokens")
    s.add_argument("--backend", default=None, metavar="URL", help=backend_help)
    tsub = s.add_subparsers(dest="token_command", metavar="ACTION", required=True,
                           help="create, list or revoke")  # fmt: skip
    t = tsub.add_parser("create", help="create a principal (or renew its token and "
                                       "capabilities); prints its token")  # fmt: skip
    t.add_argument("name", help="the principal's name")
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
    t.add_argument("--json", action="store_true", help="print them as JSON")
    t = tsub.add_parser("revoke", help="remove a principal: its token stops working and its "
                                       "open connections are closed")  # fmt: skip
    t.add_argument("name", help="the principal's name")

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
    s.add_argument("--backend", default=None, metavar="URL",
                   help="prune the Redis backend's ledger and log (redis://HOST:PORT/DB) "
                        "instead of this data dir's")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns an `ExitCode` (argparse's own errors exit 2 too)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "service":  # fast path for children: no parsing of our own
        return _service(argv[1:])
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C anywhere else: no traceback
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    data_dir = (args.data_dir.expanduser().resolve() if args.data_dir else default_data_dir())
    cmd = args.command
    if cmd is None:
        return _gui(data_dir, args.self_check, args.server)
    if cmd == "serve":
        return _serve(data_dir, args)
    if cmd == "token":
        return _token(data_dir, args)
    if cmd == "prune":
        return _prune(data_dir, args)
    if cmd == "completion":
        from embedded.completion import completion_command

        return completion_command(_parser(), args.shell, args.words, data_dir)
    from embedded.client import ApiError, HeraldClient, NotRunning, ServiceUnavailable

    args.resolved_data_dir = data_dir
    try:
        with HeraldClient.for_data_dir(data_dir) as client:
            return _client_command(client, cmd, args)
    except NotRunning as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except UsageError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        print(f"herald: {exc.message}", file=sys.stderr)
        for field, msg in exc.fields.items():
            print(f"  {field}: {msg}", file=sys.stderr)
        return _api_exit(exc)
    except ServiceUnavailable as exc:
        print(f"herald: {exc}", file=sys.stderr)
        _say_what_is_down(data_dir)
        return EXIT_UNREACHABLE
    except BrokenPipeError:  # the reader left (`herald tasks | head`): not Herald's problem
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return EXIT_OK
    except OSError as exc:
        print(f"herald: cannot reach the running instance: {exc}", file=sys.stderr)
        _say_what_is_down(data_dir)
        return EXIT_UNREACHABLE


def _api_exit(exc: Any) -> ExitCode:
    """The exit code of an API error: a refusal of what was asked (4xx) is a usage error;
    a service that is not there (502-504) is unreachable; other server errors failed."""
    if exc.status in (502, 503, 504):
        return EXIT_UNREACHABLE
    return EXIT_USAGE if exc.status < 500 else EXIT_FAILED


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
        task = _resolve(client, args.id)
        _print_task(task, args.json, None if args.json else _display_of(client, task))
        return EXIT_OK
    if cmd == "logs":
        return _logs(client, args)
    if cmd == "cancel":
        return _cancel(client, args)
    if cmd == "catalog":
        return _catalog(client, args)
    if cmd == "follow":
        return _follow(client, args)
    if cmd == "rerun":
        return _rerun(client, args)
    if cmd == "rm":
        return _rm(client, args)
    if cmd == "open":
        return _open(client, args)
    return EXIT_USAGE


def _resolve(client: Any, text: str) -> dict[str, Any]:
    """The task an ID names: its full id or a unique prefix (the API resolves prefixes).

    Raises:
        UsageError: a prefix too short to mean anything.
        ApiError: 404 none of the caller's tasks has it, 409 several do (listed).
    """
    from embedded.client import ApiError

    text = text.strip()
    if text and len(text) < MIN_ID_PREFIX and set(text) <= _HEX:
        raise UsageError(f"{text!r} is too short: give at least {MIN_ID_PREFIX} characters of "
                         "a task's id (see `herald tasks`)")  # fmt: skip
    try:
        return client.get(text)  # type: ignore[no-any-return]
    except ApiError as exc:
        if exc.status == 404:
            raise UsageError(f"no task {text!r} (see `herald tasks`)") from None
        if exc.code == "ambiguous_id" and isinstance(exc.body, dict):
            ids = exc.body.get("candidates") or []
            raise UsageError(f"the id prefix {text!r} is ambiguous; it could be:\n"
                             + "\n".join(f"  {i}" for i in ids)) from None  # fmt: skip
        raise


# ----------------------------------------------------------------------- commands


def login_link(client: Any) -> str:
    """A fresh one-time sign-in link to the instance's page, for the client's principal.

    Raises:
        ApiError: the web service refused (e.g. too many links outstanding).
        ServiceUnavailable: it cannot be reached.
    """
    from embedded.client import ApiError

    status, body = client.request("POST", "/api/login-tickets")
    if status != 201 or not isinstance(body, dict) or not isinstance(body.get("url"), str):
        raise ApiError.from_body(status, body)
    return str(body["url"])


def open_in_browser(url: str) -> bool:
    """Open `url` in the user's browser (`$BROWSER`, else the desktop's default);
    whether one was found."""
    import webbrowser

    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False


def _open(client: Any, args: argparse.Namespace) -> int:
    url = login_link(client)
    if args.print_link:
        print(url, flush=True)
        return EXIT_OK
    if not open_in_browser(url):
        print("herald: no browser could be started (set BROWSER, or use `herald open "
              "--print` and open the link yourself within a minute)", file=sys.stderr)
        return EXIT_FAILED
    print("herald: opened the task page in your browser", file=sys.stderr)
    return EXIT_OK


def _service(argv: list[str]) -> int:
    if not argv:
        print("herald service: which service? web, worker or notifier", file=sys.stderr)
        return EXIT_USAGE
    name, rest = argv[0], argv[1:]
    from services.notls import wants_tls

    tls = wants_tls(rest)  # serving TLS needs OpenSSL; otherwise it is kept out
    if name == "web":  # as `python -m services.web` does (services.notls)
        from services.notls import import_without_openssl

        if tls:
            from services.web.server import main as web_main

            return web_main(rest)
        return int(import_without_openssl("services.web.server").main(rest))
    if name == "worker":
        from services.worker.server import main as worker_main

        return worker_main(rest)
    if name == "notifier":  # as `python -m services.notifier` does
        from services.notls import hide_openssl

        if not tls:
            hide_openssl()
        from services.notifier.server import main as notifier_main

        return notifier_main(rest)
    print(f"herald service: unknown service {name!r}", file=sys.stderr)
    return EXIT_USAGE


def _gui(data_dir: Path, self_check: bool = False, server: str | None = None) -> int:
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
    return int(gui_main(data_dir, self_check=self_check, server=server))


def _token(data_dir: Path, args: argparse.Namespace) -> int:
    from services.access import protected_dirs
    from services.auth import ALL_TASKS, create_principal, is_under, load_entries, revoke_principal
    from services.layout import DataLayout
    from services.wake import REVOKED_WAKE, WakeSender

    layout = DataLayout(data_dir)
    try:
        backend = _cli_backend(args, layout)
        registry = backend.principals()
        if args.token_command == "list":
            return _token_list(load_entries(layout) if registry is None else registry.load()[1],
                               args.json)  # fmt: skip
        if args.token_command == "revoke":
            gone = (revoke_principal(layout, args.name) if registry is None
                    else _revoke_in(registry, args.name))  # fmt: skip
            if not gone:
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
                                     read_roots=args.read_root, network=args.network,
                                     registry=registry)  # fmt: skip
    except ValueError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except backend.errors as exc:
        print(f"herald: cannot reach {backend.spec}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # A revoked or renewed token's open WebSockets are closed at once (the notifier looks
    # again at auth.json, or the registry, on this wake-up; without it, within its
    # fallback interval). On Redis every notifier node hears it.
    sender = backend.waker("notifier") if registry is not None else \
        WakeSender(layout.wake_address("notifier"))  # fmt: skip
    sender.wake(REVOKED_WAKE)
    sender.close()
    if args.token_command == "revoke":
        print(f"Principal {args.name!r} revoked.", file=sys.stderr)
        return EXIT_OK
    print(token)
    print(f"Principal {args.name!r} created. Keep this token secret: send it as "
          "`Authorization: Bearer <token>`.", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _cli_backend(args: argparse.Namespace, layout: Any) -> Any:
    """The backend a command's `--backend` names (None: the data dir's SQLite).

    Raises:
        ValueError: not a backend, said for the user.
    """
    from services.store.backend import open_backend

    try:
        return open_backend(getattr(args, "backend", None), layout)
    except ValueError as exc:
        raise ValueError(f"--backend: {exc}") from None


def _revoke_in(registry: Any, name: str) -> bool:
    from services.auth import DEFAULT_PRINCIPAL

    if name == DEFAULT_PRINCIPAL:
        raise ValueError(f"{DEFAULT_PRINCIPAL!r} is the install's own principal")
    return bool(registry.revoke(name))


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
    try:
        backend = _cli_backend(args, layout)
    except ValueError as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if backend.local_files and not layout.ledger_db.exists():
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
    if not backend.local_files:
        return _prune_remote(backend, older_than, keep, rules)
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


def _prune_remote(backend: Any, older_than: float | None, keep: int | None,
                  rules: list[str]) -> int:  # fmt: skip
    """`herald prune --backend redis://...`: retention on the Redis backend's ledger."""
    from services.wake import PRUNED_WAKE

    store = backend.store()
    try:
        done = store.prune(older_than=older_than, keep=keep)
        if done.events:
            sender = backend.waker("notifier")  # every notifier node
            sender.wake(PRUNED_WAKE)
            sender.close()
    except backend.errors as exc:
        print(f"herald: cannot reach {backend.spec}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    print(f"Pruned {done.tasks} task(s) and {done.events} event(s)"
          + (f" ({' or '.join(rules)})" if rules else " (no retention rule is set)")
          + f" from {backend.spec}.")  # fmt: skip
    return EXIT_OK


def _listen_address(option: str, text: str) -> tuple[str, int]:
    """`--listen`'s ADDR:PORT: an IP address (IPv6 in brackets) and a port 1-65535.

    Raises:
        UsageError: it is not one, said with an example.
    """
    import ipaddress

    example = f"{option} wants ADDR:PORT with an IP address, e.g. 0.0.0.0:8443, " \
              "192.0.2.10:8443 or [::]:8443"  # fmt: skip
    addr, sep, port = text.rpartition(":")
    if not sep or not addr:
        raise UsageError(f"{option} {text!r}: no port; {example}")
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise UsageError(f"{option} {text!r}: {addr!r} is not an IP address; "
                         f"{example}") from None  # fmt: skip
    if ip.version == 6 and not text.startswith("["):
        raise UsageError(f"{option} {text!r}: an IPv6 address goes in brackets; {example}")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise UsageError(f"{option} {text!r}: the port must be 1-65535; {example}")
    return str(ip), int(port)


_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")  # fmt: skip


def _allowed_host(text: str) -> str:
    """`--allowed-host`'s NAME: a DNS name or an IP address (IPv6 in brackets), no port."""
    import ipaddress

    name = text.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        try:
            ipaddress.IPv6Address(name[1:-1])
            return name
        except ValueError:
            pass
    elif _HOST_NAME.fullmatch(name):
        return name.rstrip(".")
    raise UsageError(f"--allowed-host {text!r}: a host name (herald.example.com) or an "
                     "IP address (192.0.2.10, [2001:db8::1]), without scheme or port")


def _public_url(option: str, text: str, schemes: tuple[str, ...]) -> str:
    from urllib.parse import urlsplit

    try:
        url = urlsplit(text)
        url.port  # noqa: B018 (it raises on a port out of range)
    except ValueError as exc:
        raise UsageError(f"{option} {text!r}: {exc}") from None
    if url.scheme.lower() not in schemes or not url.hostname:
        raise UsageError(f"{option} {text!r}: expected {' or '.join(schemes)}://HOST:PORT")
    return text


def serve_deployment(args: argparse.Namespace) -> Any:
    """The `Deployment` that `herald serve`'s options ask for.

    Raises:
        UsageError: an option is not valid, or the options together would be unsafe
            (beyond loopback without allowed hosts, or without TLS or --insecure-http).
    """
    from embedded.supervisor import SERVICES, Deployment
    from services.runtime import is_loopback
    from services.store.backend import parse_backend

    services: tuple[str, ...] = SERVICES
    if args.services is not None:
        chosen = [n.strip().lower() for n in args.services.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in SERVICES]
        if unknown:
            raise UsageError(f"--services: unknown service {unknown[0]!r} (any of "
                             f"{', '.join(SERVICES)}, comma separated)")  # fmt: skip
        if not chosen:
            raise UsageError(f"--services: name at least one of {', '.join(SERVICES)}")
        services = tuple(n for n in SERVICES if n in chosen)
    if args.workers is not None:
        if not 1 <= args.workers <= MAX_WORKER_PROCESSES:
            raise UsageError(f"--workers: worker processes, 1-{MAX_WORKER_PROCESSES}, not "
                             f"{args.workers}")  # fmt: skip
        if "worker" not in services:
            raise UsageError("--workers: no worker runs here (see --services)")
    if args.concurrency is not None:
        if not 1 <= args.concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency: attempts at once, 1-{MAX_CONCURRENCY}, not "
                             f"{args.concurrency}")  # fmt: skip
        if "worker" not in services:
            raise UsageError("--concurrency: no worker runs here (see --services)")
    backend = None
    if args.backend is not None:
        try:
            spec = parse_backend(args.backend)
        except ValueError as exc:
            raise UsageError(f"--backend: {exc}") from None
        backend = spec.url or None  # sqlite: the default, nothing to pass
    hosts = {"web": "127.0.0.1", "notifier": "127.0.0.1"}
    for service, option, given, port_option, port in (
            ("web", "--listen", args.listen, "--port", args.port),
            ("notifier", "--notifier-listen", args.notifier_listen, "--ws-port",
             args.ws_port)):  # fmt: skip
        if port and not 0 < port <= 65535:
            raise UsageError(f"{port_option}: 1-65535, not {port}")
        if given is None:
            continue
        if service not in services:
            raise UsageError(f"{option}: the {service} does not run here (see --services)")
        if port:
            raise UsageError(f"{option} and {port_option}: give one (ADDR:PORT says both)")
        hosts[service], chosen_port = _listen_address(option, given)
        setattr(args, "port" if service == "web" else "ws_port", chosen_port)
    names = tuple(dict.fromkeys(_allowed_host(h) for h in args.allowed_host))
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together (the certificate chain and "
                         "its private key, PEM)")  # fmt: skip
    tls = args.tls_cert is not None
    if tls and args.insecure_http:
        raise UsageError("--insecure-http and --tls-cert contradict each other: pick one")
    cert = key = None
    if tls:
        cert, key = (str(Path(p).expanduser().resolve()) for p in (args.tls_cert, args.tls_key))
        for option, path in (("--tls-cert", cert), ("--tls-key", key)):
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError as exc:
                raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    for service, option in (("web", "--listen"), ("notifier", "--notifier-listen")):
        if service not in services or is_loopback(hosts[service]):
            continue
        where = f"{option} {hosts[service]}"
        if not names:
            raise UsageError(f"{where} is not loopback: say which names clients reach it "
                             "by with --allowed-host NAME (the Host check refuses any "
                             "other, against DNS rebinding)")  # fmt: skip
        if not tls and not args.insecure_http:
            raise UsageError(f"{where} is not loopback: serve TLS with --tls-cert FILE "
                             "--tls-key FILE, or say --insecure-http for a network you "
                             "trust (tokens would cross it in clear)")  # fmt: skip
    notifier_url = None
    if args.notifier_url is not None:
        if "web" not in services:
            raise UsageError("--notifier-url is what the web tells clients: no web runs "
                             "here (see --services)")  # fmt: skip
        notifier_url = _public_url("--notifier-url", args.notifier_url, ("ws", "wss"))
    web_urls = tuple(_public_url("--web-url", u, ("http", "https")) for u in args.web_url)
    if web_urls and ("web" in services or "notifier" not in services):
        raise UsageError("--web-url is for a notifier whose web runs on another host: "
                         "here " + ("the web runs too" if "web" in services
                                    else "no notifier runs"))  # fmt: skip
    return Deployment(services=services, worker_processes=args.workers or 1,
                      web_host=hosts["web"], notifier_host=hosts["notifier"],
                      allowed_hosts=names, tls_cert=cert, tls_key=key,
                      insecure_http=args.insecure_http, notifier_url=notifier_url,
                      web_urls=web_urls, backend=backend)  # fmt: skip


def _insecure_binds(dep: Any) -> list[str]:
    """The addresses served beyond loopback without TLS (--insecure-http), in words."""
    from services.runtime import is_loopback

    if dep.tls_cert:
        return []
    return [f"{service} on {host}" for service, host in (("web", dep.web_host),
                                                         ("notifier", dep.notifier_host))
            if service in dep.services and not is_loopback(host)]  # fmt: skip


def _serve(data_dir: Path, args: argparse.Namespace) -> int:
    # This process runs the supervisor and speaks only to its services on 127.0.0.1: no
    # TLS, so OpenSSL is kept out of it (services.notls; asyncio imports `ssl`, hashlib
    # `_hashlib`), 10-15 ms of its start-up before it starts the first service.
    from services.notls import hide_openssl

    hide_openssl()
    try:
        deployment = serve_deployment(args)
    except UsageError as exc:
        print(f"herald serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    import asyncio
    import logging

    from embedded.instance import AlreadyRunning, Instance, StartupError
    from embedded.supervisor import ServiceState, SupervisorError

    logging.basicConfig(level=os.environ.get("HERALD_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")  # fmt: skip
    serving = False
    for where in _insecure_binds(deployment):
        logging.getLogger("herald.serve").warning(
            "serving plain HTTP beyond loopback (--insecure-http): %s; tokens cross the "
            "network in clear", where)  # fmt: skip

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
                        workers=args.concurrency, deployment=deployment,
                        on_state=on_state)  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            info = await inst.start()
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
        elsewhere = f" (not here: {', '.join(sup.elsewhere)})" if sup.elsewhere else ""
        api = f"{sup.api_url}/api" if sup.api_url else "(no web here)"
        ws = sup.ws_url or ("(no notifier here)" if "web" not in deployment.services else
                            "(none known: the notifier runs elsewhere; give --notifier-url)")
        insecure = _insecure_binds(deployment)
        warning = (f"  WARNING    plain HTTP beyond loopback (--insecure-http): "
                   f"{', '.join(insecure)}; tokens cross the network in clear\n"
                   if insecure else "")  # fmt: skip
        print(f"Herald {info.version} is serving\n"
              f"  Services   {', '.join(sup.services_here)}{elsewhere}\n"
              f"  API        {api}\n"
              f"  WebSocket  {ws}\n"
              f"  Backend    {deployment.backend or 'sqlite (the data dir)'}\n"
              f"{warning}"
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
        raise UsageError(f"unknown task {task!r}; see `herald catalog`")
    return spec


_LISTS = ("string_list", "integer_list")


def _parse_kv(spec: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """Typed arguments from KEY=VALUE words, by the catalog entry's declared parameters.
    A list is one word split like a shell (`args='-l -a'`; integers also by commas,
    `ok_exit_codes=0,1`), or a repeated key (`args=-l args=-a`), items in order.

    Raises:
        UsageError: not KEY=VALUE, no such parameter, or a value of the wrong type.
    """
    from services.core.params import Param, ParamType

    task = spec["name"]
    params = {p["name"]: p for p in spec["params"]}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise UsageError(f"expected KEY=VALUE, got {pair!r}")
        p = params.get(key)
        if p is None:
            takes = f"it takes: {', '.join(params)}" if params else "it takes no parameters"
            raise UsageError(f"{task} has no parameter {key!r}; {takes}")
        param = Param(key, ParamType(p["type"]))
        try:
            value = param.from_text(text)
        except ValueError as exc:
            raise UsageError(f"{key} {exc}") from None
        if param.type is ParamType.PATH and text:
            value = os.path.abspath(os.path.expanduser(text))
        if p["type"] in _LISTS and isinstance(out.get(key), list):
            value = out[key] + value  # a repeated key adds items
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
    """Submit and follow the task to its end (Ctrl-C cancels it); the id goes to stderr
    at once, so another shell can `herald follow` it."""
    # Give up if the notifier stays away this long (the instance was stopped, say).
    stream = client.events(give_up_after=STREAM_GIVE_UP)
    stream.open()  # before submitting, so no event of the task can be missed
    try:
        task, early_interrupt = _submit_uninterrupted(client, args, task_args)
        print(f"herald: task {task['id']}", file=sys.stderr, flush=True)
        return _follow_task(client, stream, task, spec, as_json=args.json, cancel=True,
                            early_interrupt=early_interrupt)  # fmt: skip
    finally:
        stream.close()


def _follow(client: Any, args: argparse.Namespace) -> int:
    """`herald follow ID`: the task's live progress and output to its end, as `submit
    --wait` shows them; Ctrl-C stops following and leaves the task alone."""
    task_id = _resolve(client, args.id)["id"]
    stream = client.events(give_up_after=STREAM_GIVE_UP)
    stream.open()
    try:
        task = client.get(task_id)  # after the stream is open: no later event is missed
        spec: dict[str, Any] = next((t for t in client.catalog()
                                     if t["name"] == task["task"]), {})  # fmt: skip
        try:
            if task["state"] not in TERMINAL_STATES:
                print(f"herald: following {task_id} ({task['task']}, {task['state']}); Ctrl-C "
                      "stops following, the task keeps running", file=sys.stderr,
                      flush=True)  # fmt: skip
            return _follow_task(client, stream, task, spec, as_json=args.json, cancel=False)
        except KeyboardInterrupt:  # before its loop began
            _say_detached(task_id)
            return EXIT_INTERRUPTED
    finally:
        stream.close()


def _say_detached(task_id: str) -> None:
    print(f"herald: stopped following; the task keeps running (`herald follow {task_id[:8]}`)",
          file=sys.stderr)  # fmt: skip


def _rerun(client: Any, args: argparse.Namespace) -> int:
    """`herald rerun ID`: the same task, arguments and time limit, as a new task."""
    old = _resolve(client, args.id)
    spec = _find_spec(client, old["task"])
    args.task, args.timeout, args.idempotency_key = old["task"], old.get("timeout"), None
    task_args = old.get("args") or {}
    if args.wait:
        return _submit_and_wait(client, args, spec, task_args)
    task = client.submit(args.task, task_args, timeout=args.timeout)
    _say_what_is_down(args.resolved_data_dir, submitted=True)
    print(json.dumps(task, indent=2) if args.json else task["id"])
    return EXIT_OK


def _rm(client: Any, args: argparse.Namespace) -> int:
    """`herald rm ID...`: delete finished tasks; refuse (and go on) where one is not."""
    from embedded.client import ApiError

    code = EXIT_OK
    for text in args.ids:
        try:
            task = _resolve(client, text)
            if task["state"] not in TERMINAL_STATES:
                raise UsageError(f"{task['id']} is {task['state']}: only a finished task can "
                                 f"be removed; cancel it first (`herald cancel "
                                 f"{task['id'][:8]}`)")  # fmt: skip
            client.delete(task["id"])
        except UsageError as exc:
            print(f"herald: {exc}", file=sys.stderr)
            code = EXIT_USAGE
            continue
        except ApiError as exc:
            if exc.status >= 500:
                raise
            print(f"herald: {text}: {exc.message}", file=sys.stderr)
            code = EXIT_USAGE
            continue
        print(f"{task['id']}: removed")
    return code


_RESET = object()  # events were pruned: what was shown must be reloaded from the API


def _live(stream: Any, timeout: float = 0.5) -> Iterator[Any]:
    """The one follower of the event stream (`submit --wait`, `follow`, `tasks --watch`):
    each event, `_RESET` when events were pruned or the log recreated (reload from the
    API), None after each `timeout` seconds without news. Reconnecting is the stream's
    job. A Ctrl-C ends the generator: make a new one to go on (nothing is lost)."""
    for msg in stream.messages(timeout=timeout):
        if msg is None:
            yield None
        elif msg.type == "reset" or (msg.type == "welcome" and msg.body.get("reset")):
            yield _RESET
        elif msg.event is not None:
            yield msg.event


def _follow_task(client: Any, stream: Any, task: dict[str, Any], spec: dict[str, Any], *,
                 as_json: bool, cancel: bool, early_interrupt: bool = False) -> int:  # fmt: skip
    """Show a task's live progress bar, notes and output until it ends; print its outcome.

    Args:
        stream: the principal's event stream, opened before `task` was read.
        cancel: Ctrl-C cancels the task (a second stops waiting); otherwise Ctrl-C just
            stops following.
        early_interrupt: Ctrl-C was pressed already (while submitting).

    Returns:
        The exit code: OK if it succeeded, FAILED if it failed or was cancelled,
        INTERRUPTED after a Ctrl-C.
    """
    task_id, name = task["id"], task["task"]
    bar = _ProgressBar(name, enabled=sys.stderr.isatty() and not as_json)
    limit = task.get("timeout")
    max_attempts = task.get("max_attempts")
    bar.label = _bar_label(name, max(1, int(task.get("attempt") or 1)), max_attempts, limit)
    retry_at: float | None = None  # Unix time of the next attempt while one is awaited
    interrupted_at: float | None = None
    final: dict[str, Any] | None = task if task.get("state") in TERMINAL_STATES else None
    last: Event | None = None  # the terminal event
    if final is None and task.get("state") == "running":
        bar.update(task.get("progress"), task.get("message") or "")
    try:
        while final is None:
            try:
                if early_interrupt:  # Ctrl-C while the task was being submitted
                    early_interrupt = False
                    raise KeyboardInterrupt
                for ev in _live(stream):
                    if interrupted_at is not None and time.monotonic() - interrupted_at > 15:
                        final = client.get(task_id)  # the task ignores the cancel: stop waiting
                        break
                    if ev is _RESET:
                        # Events were pruned: the task's own end may be among them.
                        now = client.get(task_id)
                        if now.get("state") in TERMINAL_STATES:
                            final = now
                            break
                        continue
                    if ev is None or ev.task_id != task_id:
                        if retry_at is not None:  # keep the countdown current
                            bar.message(f"next try {countdown(retry_at - time.time())}")
                        continue
                    etype = ev.type.value
                    if etype == "progress":
                        bar.update(ev.data.get("fraction"), ev.data.get("message") or "")
                    elif etype == "output" and not as_json:
                        bar.clear()
                        for line in ev.data.get("lines", []):
                            print(line, flush=True)
                    elif etype == "started":
                        retry_at = None
                        attempt = int(ev.data.get("attempt") or ev.attempt or 1)
                        if isinstance(ev.data.get("timeout"), int | float):
                            limit = ev.data["timeout"]
                        bar.label = _bar_label(name, attempt, max_attempts, limit)
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
                bar.clear()
                if not cancel:
                    _say_detached(task_id)
                    return EXIT_INTERRUPTED
                if interrupted_at is not None:
                    raise
                interrupted_at = time.monotonic()
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
    bar.clear()
    if as_json:
        print(json.dumps(final, indent=2))
    elif final["state"] == "succeeded":
        result = final.get("result")
        print(result if isinstance(result, str | int | float) and not isinstance(result, bool)
              else json.dumps(result, indent=2))  # fmt: skip
    elif final["state"] == "failed":
        print(f"herald: {failure_text(final)}", file=sys.stderr)
    elif final["state"] == "cancelled" and last is not None and last.data.get("reason"):
        print(f"herald: task cancelled: {last.data['reason']}", file=sys.stderr)
    elif final["state"] == "cancelled" and final.get("message"):
        print(f"herald: task cancelled: {final['message']}", file=sys.stderr)
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
    """`herald tasks`: an aligned table (or JSON); `--watch` redraws it on live events."""
    if args.watch and args.json:
        raise UsageError("--watch draws a table; leave out --json")
    if not args.watch:
        tasks = client.list_tasks(state=args.state, limit=args.limit).tasks
        if args.json:
            print(json.dumps(tasks, indent=2))
        elif not tasks:
            print("No tasks yet. Try `herald submit demo.answer seconds=1 --wait`.")
        else:
            print("\n".join(_task_table(tasks)))
        return EXIT_OK
    stream = client.events(give_up_after=STREAM_GIVE_UP)
    stream.open()  # first, so no change after the first drawing is missed
    clear = sys.stdout.isatty()

    def draw() -> None:
        tasks = client.list_tasks(state=args.state, limit=args.limit).tasks
        lines = _task_table(tasks) if tasks else ["No tasks yet."]
        header = f"herald tasks: {len(tasks)} shown, live (Ctrl-C to stop)"
        if clear:
            sys.stdout.write("\x1b[H\x1b[2J")  # home and clear: redrawn in place
        print("\n".join([header, *lines]) + ("" if clear else "\n"), flush=True)

    try:
        draw()
        drawn = time.monotonic()
        dirty = False
        while True:  # a burst of events is drawn at most twice a second
            for ev in _live(stream, timeout=0.25):
                if ev is not None:
                    dirty = True
                if dirty and (ev is None or time.monotonic() - drawn >= 0.5):
                    draw()
                    drawn, dirty = time.monotonic(), False
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        stream.close()


def _age(seconds: float) -> str:
    """A task's age in one short unit: 12s, 5m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _short_ids(ids: list[str], least: int = 8) -> list[str]:
    """The shortest prefixes (at least `least` characters) that tell these ids apart."""
    n = least
    while n < 32 and len({i[:n] for i in ids}) < len(set(ids)):
        n += 1
    return [i[:n] for i in ids]


def _task_table(tasks: list[dict[str, Any]], now: float | None = None) -> list[str]:
    """Tasks as aligned columns: id prefix, task, state, progress, age, message (cut to
    the terminal's width when it is one)."""
    from services.core.taskview import parse_time

    now = time.time() if now is None else now
    rows = [("ID", "TASK", "STATE", "PROGRESS", "AGE", "MESSAGE")]
    for t, short in zip(tasks, _short_ids([t["id"] for t in tasks]), strict=True):
        prog = "" if t.get("progress") is None else f"{t['progress'] * 100:.0f}%"
        created = parse_time(t.get("created_at"))
        age = "" if created is None else _age(now - created)
        error: dict[str, Any] = t["error"] if isinstance(t.get("error"), dict) else {}
        message = t.get("message") or (error.get("message") if t["state"] == "failed" else "")
        message = " ".join(str(message or "").split())  # one line
        rows.append((short, t["task"], t["state"], prog, age, message))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    right = (False, False, False, True, True)
    cols = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    lines = []
    for r in rows:
        cells = [c.rjust(w) if ri else c.ljust(w) for c, w, ri in zip(r, widths, right,
                                                                     strict=False)]  # fmt: skip
        line = "  ".join([*cells, r[5]]).rstrip()
        lines.append(line[: cols - 1] if cols else line)
    return lines


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
        detail = err.get("detail") if isinstance(err.get("detail"), dict) else {}
        if detail.get("last_lines"):  # a program's exit status: how its output ended
            print(f"{'last output':12} " + f"\n{'':12} ".join(map(str, detail["last_lines"])))
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
        task_id = _resolve(client, args.id)["id"]
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
    task = client.cancel(_resolve(client, args.id)["id"])
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


_LIST_HINT = {
    "string_list": "a list: {k}='a b' (split like a shell) or {k}=a {k}=b",
    "integer_list": "a list: {k}=0,1 or {k}=0 {k}=1",
}


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
            print(f"    {_param_line(p)}  {p.get('description', '')}".rstrip())
            hint = _LIST_HINT.get(p["type"])
            if hint:
                print("        " + hint.format(k=p["name"]))
    return EXIT_OK


def _param_line(p: dict[str, Any]) -> str:
    """A parameter in a few words: "name: type (required)" or "name: type = default",
    then its choices, bounds and path kind."""
    text = f"{p['name']}: {p['type']}"
    text += " (required)" if p.get("required") else f" = {json.dumps(p.get('default'))}"
    if p.get("choices"):
        text += ", one of: " + ", ".join(str(c) for c in p["choices"])
    low, high = p.get("minimum"), p.get("maximum")
    if p["type"] in ("integer", "number") and (low is not None or high is not None):
        text += ", " + (f"{low:g} to {high:g}" if low is not None and high is not None
                        else f"at least {low:g}" if low is not None else f"at most {high:g}")
    kind = _PATH_KINDS.get(str(p.get("path_kind")))
    if kind:
        text += f", {kind}"
    return text


_PATH_KINDS = {"file": "an existing file", "directory": "an existing folder",
               "any": "an existing file or folder", "new_file": "a file to write"}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
