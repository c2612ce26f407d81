"""A real redis-server for tests: one child process on a free 127.0.0.1 port, its config,
data and log in its own directory, stopped by its pid (never the system's service on 6379).

`RedisServer(dir, aof=...)` is the process; the pytest fixtures below (`redis_server`, a
fresh server per test, and `redis_url`, one server per session emptied before each test)
are registered for every test by tests/conftest.py.

Children never outlive the test process: each is started with PR_SET_PDEATHSIG (SIGKILL
when the thread that started it exits; the fixtures start them on pytest's main thread),
and an atexit hook kills any still running when the interpreter exits normally.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT = 10.0  # seconds for PING to answer PONG (an AOF replay included)
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
_BIND_ATTEMPTS = 5  # a free port found by bind(0) can be taken before redis binds it

_running: set[RedisServer] = set()


class RedisServerError(RuntimeError):
    """redis-server did not start, or did not answer; the message carries its log."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel kills it if we go away.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _encode(*args: str | bytes | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class RedisServer:
    """One redis-server child process.

    Args:
        dir: its directory (config, log, AOF/RDB files); created if missing.
        aof: `appendonly yes` with `appendfsync always` (every write on disk before its
            reply), for durability tests; otherwise nothing is persisted (`save ""`).
        port: a fixed port; by default a free one, kept across `restart()`.
        host: the address it binds (another host's, for a multi-host test: then `port`
            must be given, and `prefix` runs it there).
        prefix: what the command line starts with (e.g. `ip netns exec NS`, which execs
            redis-server: the process is still the server itself).
    """

    def __init__(self, dir: str | os.PathLike[str], *, aof: bool = False, port: int | None = None,
                 host: str = "127.0.0.1", prefix: tuple[str, ...] = ()):  # fmt: skip
        self.host = host
        self.prefix = prefix
        self.dir = Path(dir)
        self.aof = aof
        self._fixed_port = port
        self.port = port or 0
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what tests use ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RedisServerError("redis-server is not running")
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> RedisServer:
        """Start the server (on the same port and dir as before, if it ran before) and
        return once it answers PING."""
        if self.running():
            raise RedisServerError(f"redis-server already running (pid {self.pid})")
        require_redis_server()
        self.dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self.port else _BIND_ATTEMPTS
        for attempt in range(attempts):
            if not self.port or (attempt and not self._fixed_port):
                self.port = _free_port()
            self._spawn()
            try:
                self._wait_ready()
                return self
            except RedisServerError:
                lost_port = not self.running() and "Address already in use" in self.log()
                self._reap()
                if not lost_port or self._fixed_port or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL; return once it is reaped."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does. Returns once it is reaped."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
        self._reap()

    def restart(self) -> None:
        """`stop()` then `start()` on the same port and dir (an AOF server reloads its data)."""
        self.stop()
        self.start()

    def command(self, *args: str | bytes | int, timeout: float = 5.0) -> bytes:
        """Send one command and return its reply: a status or error line ("+PONG",
        "-LOADING ..."), an integer line (":3") or a bulk string's bytes.

        Enough for PING, INFO and FLUSHALL without a client library; use redis-py for the rest.
        """
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(_encode(*args))
            reply = b""
            while b"\r\n" not in reply:
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError(f"redis-server closed the connection: {reply!r}")
                reply += chunk
            head, _, rest = reply.partition(b"\r\n")
            if not head.startswith(b"$"):
                return head
            size = int(head[1:])
            while len(rest) < size + 2:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("redis-server closed the connection mid-reply")
                rest += chunk
            return rest[:size]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the process -------------------------------------------------------------------------

    def _config(self) -> str:
        lines = [
            f"bind {self.host}",
            # Protected mode admits loopback clients only (no password set): a server on
            # another test host is reached from a private test network instead.
            f"protected-mode {'yes' if self.host.startswith('127.') else 'no'}",
            f"port {self.port}",
            f'dir "{self.dir.resolve()}"',
            "daemonize no",
            'logfile ""',  # stdout, which goes to redis.log (so do errors before logging starts)
        ]
        if self.aof:
            lines += ['save ""', "appendonly yes", "appendfsync always"]
        else:
            lines += ['save ""', "appendonly no"]
        return "\n".join(lines) + "\n"

    def _spawn(self) -> None:
        conf = self.dir / "redis.conf"
        conf.write_text(self._config())
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [*self.prefix, REDIS_SERVER, str(conf)],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                close_fds=True,
            )
        _running.add(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.running():
                code = self._proc.returncode if self._proc else None
                raise RedisServerError(
                    f"redis-server exited with {code} before answering PING on port "
                    f"{self.port}; its log ({self.log_path}):\n{self.log()[-4000:]}"
                )
            try:
                reply = self.command("PING", timeout=1.0)
            except OSError as e:
                last = repr(e)
            else:
                if reply == b"+PONG" and self._answering_pid() == self.pid:
                    return
                if reply == b"+PONG":  # another server holds the port; ours will exit
                    last = f"another redis-server answers on port {self.port}"
                else:
                    last = reply.decode(errors="replace")  # -LOADING while an AOF replays
            time.sleep(0.02)
        self.kill()
        raise RedisServerError(
            f"redis-server (port {self.port}) did not answer PING within {START_TIMEOUT} s "
            f"(last: {last}); its log ({self.log_path}):\n{self.log()[-4000:]}"
        )

    def _answering_pid(self) -> int | None:
        for line in self.command("INFO", "server", timeout=1.0).decode().splitlines():
            if line.startswith("process_id:"):
                return int(line.split(":", 1)[1])
        return None

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
        self._proc = None
        _running.discard(self)


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_running):
        server.kill()


def redis_server_available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


def require_redis_server() -> None:
    """Skip the test when redis-server is not installed; under CI=true fail instead, since
    `make test` installs it (`make redis-deps`) and a skipped backend would hide breakage."""
    if redis_server_available():
        return
    reason = f"{REDIS_SERVER} is not installed (`make redis-deps` installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# -- fixtures (registered in tests/conftest.py) -----------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server of this test's own, without persistence (a durability
    test starts `RedisServer(tmp_path / "redis", aof=True)` itself)."""
    require_redis_server()
    server = RedisServer(tmp_path / "redis")
    with server:
        yield server


@pytest.fixture(scope="session")
def _redis_session_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis_server()
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(_redis_session_server: RedisServer) -> str:
    """The URL of the session's redis-server, emptied (FLUSHALL) before this test."""
    server = _redis_session_server
    if not server.running():  # a test killed it: give the next ones a server again
        server.start()
    reply = server.command("FLUSHALL")
    if reply != b"+OK":
        raise RedisServerError(f"FLUSHALL answered {reply!r}")
    return server.url
