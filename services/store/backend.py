"""The storage seam: what every service needs of its backend, and where it comes from.

A backend is the task ledger with its event log (`Ledger`), the transport that carries
"run task X" messages to a worker (`Queue`), and the wake-ups between services (`Waker`,
`Wakes`). Two exist:

- **sqlite** (the default, `sqlite:` or nothing): one data dir on one machine. The ledger
  and the log in `herald.db` (services.store.sqlite), Huey on `queue.db` (services.queue),
  wake-ups as datagrams on Unix sockets of the data dir (services.wake).
- **redis** (`redis://HOST:PORT/DB`, `rediss://` for TLS): many hosts. The ledger in hashes
  with each transition and its event appended in one Lua script, the log in per-principal
  Streams (services.store.redisstore), Huey's Redis storage carrying task ids
  (services.queue_redis), wake-ups over pub/sub (services.wake_redis), where the notifier's
  carries "principal P is at seq N" so that notifier nodes read only what changed.

Services never construct a backend's classes by name: they call `open_backend(spec,
layout)` with the `--backend` they were given and use what it returns through the
protocols below. What differs between backends and must be asked, not assumed:

- `Backend.errors`: the exceptions a store or queue call raises when the storage fails
  (sqlite3.Error; redis.RedisError). A service catches these, never `sqlite3.Error`.
- `Backend.global_log`: whether the log has one position across all principals
  (`events_after(pos)` without a principal, `head()` without one): SQLite's does and the
  notifier fans out by it; on Redis each principal's stream is read from its own cursor.
- `Backend.local_files`: whether the data dir holds the databases (checkpoints, WAL
  policy, the disk watch, "clear data" apply only then).

Modules of the Redis backend are imported only when a redis URL is given: the desktop's
start-up (SQLite) never pays for redis-py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from services.core.events import Event
from services.core.search import Query
from services.core.states import TaskState
from services.layout import DataLayout

if TYPE_CHECKING:
    from services.auth import PrincipalRegistry
    from services.store.activity import Activity
    from services.store.sqlite import PruneResult, TaskRecord


class Ledger(Protocol):
    """The task ledger and the event log (`services.store.sqlite.TaskStore` is the
    reference; the contract suite in tests/contract/ holds every backend to it)."""

    # Whether `batch()` is one transaction (an exception leaving it undoes every write
    # inside: SQLite) or a plain block of writes each atomic on its own (Redis).
    atomic_batches: bool

    def close(self) -> None: ...
    def batch(self, *, isolated: bool = True) -> AbstractContextManager[None]: ...

    # the web's side
    def create_task(self, *, principal: str, name: str, args: dict[str, Any],
                    max_attempts: int = 1, max_lost: int = 3, timeout: float | None = None,
                    idempotency_key: str | None = None,
                    ) -> tuple[TaskRecord, Event | None]: ...  # fmt: skip
    def get_task(self, task_id: str, principal: str | None = None) -> TaskRecord | None: ...
    def tasks_by_id_prefix(self, prefix: str, principal: str, limit: int = 10) -> list[str]: ...
    def list_tasks(self, principal: str, *, states: list[TaskState] | None = None,
                   before: int | None = None, limit: int = 50, query: Query | None = None,
                   name: str | None = None, since: float | None = None,
                   until: float | None = None) -> list[TaskRecord]: ...  # fmt: skip
    def request_cancel(self, task_id: str,
                       principal: str) -> tuple[TaskRecord | None, Event | None]: ...  # fmt: skip
    def delete_task(self, task_id: str, principal: str) -> TaskRecord | None: ...
    def activity(self, principal: str, start: float, end: float, bucket: float) -> Activity: ...

    # the worker's side
    def claim(self, task_id: str, worker: str, lease_seconds: float, *,
              limit: int | None = None) -> tuple[TaskRecord | None, Event | None]: ...  # fmt: skip
    def progress(self, task_id: str, attempt: int, fraction: float | None,
                 message: str | None) -> Event | None: ...  # fmt: skip
    def output(self, task_id: str, attempt: int, lines: list[str]) -> Event | None: ...
    def finish(self, task_id: str, attempt: int, state: TaskState, *, result: Any = None,
               error: dict[str, Any] | None = None, reason: str | None = None,
               extra: dict[str, Any] | None = None) -> Event | None: ...  # fmt: skip
    def renew_leases(self, worker: str, lease_seconds: float,
                     task_ids: list[str] | None = None) -> None: ...  # fmt: skip
    def leased_to(self, worker: str) -> list[tuple[str, int]]: ...
    def task_name(self, task_id: str) -> str | None: ...
    def cancel_requested(self, worker: str) -> set[str]: ...
    def retry_later(self, task_id: str, attempt: int, *, delay: float, error: dict[str, Any],
                    requested: bool = False) -> Event | None: ...  # fmt: skip
    def lose(self, task_id: str, attempt: int, *, stopped: bool = False,
             detail: str | None = None) -> tuple[TaskRecord | None, Event | None]: ...  # fmt: skip
    def reap(self, *, live_worker: str | None = None,
             release: str | None = None) -> tuple[list[TaskRecord], list[Event]]: ...  # fmt: skip
    def queued_ids(self, *, unchanged_since: float | None = None) -> list[str]: ...
    def next_retries(self, limit: int = 100) -> list[tuple[str, float]]: ...

    # the log, and retention
    def head(self, principal: str | None = None) -> int: ...
    def events_after(self, after: int, *, principal: str | None = None,
                     task_id: str | None = None, limit: int = 1000,
                     max_bytes: int | None = None) -> list[Event]: ...  # fmt: skip
    def pruned_through(self, principal: str) -> int: ...
    def pruned_marks(self) -> dict[str, int]: ...
    def prune(self, *, older_than: float | None = None, keep: int | None = None,
              batch: int = 200, pause: float = 0.01, wal_limit: int = ...,
              stop: Callable[[], bool] | None = None) -> PruneResult: ...  # fmt: skip
    def sizes(self) -> dict[str, int]: ...


class Queue(Protocol):
    """The transport: task ids to be run, in order (Huey's storage, SQLite or Redis)."""

    def enqueue(self, task_id: str) -> None: ...
    def enqueue_many(self, task_ids: list[str]) -> None: ...
    def try_enqueue(self, task_id: str) -> bool: ...
    def dequeue(self) -> str | None: ...
    def pending_ids(self) -> set[str]: ...
    def wal_size(self) -> int: ...
    def __len__(self) -> int: ...


class Waker(Protocol):
    """Sends wake-ups to one service (services.wake's contract: after the commit)."""

    def wake(self, payload: bytes = ...) -> None: ...
    def close(self) -> None: ...


class WakeSource(Protocol):
    """Receives one service's wake-ups (services.wake.WakeReceiver's contract)."""

    def fileno(self) -> int: ...
    def drain(self, *, clear: bool = True) -> list[bytes]: ...
    def park(self) -> list[bytes] | None: ...
    def wait(self, timeout: float | None) -> list[bytes]: ...
    def close(self) -> None: ...


class FanoutWaker:
    """One service's wake-ups to each of its processes (SQLite's workers: a socket each)."""

    def __init__(self, wakers: list[Waker]) -> None:
        self.wakers = wakers

    def wake(self, payload: bytes | None = None) -> None:
        for w in self.wakers:
            if payload is None:
                w.wake()
            else:
                w.wake(payload)

    def close(self) -> None:
        for w in self.wakers:
            w.close()


class EventWaker:
    """What tells the notifier(s) that events were recorded. On SQLite a plain wake-up
    (the notifier reads the whole log from its cursor); on Redis one "principal P is at
    seq N" message per principal, so each notifier node reads only those streams."""

    def __init__(self, waker: Waker, *, per_principal: Callable[[str, int], None] | None = None
                 ) -> None:  # fmt: skip
        self.waker = waker
        self._per_principal = per_principal

    def wake(self, payload: bytes | None = None) -> None:
        """A wake-up that is not about new events (pruned, revoked), or about new events
        whose principals are not known here: every notifier looks at everything."""
        if payload is None:
            self.waker.wake()
        else:
            self.waker.wake(payload)

    def recorded(self, events: Iterable[Event | None]) -> None:
        """Events were committed (call after the commit, never before)."""
        if self._per_principal is None:
            if any(ev is not None for ev in events):
                self.waker.wake()
            return
        heads: dict[str, int] = {}
        for ev in events:
            if ev is not None and ev.seq > heads.get(ev.principal, 0):
                heads[ev.principal] = ev.seq
        for principal, seq in heads.items():
            self._per_principal(principal, seq)

    def close(self) -> None:
        self.waker.close()


@dataclass(frozen=True)
class BackendSpec:
    """A parsed `--backend`: its kind and, for Redis, its URL."""

    kind: str  # "sqlite" or "redis"
    url: str = ""

    def __str__(self) -> str:
        return self.url or self.kind


def parse_backend(text: str | None) -> BackendSpec:
    """`--backend`'s value: None, "" or "sqlite" (or "sqlite:"): the data dir's SQLite;
    `redis://[user:password@]host[:port][/db]` or `rediss://...`: Redis.

    Raises:
        ValueError: with a message for the user.
    """
    if text is None or text.strip() in ("", "sqlite", "sqlite:", "sqlite://"):
        return BackendSpec("sqlite")
    text = text.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"unknown backend {text!r}: use sqlite (the default) or "
                         "redis://HOST:PORT/DB")  # fmt: skip
    if not parts.hostname:
        raise ValueError(f"backend {text!r} names no host: redis://HOST:PORT/DB")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"backend {text!r}: the port is not a number in 1-65535") from None
    if port == 0:
        raise ValueError(f"backend {text!r}: the port is not a number in 1-65535")
    db = parts.path.lstrip("/")
    if db and not (db.isdigit() and int(db) < 10_000):
        raise ValueError(f"backend {text!r}: the database is a number (redis://HOST:PORT/0)")
    if parts.query or parts.fragment:
        raise ValueError(f"backend {text!r}: no query or fragment is understood")
    return BackendSpec("redis", text)


class Backend:
    """One service's way to its storage (see the module docstring)."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    global_log = True
    local_files = True

    def __init__(self, spec: BackendSpec, layout: DataLayout, *, worker_processes: int = 1,
                 worker_index: int = 1) -> None:  # fmt: skip
        self.spec = spec
        self.layout = layout
        self.worker_processes = max(1, worker_processes)
        self.worker_index = worker_index

    def wake_address(self, service: str, index: int | None = None) -> str:
        """The data dir's socket of a service's wake-ups: each worker process has its own
        (the first the plain "worker"), since one datagram socket has one receiver."""
        index = self.worker_index if index is None else index
        if service == "worker" and index > 1:
            service = f"worker-{index}"
        return self.layout.wake_address(service)

    def store(self, **options: Any) -> Ledger:
        from services.store.sqlite import TaskStore

        return TaskStore(self.layout.ledger_db, **options)

    def queue(self, **options: Any) -> Queue:
        from services.queue import TaskQueue

        return TaskQueue(self.layout, **options)

    def waker(self, service: str) -> Waker:
        """Wake-ups to `service` ("worker", "notifier") on this backend."""
        from services.wake import WakeSender

        if service == "worker" and self.worker_processes > 1:  # every worker process
            return FanoutWaker([WakeSender(self.wake_address("worker", i))
                                for i in range(1, self.worker_processes + 1)])  # fmt: skip
        return WakeSender(self.wake_address(service, 1))

    def loop_waker(self, service: str) -> Waker:
        """`waker` for a process on an asyncio loop (the web): never waits on it."""
        return self.waker(service)

    def wake_source(self, service: str) -> WakeSource:
        """The wake-ups sent to `service` (this process being it)."""
        from services.wake import WakeReceiver

        return WakeReceiver(self.wake_address(service))

    def event_waker(self) -> EventWaker:
        return EventWaker(self.waker("notifier"))

    def principals(self) -> PrincipalRegistry | None:
        """Where the principals are when not in the data dir's auth.json (None: there)."""
        return None

    def writer(self, store: Ledger, queue: Queue | None) -> Any:
        """The writer of a process that serves an event loop (services.store.writer)."""
        from services.store.writer import GroupWriter

        return GroupWriter(store.path, queue)  # type: ignore[attr-defined]


class RedisBackend(Backend):
    """Redis: see the module docstring. One connection pool per process and URL."""

    global_log = False
    local_files = False

    def __init__(self, spec: BackendSpec, layout: DataLayout, **workers: int) -> None:
        super().__init__(spec, layout, **workers)
        import redis

        self.errors = (redis.RedisError,)

    def store(self, **options: Any) -> Ledger:
        from services.store.redisstore import RedisTaskStore

        options.pop("checkpoint_pages", None)  # (a SQLite setting)
        return RedisTaskStore(self.spec.url)

    def queue(self, **options: Any) -> Queue:
        from services.queue_redis import RedisTaskQueue

        return RedisTaskQueue(self.spec.url)  # type: ignore[no-any-return]

    def waker(self, service: str) -> Waker:
        from services.wake_redis import RedisWakeSender

        return RedisWakeSender(self.spec.url, wake_channel(self.spec, service))  # type: ignore[no-any-return]

    def loop_waker(self, service: str) -> Waker:
        from services.wake_redis import AsyncRedisWakeSender

        return AsyncRedisWakeSender(self.spec.url, wake_channel(self.spec, service))  # type: ignore[no-any-return]

    def wake_source(self, service: str) -> WakeSource:
        from services.wake_redis import RedisWakeReceiver

        return RedisWakeReceiver(self.spec.url, wake_channel(self.spec, service))  # type: ignore[no-any-return]

    def principals(self) -> PrincipalRegistry | None:
        from services.auth import PrincipalRegistry

        return PrincipalRegistry(self.spec.url)

    def event_waker(self) -> EventWaker:
        sender = self.waker("notifier")
        return EventWaker(sender, per_principal=sender.wake_principal)  # type: ignore[attr-defined]

    def writer(self, store: Ledger, queue: Queue | None) -> Any:
        from services.store.writer import SerialWriter

        return SerialWriter(store, queue)


def wake_channel(spec: BackendSpec, service: str) -> str:
    """The pub/sub channel of a service's wake-ups on Redis (every node of it listens).
    Channels are shared by every database of a server: the name carries the database's."""
    db = urlsplit(spec.url).path.lstrip("/") or "0"
    return f"herald:{db}:wake:{service}"


def open_backend(spec: BackendSpec | str | None, layout: DataLayout, *,
                 worker_processes: int = 1, worker_index: int = 1) -> Backend:  # fmt: skip
    """The backend a `--backend` value names (see `parse_backend`), for a service of an
    instance with `worker_processes` workers (`worker_index`: which one this is)."""
    if not isinstance(spec, BackendSpec):
        spec = parse_backend(spec)
    kind = RedisBackend if spec.kind == "redis" else Backend
    return kind(spec, layout, worker_processes=worker_processes, worker_index=worker_index)


def backend_of(args: Any, layout: DataLayout) -> Backend:
    """The backend of a service, from its parsed arguments (services.runtime)."""
    return open_backend(getattr(args, "backend", None), layout,
                        worker_processes=getattr(args, "worker_processes", 1),
                        worker_index=getattr(args, "worker_index", 1))  # fmt: skip


def storage_errors(*backends: Backend) -> tuple[type[BaseException], ...]:
    """Every exception class the backends' calls raise when their storage fails."""
    found: list[type[BaseException]] = []
    for b in backends:
        found += [e for e in b.errors if e not in found]
    return tuple(found)
