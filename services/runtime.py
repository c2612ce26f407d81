"""What every service process shares: its arguments, logging, readiness, parent guard.

A service is started by the supervisor with `--data-dir` (and `--port`), never with a
token on its command line. It announces readiness with one machine-readable line on
stdout, `HERALD_READY {"service": ..., "port": ...}`. Its stdin is a pipe from the
supervisor: end-of-file there means "stop now" (a request, or the parent died), and on
Linux the kernel also signals it when the parent goes away (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import errno
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.layout import DataLayout

READY_PREFIX = "HERALD_READY "
FATAL_PREFIX = "HERALD_FATAL "
PARENT_ENV = "HERALD_PARENT_PID"  # set by the supervisor: the pid its children must outlive not


def announce_ready(service: str, **info: Any) -> None:
    """Print the readiness line the supervisor waits for.

    Everything made while starting (modules, the catalog, the app) lives as long as the
    process: it is then moved out of the cycle collector's sight (`gc.freeze`), so that
    collections while serving only look at what serving makes. Without a full collection
    first: at this point one found nothing to free (9-289 objects of 22,000-42,000, in
    each service) and cost 8-18 ms of CPU, right when the first request arrives and while
    the other services still start on the same cores.
    """
    sys.stdout.write(READY_PREFIX + json.dumps({"service": service, **info}) + "\n")
    sys.stdout.flush()
    gc.freeze()


def parse_ready(line: str) -> dict[str, Any] | None:
    """The details of a readiness line, or None if the line is something else."""
    if not line.startswith(READY_PREFIX):
        return None
    try:
        info = json.loads(line[len(READY_PREFIX):])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def announce_fatal(reason: str) -> None:
    """Say, in one line the supervisor reads, why this service cannot start (e.g. "port
    8080 is in use"); it shows the reason instead of the tail of a traceback."""
    sys.stdout.write(FATAL_PREFIX + json.dumps({"reason": reason}) + "\n")
    sys.stdout.flush()


def startup_reason(exc: BaseException, port: int | None = None) -> str:
    """Why a service could not start, in one line a user can act on."""
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use" if port else f"its port is in use ({exc.strerror})"
    import sqlite3  # here: the supervisor's process imports this module and has no database

    text = " ".join(str(exc).split())
    if isinstance(exc, sqlite3.DatabaseError):
        return f"its database cannot be used: {text}"
    if isinstance(exc, ValueError):  # a config file's mistake, said in full by load_config
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def cannot_start(service: str, exc: BaseException, port: int | None = None) -> int:
    """Log why `service` cannot start (with the traceback), tell the supervisor the reason
    in one line, and return the exit status (2)."""
    reason = startup_reason(exc, port)
    logging.getLogger(f"herald.{service}").error("cannot start: %s", reason, exc_info=exc)
    announce_fatal(reason)
    return 2


def parse_fatal(line: str) -> str | None:
    """The reason of a fatal line, or None if the line is something else."""
    if not line.startswith(FATAL_PREFIX):
        return None
    try:
        info = json.loads(line[len(FATAL_PREFIX):])
    except ValueError:
        return None
    reason = info.get("reason") if isinstance(info, dict) else None
    return reason if isinstance(reason, str) else None


def service_arguments(service: str, argv: list[str] | None) -> argparse.Namespace:
    """Parse the arguments every service takes (plus `--port` and `--web-port`).

    `--backend` is passed as given to `services.store.backend.open_backend`."""
    p = argparse.ArgumentParser(prog=f"herald service {service}")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--port", type=int, default=0, help="TCP port to listen on (0: any free)")
    p.add_argument("--host", default=LOOPBACK_DEFAULT,
                   help="the address to listen on (default: 127.0.0.1)")  # fmt: skip
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name this service is reached by, which the Host check accepts "
                        "(with the port; repeat it)")  # fmt: skip
    p.add_argument("--tls-cert", type=Path, default=None, help="serve TLS with this "
                   "certificate chain (PEM)")  # fmt: skip
    p.add_argument("--tls-key", type=Path, default=None, help="... and this private key")
    p.add_argument("--insecure-http", action="store_true",
                   help="a non-loopback address without TLS, on purpose (logged)")
    p.add_argument("--web-port", type=int, default=None,
                   help="the web service's port, whose page may connect")  # fmt: skip
    p.add_argument("--web-origin", action="append", default=[], metavar="ORIGIN",
                   help="the origins of the web's page, when it is not on loopback or not "
                        "on this host (replaces those of --web-port; repeat it)")  # fmt: skip
    p.add_argument("--notifier-url", default=None,
                   help="the notifier's public WebSocket URL, which the web tells clients")
    p.add_argument("--concurrency", "--workers", dest="workers", type=int, default=None,
                   help="attempts run at once (default: the config file's worker.concurrency, "
                        "else 4)")  # fmt: skip
    p.add_argument("--worker-processes", type=int, default=1,
                   help="how many worker processes the instance runs (the web wakes each)")
    p.add_argument("--worker-index", type=int, default=1,
                   help="which of them this worker is (1: the first)")
    p.add_argument("--backend", default=None, help="the storage: sqlite (the data dir, the "
                   "default) or redis://HOST:PORT/DB")  # fmt: skip
    p.add_argument("--log-level", default=os.environ.get("HERALD_LOG_LEVEL", "INFO"))
    p.add_argument("--runtime-dir", type=Path, default=None,
                   help="the user's runtime dir for Herald (no task may touch it)")  # fmt: skip
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    return args


LOOPBACK_DEFAULT = "127.0.0.1"
def is_loopback(address: str) -> bool:
    """Whether an IP address (as `--host` takes it) is a loopback one (127.0.0.0/8, ::1)."""
    import ipaddress

    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address.lower() == "localhost"


def server_tls_context(cert: Path, key: Path) -> Any:
    """An `ssl.SSLContext` serving `cert` (a PEM chain) with `key`, TLS 1.2 at least.

    Raises:
        ValueError: the files cannot be read or do not make a certificate and its key.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise ValueError(f"TLS: {exc.filename} does not exist") from None
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS: {cert} and {key} are not a certificate chain and its "
                         f"private key (PEM): {exc}") from None  # fmt: skip
    return ctx


def public_url(scheme: str, host: str, names: list[str] | tuple[str, ...], port: int) -> str:
    """How clients reach a service: on loopback by the address it listens on; beyond,
    by its first allowed name."""
    if names and not is_loopback(host):
        name = names[0]
    else:
        name = f"[{host}]" if ":" in host else host
    return f"{scheme}://{name}:{port}"


def setup_logging(service: str, level: str) -> None:
    """Log to stderr, one line per record; the supervisor files them per service."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )


OWNER_ONLY_UMASK = 0o077


USER_UMASK_ENV = "HERALD_USER_UMASK"  # the user's own umask, for the files tasks make


def owner_only_files() -> None:
    """Make every file and folder this process (and every child it starts) creates
    readable and writable by its owner only: the databases, their WAL files, the logs.

    The user's own umask is kept (HERALD_USER_UMASK, for the children too): what a task
    makes for the user (an archive, a report) gets the user's usual modes (`user_umask`).
    """
    previous = os.umask(OWNER_ONLY_UMASK)
    if USER_UMASK_ENV not in os.environ:
        os.environ[USER_UMASK_ENV] = oct(previous)


def user_umask() -> int:
    """The umask of the user who started Herald (for a task's own files)."""
    try:
        return int(os.environ.get(USER_UMASK_ENV, ""), 8) & 0o777
    except ValueError:
        return 0o022


def layout_from(args: argparse.Namespace) -> DataLayout:
    """The data dir a service was given, created if need be; from here on, what the
    service creates is owner-only (the supervisor sets that too; a service run by hand
    gets it here)."""
    owner_only_files()
    root = args.data_dir.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return DataLayout(root)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def expected_parent() -> int | None:
    """The supervisor's pid, as it passed it (None when the service was run by hand)."""
    try:
        return int(os.environ[PARENT_ENV])
    except (KeyError, ValueError):
        return None


_FIRST_PARENT = os.getppid()  # the parent this process started with


def process_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not yet reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")
    except (OSError, ValueError):
        return pid_alive(pid) if not os.path.isdir("/proc") else False


def parent_gone() -> bool:
    """Whether the supervisor that started this service has died.

    Either we were re-parented, or (a frozen onefile bundle runs each service behind its
    own bootloader process, which outlives the supervisor) the supervisor's pid is dead.
    """
    parent = expected_parent()
    if parent is None:
        return False
    return os.getppid() != _FIRST_PARENT or not process_running(parent)


def die_with_parent() -> None:
    """Ask the kernel to send SIGTERM when the parent goes away (Linux only).

    The supervisor passes its pid (HERALD_PARENT_PID): if it died before this ran, the
    parent is already someone else (init, or a subreaper), and the service stops at once.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # here: the supervisor's process imports this module too, and needs none

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except OSError:
        return
    parent = expected_parent()
    if (parent is not None and not process_running(parent)) or os.getppid() == 1:
        # the parent died before we got here
        os.kill(os.getpid(), signal.SIGTERM)


def watch_stdin(on_eof: Callable[[], None], grace: float = 10.0) -> None:
    """Call `on_eof` when stdin reaches end-of-file; exit hard if it has not stopped us
    within `grace` seconds. Does nothing when stdin is a terminal (run by hand)."""
    try:
        if os.isatty(0):
            return
    except OSError:
        return

    def run() -> None:
        while True:
            try:
                chunk = os.read(0, 512)  # os.read: sys.stdin from a daemon thread can crash
            except OSError:
                chunk = b""
            if not chunk:
                break
        on_eof()
        timer = threading.Timer(grace, lambda: os._exit(3))
        timer.daemon = True
        timer.start()

    threading.Thread(target=run, name="stdin-watch", daemon=True).start()
