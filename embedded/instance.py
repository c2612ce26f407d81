"""One running Herald per data dir: the lock, the runtime file, and the one object that
starts the services or finds the instance that already runs them.

`herald serve`, the desktop app and the tests all go through `Instance`:

1. it takes the data dir's lock: an exclusive `flock` on `herald.lock` in the data dir
   itself, held for the instance's lifetime and inherited by its services, so that no
   second instance starts while any process of this one still runs, whatever runtime dir
   it was given, and with no race when two start at the same moment (the kernel decides);
2. it repairs what can be repaired (a damaged token file) and refuses what must not be
   guessed (a database file that is not one);
3. it starts the services with the supervisor, then writes the runtime file (where the
   API and the WebSocket listen, the token) beside the lock and in the runtime dir;
4. the loser of the lock learns who holds it (`AlreadyRunning`, with that instance's pid
   and API once it is ready), and the desktop app attaches to it.

The runtime file is owner-only (as Jupyter's), removed on a clean stop, and never removed
or overwritten by another instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from embedded import herald_version
from embedded.paths import runtime_file
from embedded.supervisor import Deployment, ServiceStatus, Supervisor
from services.auth import repair_install_token, write_private
from services.config import load_config
from services.layout import DataLayout
from services.runtime import process_running

log = logging.getLogger("herald.instance")

SQLITE_HEADER = b"SQLite format 3\x00"
ATTACH_WAIT = 30.0  # seconds a second instance waits for the first to finish starting
LINGER_WAIT = 5.0  # seconds to wait for a dead instance's last services to let go of the lock


@dataclass(frozen=True)
class InstanceInfo:
    """A running instance, as its runtime file says."""

    pid: int
    data_dir: str
    api: str  # http://127.0.0.1:PORT
    ws: str  # ws://127.0.0.1:PORT/ws
    token: str
    version: str
    started_at: float
    # The services this instance runs ("worker-2"... for more worker processes); the
    # others run elsewhere or not at all. (Absent from an older instance's file: all.)
    services: tuple[str, ...] = ("web", "worker", "notifier")


class AlreadyRunning(RuntimeError):
    """Another instance holds the data dir's lock.

    Attributes:
        pid: the holder's pid (None if it did not say yet).
        info: its runtime file, once its services are ready (None while it starts).
    """

    def __init__(self, data_dir: Path, pid: int | None, info: InstanceInfo | None) -> None:
        self.data_dir, self.pid, self.info = data_dir, pid, info
        who = f"PID {pid}" if pid else "another process"
        where = f", API at {info.api}" if info else ", still starting"
        super().__init__(f"Herald is already running for {data_dir} ({who}{where})")


class StartupError(RuntimeError):
    """The instance cannot start for a reason a person must look at (said in words)."""


def _instance_files(data_dir: Path) -> list[Path]:
    """Where the runtime file is written: in the data dir (found whatever the runtime
    dir) and in the runtime dir (the conventional place)."""
    files = [DataLayout(data_dir).instance_file]
    with contextlib.suppress(OSError):
        files.append(runtime_file(data_dir))
    return files


def write_instance(info: InstanceInfo) -> Path:
    body = json.dumps(asdict(info), indent=2) + "\n"
    paths = _instance_files(Path(info.data_dir))
    for path in paths:
        write_private(path, body)
    return paths[0]


def remove_instance(data_dir: Path, pid: int) -> None:
    """Remove the runtime files that are this process's (never another instance's)."""
    for path in _instance_files(data_dir):
        info = _read(path)
        if info is not None and info.pid == pid:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _read(path: Path) -> InstanceInfo | None:
    try:
        body = json.loads(path.read_bytes())
        known = {f.name for f in fields(InstanceInfo)}  # a newer instance's members too
        info = InstanceInfo(**{k: v for k, v in body.items() if k in known})
        return dataclasses.replace(info, services=tuple(info.services))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def read_instance(data_dir: Path, *, check_alive: bool = True) -> InstanceInfo | None:
    """The instance serving `data_dir`, or None if none runs (a stale file is ignored)."""
    for path in _instance_files(data_dir):
        info = _read(path)
        if info is None or Path(info.data_dir) != data_dir:
            continue
        if check_alive and not process_running(info.pid):
            continue
        return info
    return None


class DataDirLock:
    """The data dir's lock: `flock(LOCK_EX)` on `herald.lock`, which also says who holds it.

    flock belongs to the open file: it is released only when every process holding the
    descriptor has closed it or died, so the services (which inherit it) keep it too.
    """

    def __init__(self, layout: DataLayout) -> None:
        self.path = layout.lock_file
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free; True if this process holds it now."""
        if self.fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # who holds it is a courtesy (a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode(), 0)
        self.fd = fd
        return True

    def holder(self) -> int | None:
        """The pid that says it holds the lock (it may be gone, its services not yet)."""
        try:
            pid = json.loads(self.path.read_bytes()).get("pid")
        except (OSError, ValueError, AttributeError):
            return None
        return pid if isinstance(pid, int) else None

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing releases the lock; the file stays (no race)
            self.fd = None


def check_database(path: Path) -> None:
    """Refuse a database file that SQLite could not use: never recreate it silently.

    Raises:
        StartupError: it cannot be read, or it is not an SQLite database.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StartupError(f"the database {path} cannot be read: {exc.strerror or exc}; "
                           "fix its permissions, or move it away to start with an empty "
                           "history") from None  # fmt: skip
    if head and head != SQLITE_HEADER:
        raise StartupError(f"{path} is not an SQLite database (damaged, or another file); it "
                           "was left as it is: move it away to start with an empty "
                           "history")  # fmt: skip


class Instance:
    """The instance of one data dir that this process runs, or finds running.

    Args:
        data_dir: the data dir.
        web_port, notifier_port, workers, deployment, on_state, on_log: see `Supervisor`
            (`workers`: its `worker_threads`, attempts at once per worker process).
        **supervisor_options: passed to `Supervisor` (backoff, tests).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        web_port: int = 0,
        notifier_port: int = 0,
        workers: int | None = None,
        deployment: Deployment | None = None,
        on_state: Callable[[ServiceStatus], None] | None = None,
        on_log: Callable[[str, str], None] | None = None,
        **supervisor_options: float,
    ) -> None:
        self.layout = DataLayout(data_dir)
        self.lock = DataDirLock(self.layout)
        self.token = ""
        self.notices: list[str] = []  # what was repaired on the way up, in words
        self.info: InstanceInfo | None = None
        self.supervisor: Supervisor | None = None
        self._options = dict(web_port=web_port, notifier_port=notifier_port,
                             worker_threads=workers, deployment=deployment,
                             on_state=on_state, on_log=on_log,
                             **supervisor_options)  # fmt: skip

    @property
    def data_dir(self) -> Path:
        return self.layout.root

    async def start(self) -> InstanceInfo:
        """Take the lock, repair, start the services and write the runtime file.

        Raises:
            AlreadyRunning: another instance runs for this data dir.
            StartupError: a file of the data dir must be looked at first.
            SupervisorError: a service could not start (its reason is in the message).
        """
        self.layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not await self._acquire():
            pid = self.lock.holder()
            raise AlreadyRunning(self.data_dir, pid, read_instance(self.data_dir))
        try:
            check_database(self.layout.ledger_db)
            check_database(self.layout.queue_db)
            self.token, self.notices = repair_install_token(self.layout)
            for notice in self.notices:
                log.warning("%s", notice)
            if self.supervisor is None:
                options = dict(self._options)
                try:
                    options.setdefault("backoff_max", load_config(self.layout).restart_max_delay)
                except ValueError:
                    pass  # the services say what is wrong with the file, and refuse to start
                self.supervisor = Supervisor(self.layout, keep_fds=(self._lock_fd(),),
                                             **options)  # type: ignore[arg-type]
            await self.supervisor.start()
        except BaseException:
            self.lock.release()
            raise
        # The version the web serves, as it said when ready: reading the package metadata
        # here (importlib.metadata's import and scan, 30-40 ms) came after every service
        # was ready, on the way to the runtime file that clients wait for.
        version = self.supervisor.ready_info("web").get("version")
        self.info = InstanceInfo(pid=os.getpid(), data_dir=str(self.data_dir),
                                 api=self.supervisor.api_url, ws=self.supervisor.ws_url,
                                 token=self.token,
                                 version=version if isinstance(version, str) else herald_version(),
                                 started_at=time.time(),
                                 services=self.supervisor.services_here)  # fmt: skip
        write_instance(self.info)
        return self.info

    async def stop(self) -> None:
        """Stop the services, remove the runtime file, release the lock."""
        if self.supervisor is not None:
            await self.supervisor.stop()
        remove_instance(self.data_dir, os.getpid())
        self.info = None
        self.lock.release()

    async def restart(self) -> InstanceInfo:
        await self.stop()
        return await self.start()

    async def _acquire(self) -> bool:
        """The lock, waiting a moment when its holder is dead but some of its services are
        still on their way out (they hold the lock too, until they are gone)."""
        deadline = time.monotonic() + LINGER_WAIT
        while not self.lock.acquire():
            holder = self.lock.holder()
            if holder is not None and process_running(holder) or time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _lock_fd(self) -> int:
        assert self.lock.fd is not None
        return self.lock.fd


async def wait_for_running(data_dir: Path, timeout: float = ATTACH_WAIT) -> InstanceInfo | None:
    """The instance that holds `data_dir`'s lock, once it is ready (None: it did not get
    ready in `timeout` s, or it is gone)."""
    lock = DataDirLock(DataLayout(data_dir))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_instance(data_dir)
        if info is not None:
            return info
        holder = lock.holder()
        if holder is not None and not process_running(holder):
            return None
        await asyncio.sleep(0.1)
    return None


def services_down(data_dir: Path) -> list[str]:
    """What is wrong with the instance running on `data_dir`, in words, one line per
    service that is not ready ("worker is restarting since 14:02:07 (killed by SIGKILL);
    next try in 4 s"); empty when all are ready or no instance runs."""
    layout = DataLayout(data_dir)
    try:
        body = json.loads(layout.status_file.read_bytes())
        services = body["services"]
        supervisor = int(body["supervisor_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not process_running(supervisor) or not isinstance(services, dict):
        return []
    now = time.time()
    lines = []
    for name, st in services.items():
        if not isinstance(st, dict) or st.get("state") == "ready":
            continue
        text = f"{name} is {st.get('state', 'down')}"
        since = st.get("since")
        if isinstance(since, (int, float)):
            text += " since " + time.strftime("%H:%M:%S", time.localtime(since))
        if st.get("reason"):
            text += f" ({st['reason']})"
        next_try = st.get("next_try")
        if isinstance(next_try, (int, float)):
            text += f"; next try in {max(0.0, next_try - now):.0f} s"
        lines.append(text)
    return lines
