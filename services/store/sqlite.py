"""The task ledger and the append-only event log in one SQLite database (WAL).

Each write is one short IMMEDIATE transaction that updates the ledger and appends the
matching event together, so the ledger and the log never disagree. Several writes can share
one transaction (`TaskStore.batch`, the worker's group commit).

Two numbers per event. Its position in the whole log (`events.seq`, an AUTOINCREMENT key;
`Event.log_pos`) serves the notifier's fan-out only and is never shown. What a principal
sees is its own sequence (`events.pseq`; `Event.seq`): 1, 2, 3, ... for its events alone,
counted in `heads` in the same transaction as the append, so another principal's activity
moves nothing a principal can see. Writes are serialised, so both orders are commit order:
a reader that asks for "seq > N" (of the log, or of one principal) never skips an event
committed later with a smaller number.

Attempts: `attempt` counts every start. A failed attempt may be retried while `failures`
stays below `max_attempts - 1` (the task's `retries`), after a wait (`next_attempt_at`); an
attempt lost with its process counts in `lost` instead, against `max_lost`. Attempts that are
not the task's own fault (lost, or given back by a stopping worker) are `uncharged`: the
API's `max_attempts` is `max_attempts + uncharged`.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import ErrorCode
from services.core.events import Event, EventType
from services.core.jsontext import compact
from services.core.retry import RetryReason, retry_message
from services.core.search import Query
from services.core.states import TaskState
from services.core.taskview import cancelled_message
from services.runtime import pid_alive
from services.store import activity as _activity

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    principal TEXT NOT NULL,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL,
    message TEXT,
    result TEXT,
    error TEXT,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    uncharged INTEGER NOT NULL DEFAULT 0,
    max_lost INTEGER NOT NULL DEFAULT 3,
    next_attempt_at REAL,
    timeout REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    lease_owner TEXT,
    lease_until REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    pn INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idempotency
    ON tasks (principal, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    attempt INTEGER NOT NULL,
    data TEXT NOT NULL,
    pseq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pruned (
    principal TEXT PRIMARY KEY,
    through INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS heads (
    principal TEXT PRIMARY KEY,
    head INTEGER NOT NULL,
    tasks INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
"""

# The search index (version 5): an external-content FTS5 table over what `tasks_search`
# shows of each *finished* task, kept in step with the ledger by triggers, so the write that
# finishes (or deletes) a task changes the index in the same transaction. A finished task
# never changes again: it is indexed once, when its state becomes a finished one (the
# trigger is on `state` alone: a trigger that may write the FTS table makes every write
# that could fire it join that table's transaction, which costs a progress report ~0.4 ms;
# for the same reason there is none on INSERT: a task is always created queued). Queued and
# running tasks are few, and their messages change many times a second: `list_tasks`
# matches them row by row instead
# (`services.core.search.Query.matches`, the rules the index follows). Results are indexed
# up to their first _RESULT_CHARS characters.
_RESULT_CHARS = 20_000
_FINISHED = "('succeeded', 'failed', 'cancelled')"


def _indexed(row: str) -> str:
    """The indexed columns of a tasks row (`new` or `old` in a trigger), in FTS order."""
    return (f"{row}.id, {row}.name, {row}.args, {row}.message, "
            f"substr({row}.result, 1, {_RESULT_CHARS})")  # fmt: skip


_FTS_COLUMNS = "id, name, args, message, result"
FTS_SCHEMA = f"""
CREATE VIEW IF NOT EXISTS tasks_search (n, {_FTS_COLUMNS}) AS
    SELECT n, {_indexed("tasks")} FROM tasks WHERE state IN {_FINISHED};
CREATE VIRTUAL TABLE IF NOT EXISTS tasks_fts USING fts5(
    {_FTS_COLUMNS}, content='tasks_search', content_rowid='n',
    tokenize='unicode61 remove_diacritics 2', prefix='2 3');
DROP TRIGGER IF EXISTS tasks_fts_insert;
CREATE TRIGGER IF NOT EXISTS tasks_fts_delete AFTER DELETE ON tasks
    WHEN old.state IN {_FINISHED}
BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, {_FTS_COLUMNS})
        VALUES ('delete', old.n, {_indexed("old")});
END;
CREATE TRIGGER IF NOT EXISTS tasks_fts_update AFTER UPDATE OF state ON tasks
    WHEN (old.state IN {_FINISHED}) IS NOT (new.state IN {_FINISHED})
BEGIN
    INSERT INTO tasks_fts (tasks_fts, rowid, {_FTS_COLUMNS})
        SELECT 'delete', old.n, {_indexed("old")} WHERE old.state IN {_FINISHED};
    INSERT INTO tasks_fts (rowid, {_FTS_COLUMNS})
        SELECT new.n, {_indexed("new")} WHERE new.state IN {_FINISHED};
END;
"""

# Indexes on columns an older database gets only from the migration.
_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_next_attempt ON tasks (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS events_principal_pseq ON events (principal, pseq);
CREATE INDEX IF NOT EXISTS tasks_principal_pn ON tasks (principal, pn);
DROP INDEX IF EXISTS tasks_principal_n;
CREATE INDEX IF NOT EXISTS events_task_pseq ON events (task_id, pseq);
DROP INDEX IF EXISTS events_principal_seq;
DROP INDEX IF EXISTS events_task_seq;
CREATE INDEX IF NOT EXISTS tasks_principal_name ON tasks (principal, name, pn);
CREATE INDEX IF NOT EXISTS tasks_principal_created ON tasks (principal, created_at);
"""

# 3: the `pruned` watermarks (retention) and tasks_finished.
# 4: per-principal sequences (events.pseq, tasks.pn, heads); `pruned.through` counts in
#    the events' ones.
# 5: the search index (tasks_fts, see FTS_SCHEMA), built from the ledger by the migration.
SCHEMA_VERSION = 5
# The row of `heads` whose count a principal without a row of its own starts from (no
# principal has an empty name): the log's head when a version 3 database was migrated.
_FLOOR = ""
# Columns added since version 1 (the first release), with their definitions.
_ADDED_COLUMNS = {
    "failures": "INTEGER NOT NULL DEFAULT 0",
    "lost": "INTEGER NOT NULL DEFAULT 0",
    "uncharged": "INTEGER NOT NULL DEFAULT 0",
    "max_lost": "INTEGER NOT NULL DEFAULT 3",
    "next_attempt_at": "REAL",
    "timeout": "REAL",
    "pn": "INTEGER NOT NULL DEFAULT 0",
}

_TASK_COLUMNS = (
    "n, id, principal, name, args, state, progress, message, result, error, attempt, "
    "max_attempts, failures, lost, uncharged, max_lost, next_attempt_at, timeout, "
    "cancel_requested, idempotency_key, lease_owner, lease_until, created_at, "
    "started_at, finished_at, updated_at, pn"
)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task as the ledger knows it."""

    n: int
    id: str
    principal: str
    name: str
    args: dict[str, Any]
    state: TaskState
    progress: float | None
    message: str | None
    result: Any
    error: dict[str, Any] | None
    attempt: int
    max_attempts: int
    failures: int
    lost: int
    uncharged: int
    max_lost: int
    next_attempt_at: float | None
    timeout: float | None
    cancel_requested: bool
    idempotency_key: str | None
    lease_owner: str | None
    lease_until: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    pn: int = 0  # its number among its principal's tasks (the task list's cursor)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> TaskRecord:
        (n, id_, principal, name, args, state, progress, message, result, error, attempt,
         max_attempts, failures, lost, uncharged, max_lost, next_attempt_at, timeout,
         cancel_requested, idem, lease_owner, lease_until, created_at, started_at,
         finished_at, updated_at, pn) = row  # fmt: skip
        return cls(
            n=n,
            id=id_,
            principal=principal,
            name=name,
            args=json.loads(args),
            state=TaskState(state),
            progress=progress,
            message=message,
            result=json.loads(result) if result is not None else None,
            error=json.loads(error) if error is not None else None,
            attempt=attempt,
            max_attempts=max_attempts,
            failures=failures,
            lost=lost,
            uncharged=uncharged,
            max_lost=max_lost,
            next_attempt_at=next_attempt_at,
            timeout=timeout,
            cancel_requested=bool(cancel_requested),
            idempotency_key=idem,
            lease_owner=lease_owner,
            lease_until=lease_until,
            created_at=created_at,
            started_at=started_at,
            finished_at=finished_at,
            updated_at=updated_at,
            pn=pn,
        )

    @property
    def shown_max_attempts(self) -> int:
        """The attempts it may get, counting re-runs that were not its own fault."""
        return self.max_attempts + self.uncharged

    @property
    def retries_left(self) -> int:
        """How many more failed attempts may be retried."""
        return max(0, self.max_attempts - 1 - self.failures)


CANCELLED_MESSAGE = "Cancelled"


def worker_identity() -> str:
    """A lease owner name for this process: host, pid and a random nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lease_owner_alive(owner: str) -> bool | None:
    """Whether the process named by a lease owner still runs (None: another host)."""
    try:
        host, pid_text, _ = owner.split(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return pid_alive(pid)


BUSY_TIMEOUT = 10.0  # seconds a writer waits for the write lock before giving up
# Waits between tries for the write lock. SQLite's own busy handler sleeps at least 1 ms,
# even when the lock frees in microseconds (another service's short transaction); these
# start at a few tens of microseconds.
_LOCK_WAITS = (0.0, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001)


@dataclass(slots=True)
class WriteStats:
    """What this process's writers did (counters for the bench and the tests; a `+=` that
    races another thread may be lost, which a counter can afford)."""

    transactions: int = 0  # write transactions begun on the ledger (BEGIN IMMEDIATE)
    queue_transactions: int = 0  # ... and on the queue (services.queue)
    lock_waits: int = 0  # sleeps of `retry_busy` waiting for a lock
    loop_lock_waits: int = 0  # of those, sleeps of a thread that runs an event loop

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


WRITE_STATS = WriteStats()


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (5, 6))  # SQLITE_BUSY, SQLITE_LOCKED (and extended)
    return "locked" in str(exc) or "busy" in str(exc)


def _on_event_loop() -> bool:
    """Whether this thread runs an asyncio event loop. Looked up, not imported: a process
    that has no loop (the worker's dispatcher and the executors it forks) never pays for
    asyncio and what it loads (5-10 MB resident, 30-60 ms at start) because of the store."""
    aio = sys.modules.get("asyncio")
    return aio is not None and aio._get_running_loop() is not None


def retry_busy(run: Any, timeout: float = BUSY_TIMEOUT) -> Any:
    """`run()`, tried again while the database is busy (no busy timeout is set on Herald's
    connections: this waits in finer steps than SQLite's handler would).

    Raises:
        sqlite3.OperationalError: still busy after `timeout` seconds, or another error.
    """
    deadline = None
    tries = 0
    while True:
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                raise
        WRITE_STATS.lock_waits += 1
        if _on_event_loop():  # every request of that loop waits
            WRITE_STATS.loop_lock_waits += 1
        time.sleep(_LOCK_WAITS[min(tries, len(_LOCK_WAITS) - 1)])
        tries += 1


def wal_checkpoint(conn: sqlite3.Connection, lock: Any, *, truncate: bool = False,
                   wait: float = 0.5) -> bool:
    """Checkpoint the WAL of `conn`'s database (PASSIVE, or TRUNCATE: see
    `TaskStore.checkpoint`); True when it completed. `lock` guards `conn`."""
    mode = "TRUNCATE" if truncate else "PASSIVE"
    deadline = time.monotonic() + wait
    tries = 0
    while True:
        with lock:
            try:
                busy, log, done = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
                busy, log, done = 1, -1, -1
        if not busy and log == done:
            return True
        if not truncate or time.monotonic() >= deadline:
            return False
        # Another connection holds the write lock or reads an older snapshot: both are
        # brief. (No busy handler here: it would sleep at least a millisecond per try.)
        time.sleep(_LOCK_WAITS[min(tries, len(_LOCK_WAITS) - 1)])
        tries += 1


def restart_wal(conn: sqlite3.Connection, lock: Any) -> bool:
    """Start a fully checkpointed WAL over now, from a housekeeping connection; True if
    it did (False: another connection is writing, and so starts it over itself).

    SQLite starts the WAL over at the first commit after every frame was checkpointed,
    and that commit writes and fsyncs the new WAL header: 0.5-3 ms here, paid by the first
    task after idle on the web service's event loop. A commit that only sets `user_version`
    to its own value does it here instead, off that path.
    """
    with lock:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                return False
            raise
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute(f"PRAGMA user_version={version}")
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def begin_immediate(c: sqlite3.Connection) -> None:
    """Take the write lock (BEGIN IMMEDIATE), waiting for it in fine steps."""
    WRITE_STATS.transactions += 1
    retry_busy(lambda: c.execute("BEGIN IMMEDIATE"))


# WAL pages after which a committing connection checkpoints by itself. The worker turns this
# off for its own connection and checkpoints in a background thread instead, so no task
# waits for a checkpoint's fsync; other writers keep a high threshold as a safety net.
SAFETY_CHECKPOINT_PAGES = 10_000
# Bytes a WAL file is cut back to whenever SQLite starts it over: a burst's WAL does not
# stay on disk at its peak size.
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
TERMINAL_STATES = tuple(s.value for s in TaskState if s.terminal)
PRUNE_WAL_LIMIT = 16 * 1024 * 1024  # see TaskStore.prune


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one `TaskStore.prune_batch` (or a whole `prune`) deleted."""

    tasks: int = 0
    events: int = 0

    def __add__(self, other: PruneResult) -> PruneResult:
        return PruneResult(self.tasks + other.tasks, self.events + other.events)


class TaskStore:
    """The ledger and the log. Thread-safe; one instance per process is enough.

    Args:
        path: the SQLite file; created with owner-only permissions if missing.
        checkpoint_pages: WAL size (pages) at which a commit checkpoints; 0: never.
    """

    # `batch()` is one transaction: an exception leaving it undoes every write inside.
    atomic_batches = True

    def __init__(
        self, path: Path | str, *, checkpoint_pages: int = SAFETY_CHECKPOINT_PAGES
    ) -> None:
        self.path = Path(path)
        fresh = not self.path.exists()
        self._conn = sqlite3.connect(
            str(self.path), timeout=0, isolation_level=None, check_same_thread=False
        )
        if fresh:
            os.chmod(self.path, 0o600)
        self._lock = threading.RLock()
        c = self._conn
        retry_busy(lambda: c.execute("PRAGMA journal_mode=WAL"))
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=OFF")
        c.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
        c.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        self._depth = 0  # > 0 inside a batch: writes join its transaction
        self._savepoints = True  # ... each as a savepoint
        # executescript commits by itself: run it outside an explicit transaction.
        with self._lock:
            if c.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                retry_busy(lambda: c.executescript(SCHEMA + FTS_SCHEMA))
                self._migrate(c)
                retry_busy(lambda: c.executescript(_INDEXES))
            # Not tied to a schema version: a no-op (no write) once it exists.
            retry_busy(lambda: c.execute(_activity.INDEX))

    @staticmethod
    def _migrate(c: sqlite3.Connection) -> None:
        """Bring a database of an older release up to SCHEMA_VERSION (once, atomically:
        every service opens the store at start)."""
        if c.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        begin_immediate(c)
        try:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                have = {row[1] for row in c.execute("PRAGMA table_info(tasks)")}
                for name, decl in _ADDED_COLUMNS.items():
                    if name not in have:
                        c.execute(f"ALTER TABLE tasks ADD COLUMN {name} {decl}")
                if "failures" not in have:
                    # Version 1 had no retries of failures: its max_attempts counted the
                    # attempts a dying worker could lose.
                    c.execute("UPDATE tasks SET max_lost = max_attempts, max_attempts = 1")
                if "pseq" not in {row[1] for row in c.execute("PRAGMA table_info(events)")}:
                    TaskStore._migrate_sequences(c)
                if version < 5:
                    # Index every task the ledger has (the triggers keep it in step from
                    # now on; any written between them and this are indexed again here).
                    c.execute("INSERT INTO tasks_fts (tasks_fts) VALUES ('rebuild')")
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    @staticmethod
    def _migrate_sequences(c: sqlite3.Connection) -> None:
        """Version 4: give every event a per-principal seq, with no client's cursor lost.

        Existing events keep their log position as their seq (increasing per principal,
        with gaps), so a cursor saved before the upgrade resumes exactly, and the
        `pruned` watermarks (log positions) stay right. Every principal's counter starts
        at the log's head then, also one the store has never seen (a token with no task
        yet, whose client was shown that head): what the upgrade shows is what every
        principal could see before it; from then on nothing of another's moves it.
        """
        c.execute("ALTER TABLE events ADD COLUMN pseq INTEGER NOT NULL DEFAULT 0")
        c.execute("UPDATE events SET pseq = seq")
        c.execute("UPDATE tasks SET pn = n")  # the same for the task list's cursor

        def top(table: str, key: str) -> int:
            row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
            last = c.execute(f"SELECT COALESCE(MAX({key}), 0) FROM {table}").fetchone()[0]
            return max(row[0] if row else 0, last)

        c.execute("INSERT OR REPLACE INTO heads (principal, head, tasks) VALUES (?, ?, ?)",
                  (_FLOOR, top("events", "seq"), top("tasks", "n")))  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def checkpoint(self, *, truncate: bool = False, wait: float = 0.5) -> bool:
        """Copy the WAL into the database without blocking readers or writers.

        Args:
            truncate: then also empty the WAL file (TRUNCATE): this takes the write lock
                and needs every reader to be off the WAL, so it is tried for `wait`
                seconds in fine steps between other connections' transactions.

        Returns:
            True when every frame was copied (and, with `truncate`, the file emptied).
        """
        return wal_checkpoint(self._conn, self._lock, truncate=truncate, wait=wait)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on this store's connection (inside `batch`: False
        after an error that SQLite answered by rolling the whole transaction back)."""
        return self._conn.in_transaction

    def restart_wal(self) -> bool:
        """Start the checkpointed WAL over now (see `restart_wal`)."""
        return restart_wal(self._conn, self._lock)

    @contextmanager
    def batch(self, *, isolated: bool = True) -> Iterator[None]:
        """Group every write made inside the block into one transaction (group commit).

        The transaction begins with the first write (a block that writes nothing costs
        nothing). With `isolated`, each write inside is a savepoint: one that fails is
        undone alone and raises as usual, the others commit together when the block ends.
        Without it (cheaper: no savepoint statements), a write that fails may leave part of
        itself done: let the exception leave the block, which undoes the whole batch. If
        the commit itself fails, none of them happened. Nested batches join the outer one.
        """
        with self._lock:
            if self._depth:
                yield
                return
            self._depth = 1
            self._savepoints = isolated
            try:
                yield
            except BaseException:
                self._depth = 0
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            if not self._conn.in_transaction:
                return
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def try_begin(self) -> bool:
        """Inside `batch`: take the write lock now if no other connection holds it, without
        waiting for it; False if one does (nothing was begun). For a caller that must never
        wait on its thread (an event loop's) and has somewhere else to write instead."""
        with self._lock:
            if not self._depth:
                raise RuntimeError("try_begin() outside a batch")
            if self._conn.in_transaction:
                return True
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    return False
                raise
            WRITE_STATS.transactions += 1
            return True

    def wal_bytes(self) -> int:
        """Bytes of the ledger's WAL file (0 if there is none)."""
        return _size(self.path.parent / (self.path.name + "-wal"))

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """A block of writes, all or nothing: inside `batch` (even one not `isolated`) a
        savepoint of its own, undone alone by an exception leaving it; else a transaction."""
        with self._lock:
            if not self._depth:
                with self._write() as c:
                    yield c
                return
            if not self._conn.in_transaction:
                begin_immediate(self._conn)
            self._conn.execute("SAVEPOINT atomic")
            try:
                yield self._conn
            except BaseException:
                if self._conn.in_transaction:  # (see _write)
                    self._conn.execute("ROLLBACK TO atomic")
                    self._conn.execute("RELEASE atomic")
                raise
            self._conn.execute("RELEASE atomic")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._depth:
                if not self._conn.in_transaction:
                    begin_immediate(self._conn)
                if not self._savepoints:
                    yield self._conn
                    return
                self._conn.execute("SAVEPOINT w")
                try:
                    yield self._conn
                except BaseException:
                    # A full disk or an I/O error may have rolled the whole transaction
                    # back already (SQLite does so by itself): then there is no savepoint.
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK TO w")
                        self._conn.execute("RELEASE w")
                    raise
                self._conn.execute("RELEASE w")
                return
            begin_immediate(self._conn)
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _append(
        self,
        c: sqlite3.Connection,
        task_id: str,
        principal: str,
        etype: EventType,
        attempt: int,
        data: dict[str, Any],
        now: float,
    ) -> Event:
        pseq = self._next(c, principal, "head")
        cur = c.execute(
            "INSERT INTO events (task_id, principal, type, ts, attempt, data, pseq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (task_id, principal, etype.value, now, attempt, compact(data), pseq),
        )
        return Event(pseq, task_id, principal, etype, now, attempt, data,
                     log_pos=cur.lastrowid or 0)  # fmt: skip

    @staticmethod
    def _next(c: sqlite3.Connection, principal: str, counter: str) -> int:
        """The principal's next event seq (`counter` "head") or task number ("tasks"),
        counted in the caller's transaction. A principal's first count starts from the
        floor (see `_migrate_sequences`)."""
        assert counter in ("head", "tasks")
        c.execute(
            "INSERT OR IGNORE INTO heads (principal, head, tasks) SELECT ?, "
            "COALESCE(MAX(head), 0), COALESCE(MAX(tasks), 0) FROM heads WHERE principal = ?",
            (principal, _FLOOR),
        )  # fmt: skip
        row = c.execute(f"UPDATE heads SET {counter} = {counter} + 1 WHERE principal = ? "
                        f"RETURNING {counter}", (principal,)).fetchone()  # fmt: skip
        return int(row[0])

    def _get(self, c: sqlite3.Connection, task_id: str) -> TaskRecord | None:
        row = c.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return TaskRecord.from_row(row) if row else None

    # ----------------------------------------------------------------- web side

    def create_task(
        self,
        *,
        principal: str,
        name: str,
        args: dict[str, Any],
        max_attempts: int = 1,
        max_lost: int = 3,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[TaskRecord, Event | None]:
        """Record a new task and its "queued" event.

        Args:
            max_attempts: 1 + how many times a failed attempt is retried.
            max_lost: attempts lost with their process before it fails `worker_lost`.
            timeout: each attempt's time limit in seconds (None: none).

        Returns:
            The task and its queued event; with an idempotency key already used by this
            principal, the existing task and None.
        """
        now = time.time()
        task_id = uuid.uuid4().hex
        with self._write() as c:
            if idempotency_key is not None:
                row = c.execute(
                    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE principal = ? "
                    "AND idempotency_key = ?",
                    (principal, idempotency_key),
                ).fetchone()
                if row:
                    return TaskRecord.from_row(row), None
            pn = self._next(c, principal, "tasks")
            cur = c.execute(
                "INSERT INTO tasks (id, principal, name, args, state, max_attempts, max_lost, "
                "timeout, idempotency_key, created_at, updated_at, pn) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, principal, name, compact(args), TaskState.QUEUED.value, max_attempts,
                 max_lost, timeout, idempotency_key, now, now, pn),
            )  # fmt: skip
            # max_attempts: a client that learns of the task by this event alone (submitted
            # elsewhere, or the event beat the submit's answer) can say "attempt 2 of 3".
            data: dict[str, Any] = {"name": name, "args": args, "max_attempts": max_attempts}
            if timeout is not None:
                data["timeout"] = timeout
            ev = self._append(c, task_id, principal, EventType.QUEUED, 0, data, now)
        rec = TaskRecord(
            n=cur.lastrowid or 0, id=task_id, principal=principal, name=name, args=args,
            state=TaskState.QUEUED, progress=None, message=None, result=None, error=None,
            attempt=0, max_attempts=max_attempts, failures=0, lost=0, uncharged=0,
            max_lost=max_lost, next_attempt_at=None, timeout=timeout, cancel_requested=False,
            idempotency_key=idempotency_key, lease_owner=None, lease_until=None,
            created_at=now, started_at=None, finished_at=None, updated_at=now, pn=pn,
        )  # fmt: skip
        return rec, ev

    def get_task(self, task_id: str, principal: str | None = None) -> TaskRecord | None:
        """The task, or None if it does not exist or belongs to another principal."""
        with self._lock:
            rec = retry_busy(lambda: self._get(self._conn, task_id))
        if rec is None or (principal is not None and rec.principal != principal):
            return None
        return rec

    def tasks_by_id_prefix(self, prefix: str, principal: str, limit: int = 10) -> list[str]:
        """The ids of the principal's tasks that start with `prefix` (lowercase hex), in
        order, at most `limit`: a range over the id index, so a short prefix costs only
        the ids that share it; other principals' tasks are never returned."""
        if not prefix or any(ch not in "0123456789abcdef" for ch in prefix):
            return []
        # Every id with this prefix sorts in [prefix, prefix + "g"): ids are hex. The unary
        # + keeps the planner on the id index (the principal one would scan all of theirs).
        sql = ("SELECT id FROM tasks WHERE id >= ? AND id < ? AND +principal = ? "
               "ORDER BY id LIMIT ?")  # fmt: skip
        args = (prefix, prefix + "g", principal, limit)
        with self._lock:
            rows = retry_busy(lambda: self._conn.execute(sql, args).fetchall())
        return [r[0] for r in rows]

    def list_tasks(
        self,
        principal: str,
        *,
        states: list[TaskState] | None = None,
        before: int | None = None,
        limit: int = 50,
        query: Query | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[TaskRecord]:
        """The principal's tasks, newest first; `before` is the `pn` of the last one seen
        (its number among the principal's own tasks: it says nothing of others').

        Args:
            query: only tasks matching this search (`services.core.search`), through the
                search index.
            name: only tasks of this name.
            since, until: only tasks submitted at or after / before these wall times.
        """
        with self._lock:
            return retry_busy(lambda: self._list_in(
                self._conn, principal, states, before, limit, query, name, since, until))

    @staticmethod
    def _list_in(c: sqlite3.Connection, principal: str, states: list[TaskState] | None,
                 before: int | None, limit: int, query: Query | None, name: str | None,
                 since: float | None, until: float | None) -> list[TaskRecord]:  # fmt: skip
        # A time range becomes a range of pn first (both grow together for a principal),
        # so the newest-first walk starts and stops at its ends instead of filtering every
        # task of the history; the times are still checked on each row.
        lo, hi = None, before
        if until is not None:
            row = c.execute("SELECT pn FROM tasks WHERE principal = ? AND created_at < ? "
                            "ORDER BY created_at DESC LIMIT 1", (principal, until)).fetchone()
            if row is None:
                return []
            hi = row[0] + 1 if hi is None else min(hi, row[0] + 1)
        if since is not None:
            row = c.execute("SELECT pn FROM tasks WHERE principal = ? AND created_at >= ? "
                            "ORDER BY created_at LIMIT 1", (principal, since)).fetchone()
            if row is None:
                return []
            lo = row[0]
        where = ["t.principal = ?"]
        params: list[Any] = [principal]
        if states:
            where.append("t.state IN ({})".format(",".join("?" * len(states))))
            params.extend(s.value for s in states)
        for clause, value in (("t.pn < ?", hi), ("t.pn >= ?", lo), ("t.name = ?", name),
                              ("t.created_at >= ?", since), ("t.created_at < ?", until)):
            if value is not None:
                where.append(clause)
                params.append(value)
        columns = ", ".join("t." + col.strip() for col in _TASK_COLUMNS.split(","))
        if not query:
            sql = f"SELECT {columns} FROM tasks AS t WHERE {' AND '.join(where)} " \
                  "ORDER BY t.pn DESC LIMIT ?"  # fmt: skip
            return [TaskRecord.from_row(r) for r in c.execute(sql, [*params, limit])]
        found: list[TaskRecord] = []
        active = [s for s in (TaskState.QUEUED, TaskState.RUNNING) if not states or s in states]
        if active:  # the few that are not indexed yet, matched here row by row
            # By the state index: the planner would rather walk the principal's whole
            # history in pn order than sort its few active tasks.
            sql = (f"SELECT {columns} FROM tasks AS t INDEXED BY tasks_state WHERE "
                   f"{' AND '.join(where)} AND t.state IN ({','.join('?' * len(active))}) "
                   "ORDER BY t.pn DESC")
            for row in c.execute(sql, [*params, *(s.value for s in active)]):
                if query.matches(_search_texts(row)):
                    found.append(TaskRecord.from_row(row))
                    if len(found) >= limit:
                        break
        if not states or any(s.terminal for s in states):
            # The index walks its matches newest first (rowid = n; a principal's n and pn
            # grow together) and stops at the page's end: a word every task has costs one
            # page, not the whole history. The pn range becomes a range of its rowids.
            fts = ["tasks_fts MATCH ?"]
            fts_params: list[Any] = [query.fts()]
            first_n = "(SELECT MIN(n) FROM tasks WHERE principal = ? AND pn >= ?)"
            if hi is not None:
                fts.append(f"tasks_fts.rowid < COALESCE({first_n}, 9223372036854775807)")
                fts_params += [principal, hi]
            if lo is not None:
                fts.append(f"tasks_fts.rowid >= COALESCE({first_n}, 9223372036854775807)")
                fts_params += [principal, lo]
            sql = (f"SELECT {columns} FROM tasks_fts JOIN tasks AS t ON t.n = tasks_fts.rowid "
                   f"WHERE {' AND '.join(fts + where)} ORDER BY tasks_fts.rowid DESC LIMIT ?")
            found += [TaskRecord.from_row(r) for r in c.execute(sql, [*fts_params, *params,
                                                                        limit])]  # fmt: skip
        found.sort(key=lambda r: r.pn, reverse=True)
        return found[:limit]

    def request_cancel(
        self, task_id: str, principal: str
    ) -> tuple[TaskRecord | None, Event | None]:
        """Cancel a queued task at once; ask a running one to stop at its next checkpoint.

        Returns:
            The task after the request (None if unknown) and the event recorded, if any.
        """
        now = time.time()
        with self._write() as c:
            rec = self._get(c, task_id)
            if rec is None or rec.principal != principal:
                return None, None
            if rec.state is TaskState.QUEUED:
                c.execute(
                    "UPDATE tasks SET state = ?, finished_at = ?, updated_at = ?, "
                    "cancel_requested = 1, message = ? WHERE id = ?",
                    (TaskState.CANCELLED.value, now, now, "Cancelled before it started", task_id),
                )
                ev = self._append(
                    c, task_id, principal, EventType.CANCELLED, rec.attempt,
                    {"reason": "cancelled before it started"}, now,
                )  # fmt: skip
            elif rec.state is TaskState.RUNNING and not rec.cancel_requested:
                c.execute(
                    "UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, task_id),
                )
                ev = self._append(
                    c, task_id, principal, EventType.CANCEL_REQUESTED, rec.attempt, {}, now
                )
            else:
                return rec, None
            return self._get(c, task_id), ev

    def delete_task(self, task_id: str, principal: str) -> TaskRecord | None:
        """Forget a finished task: its ledger row goes (its events stay in the log).

        Returns:
            The task as it was; None if unknown or another principal's. A task that is not
            finished is returned unchanged and not deleted.
        """
        with self._write() as c:
            rec = self._get(c, task_id)
            if rec is None or rec.principal != principal:
                return None
            if rec.state.terminal:
                c.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
            return rec

    # -------------------------------------------------------------- worker side

    def claim(
        self, task_id: str, worker: str, lease_seconds: float, *, limit: int | None = None
    ) -> tuple[TaskRecord | None, Event | None]:
        """Start the next attempt of a queued task, leased to `worker`.

        Args:
            limit: at most this many tasks of the same name may run at once (on any
                worker); None: no limit.

        Returns:
            (task, "started" event), or (None, None) if the task may not start now: not
            queued (cancelled meanwhile, already finished, unknown), waiting for a retry
            whose time has not come, or at its limit. The caller must not run it.
        """
        now = time.time()
        sql = (
            "UPDATE tasks SET state = ?, attempt = attempt + 1, lease_owner = ?, "
            "lease_until = ?, started_at = ?, updated_at = ?, progress = NULL, message = NULL, "
            "result = NULL, error = NULL, next_attempt_at = NULL "
            "WHERE id = ? AND state = ? AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
        )
        params: list[Any] = [TaskState.RUNNING.value, worker, now + lease_seconds, now, now,
                             task_id, TaskState.QUEUED.value, now]  # fmt: skip
        if limit is not None:
            sql += (" AND (SELECT COUNT(*) FROM tasks AS other WHERE other.state = ? "
                    "AND other.name = tasks.name) < ?")  # fmt: skip
            params += [TaskState.RUNNING.value, limit]
        with self._write() as c:
            row = c.execute(f"{sql} RETURNING {_TASK_COLUMNS}", params).fetchone()
            if row is None:
                return None, None
            rec = TaskRecord.from_row(row)
            data: dict[str, Any] = {"attempt": rec.attempt}
            if rec.timeout is not None:
                data["timeout"] = rec.timeout
            ev = self._append(c, task_id, rec.principal, EventType.STARTED, rec.attempt, data,
                              now)  # fmt: skip
            return rec, ev

    def progress(
        self, task_id: str, attempt: int, fraction: float | None, message: str | None
    ) -> Event | None:
        """Record progress of a running attempt (ignored if the attempt is no longer current)."""
        now = time.time()
        with self._write() as c:
            row = c.execute(
                "UPDATE tasks SET progress = ?, message = ?, updated_at = ? "
                "WHERE id = ? AND attempt = ? AND state = ? RETURNING principal",
                (fraction, message, now, task_id, attempt, TaskState.RUNNING.value),
            ).fetchone()
            if row is None:
                return None
            return self._append(
                c, task_id, row[0], EventType.PROGRESS, attempt,
                {"fraction": fraction, "message": message}, now,
            )  # fmt: skip

    def output(self, task_id: str, attempt: int, lines: list[str]) -> Event | None:
        """Record output lines of a running attempt."""
        now = time.time()
        with self._write() as c:
            row = c.execute(
                "SELECT principal FROM tasks WHERE id = ? AND attempt = ? AND state = ?",
                (task_id, attempt, TaskState.RUNNING.value),
            ).fetchone()
            if row is None:
                return None
            return self._append(
                c, task_id, row[0], EventType.OUTPUT, attempt, {"lines": lines}, now
            )

    def finish(
        self,
        task_id: str,
        attempt: int,
        state: TaskState,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Event | None:
        """End a running attempt in a terminal state with its result or error.

        Args:
            extra: more details for the terminal event (e.g. `forced` for a kill).

        Returns the terminal event, or None if the attempt is no longer current (it was
        reaped meanwhile): its outcome is then discarded.
        """
        assert state.terminal
        now = time.time()
        if state is TaskState.SUCCEEDED:
            data: dict[str, Any] = {"result": result}
            etype, sets, values = EventType.SUCCEEDED, "progress = 1.0", []
        elif state is TaskState.FAILED:
            data = {"error": error}
            etype, sets = EventType.FAILED, "message = ?"
            values = [(error or {}).get("message")]
        else:
            data = {"reason": reason or "cancelled", **(extra or {})}
            etype, sets, values = EventType.CANCELLED, "message = ?", [cancelled_message(data)]
        if extra:
            data.update(extra)
        with self._write() as c:
            row = c.execute(
                f"UPDATE tasks SET state = ?, result = ?, error = ?, {sets}, finished_at = ?, "
                "updated_at = ?, lease_owner = NULL, lease_until = NULL "
                "WHERE id = ? AND attempt = ? AND state = ? RETURNING principal",
                (state.value, compact(result) if result is not None else None,
                 compact(error) if error is not None else None, *values, now, now, task_id,
                 attempt, TaskState.RUNNING.value),
            ).fetchone()  # fmt: skip
            if row is None:
                return None
            return self._append(c, task_id, row[0], etype, attempt, data, now)

    def renew_leases(self, worker: str, lease_seconds: float,
                     task_ids: list[str] | None = None) -> None:  # fmt: skip
        """Extend the leases of the tasks this worker is running (all, or these)."""
        now = time.time()
        sql = "UPDATE tasks SET lease_until = ? WHERE state = ? AND lease_owner = ?"
        params: list[Any] = [now + lease_seconds, TaskState.RUNNING.value, worker]
        if task_ids is not None:
            if not task_ids:
                return
            sql += " AND id IN ({})".format(",".join("?" * len(task_ids)))
            params.extend(task_ids)
        with self._write() as c:
            c.execute(sql, params)

    def leased_to(self, worker: str) -> list[tuple[str, int]]:
        """(id, attempt) of every running task leased to this worker."""
        with self._lock:
            rows = retry_busy(lambda: self._conn.execute(
                "SELECT id, attempt FROM tasks WHERE state = ? AND lease_owner = ?",
                (TaskState.RUNNING.value, worker),
            ).fetchall())
        return [(r[0], r[1]) for r in rows]

    def task_name(self, task_id: str) -> str | None:
        """The name of a task (one column: cheaper than get_task)."""
        with self._lock:
            row = retry_busy(lambda: self._conn.execute(
                "SELECT name FROM tasks WHERE id = ?", (task_id,)).fetchone())
        return row[0] if row else None

    def cancel_requested(self, worker: str) -> set[str]:
        """Ids of tasks running under this worker whose cancellation was requested."""
        with self._lock:
            rows = retry_busy(lambda: self._conn.execute(
                "SELECT id FROM tasks WHERE state = ? AND lease_owner = ? AND cancel_requested = 1",
                (TaskState.RUNNING.value, worker),
            ).fetchall())
        return {r[0] for r in rows}

    def retry_later(
        self,
        task_id: str,
        attempt: int,
        *,
        delay: float,
        error: dict[str, Any],
        requested: bool = False,
    ) -> Event | None:
        """Queue a failed attempt's task again, to run `delay` seconds from now.

        The caller decided that retries remain (`TaskRecord.retries_left`). The error stays
        on the task while it waits; `next_attempt_at` says when it runs again.

        Returns the "retrying" event, or None if the attempt is no longer current.
        """
        now = time.time()
        at = now + max(0.0, delay)
        reason = RetryReason.REQUESTED if requested else RetryReason.FAILED
        message = retry_message(reason, error.get("message"))
        with self._write() as c:
            row = c.execute(
                "UPDATE tasks SET state = ?, error = ?, message = ?, next_attempt_at = ?, "
                "failures = failures + 1, updated_at = ?, lease_owner = NULL, "
                "lease_until = NULL WHERE id = ? AND attempt = ? AND state = ? "
                "RETURNING principal, max_attempts + uncharged, lost",
                (TaskState.QUEUED.value, compact(error), message, at, now, task_id, attempt,
                 TaskState.RUNNING.value),
            ).fetchone()  # fmt: skip
            if row is None:
                return None
            return self._append(c, task_id, row[0], EventType.RETRYING, attempt, {
                "reason": reason.value, "next_attempt": attempt + 1, "delay": round(delay, 3),
                "at": at, "error": error, "max_attempts": row[1], "lost_attempts": row[2],
            }, now)  # fmt: skip

    def lose(
        self, task_id: str, attempt: int, *, stopped: bool = False, detail: str | None = None
    ) -> tuple[TaskRecord | None, Event | None]:
        """An attempt ended without an outcome: its process died (`stopped=False`), or the
        worker gave it back as it stopped (`stopped=True`).

        The task is queued again at once (a "retrying" event; the caller enqueues it) unless
        it has now been lost `max_lost` times (failed `worker_lost`), or its cancellation
        was requested (cancelled). A stopped worker's attempt is never held against it.

        Returns:
            The task as it was (None if the attempt is no longer current) and the event.
        """
        now = time.time()
        with self._write() as c:
            rec = self._get(c, task_id)
            if rec is None or rec.state is not TaskState.RUNNING or rec.attempt != attempt:
                return None, None
            return rec, self._lose_in(c, rec, now, stopped=stopped, detail=detail)

    def _lose_in(self, c: sqlite3.Connection, rec: TaskRecord, now: float, *, stopped: bool,
                 detail: str | None) -> Event:  # fmt: skip
        free = "lease_owner = NULL, lease_until = NULL"
        if rec.cancel_requested:
            c.execute(
                f"UPDATE tasks SET state = ?, finished_at = ?, updated_at = ?, {free}, "
                "message = ? WHERE id = ?",
                (TaskState.CANCELLED.value, now, now, CANCELLED_MESSAGE, rec.id),
            )
            why = "stopped" if stopped else "was lost"
            return self._append(c, rec.id, rec.principal, EventType.CANCELLED, rec.attempt, {
                "reason": f"the worker {why} while the task was being cancelled"}, now)
        lost = rec.lost + (0 if stopped else 1)
        if stopped or lost < min(rec.max_lost, 100):
            reason = RetryReason.WORKER_STOPPED if stopped else RetryReason.WORKER_LOST
            c.execute(
                f"UPDATE tasks SET state = ?, updated_at = ?, {free}, message = ?, lost = ?, "
                "uncharged = uncharged + 1, next_attempt_at = NULL WHERE id = ?",
                (TaskState.QUEUED.value, now, retry_message(reason), lost, rec.id),
            )
            data: dict[str, Any] = {
                "reason": reason.value, "next_attempt": rec.attempt + 1, "delay": 0,
                "at": None, "max_attempts": rec.shown_max_attempts + 1, "lost_attempts": lost,
            }  # fmt: skip
            if detail:
                data["detail"] = detail
            return self._append(c, rec.id, rec.principal, EventType.RETRYING, rec.attempt,
                                data, now)  # fmt: skip
        times = "once" if lost == 1 else f"{lost} times"
        error = {
            "code": ErrorCode.WORKER_LOST.value,
            "message": f"The process running this task was lost {times}; giving up."
            + (f" (Last time: {detail}.)" if detail else ""),
        }
        c.execute(
            f"UPDATE tasks SET state = ?, error = ?, finished_at = ?, updated_at = ?, {free}, "
            "message = ?, lost = ? WHERE id = ?",
            (TaskState.FAILED.value, compact(error), now, now, error["message"], lost, rec.id),
        )
        return self._append(c, rec.id, rec.principal, EventType.FAILED, rec.attempt,
                            {"error": error}, now)  # fmt: skip

    def reap(
        self, *, live_worker: str | None = None, release: str | None = None
    ) -> tuple[list[TaskRecord], list[Event]]:
        """Recover running tasks whose worker is gone.

        A lease is dead when it expired, or when its owner is a process on this host that no
        longer exists (and is not `live_worker`), or when its owner is `release` (a worker
        stopping with tasks it could not finish). Each is handled by `lose`.

        Returns:
            The tasks re-queued (the caller must enqueue them again) and every event recorded.
        """
        now = time.time()
        requeued: list[TaskRecord] = []
        events: list[Event] = []
        with self._lock:
            rows = retry_busy(lambda: self._conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state = ?", (TaskState.RUNNING.value,)
            ).fetchall())
        dead = []
        for row in rows:
            rec = TaskRecord.from_row(row)
            if release is not None:
                if rec.lease_owner == release:
                    dead.append(rec)
                continue
            if rec.lease_owner == live_worker:
                continue
            expired = rec.lease_until is None or rec.lease_until < now
            gone = rec.lease_owner is None or lease_owner_alive(rec.lease_owner) is False
            if expired or gone:
                dead.append(rec)
        for rec in dead:
            with self._write() as c:
                cur = self._get(c, rec.id)
                if cur is None or (cur.state, cur.attempt, cur.lease_owner) != (
                        TaskState.RUNNING, rec.attempt, rec.lease_owner):  # fmt: skip
                    continue  # it moved on meanwhile
                ev = self._lose_in(c, cur, now, stopped=release is not None,
                                   detail=None if release else "its worker was gone")
                events.append(ev)
                if ev.type is EventType.RETRYING:
                    requeued.append(cur)
        return requeued, events

    def queued_ids(self, *, unchanged_since: float | None = None) -> list[str]:
        """Ids of queued tasks that may run now, oldest first (not those waiting for a
        retry's time); optionally only those not updated since `unchanged_since`."""
        sql = "SELECT id FROM tasks WHERE state = ? AND (next_attempt_at IS NULL " \
              "OR next_attempt_at <= ?)"  # fmt: skip
        params: list[Any] = [TaskState.QUEUED.value, time.time()]
        if unchanged_since is not None:
            sql += " AND updated_at < ?"
            params.append(unchanged_since)
        with self._lock:
            rows = retry_busy(lambda: self._conn.execute(sql + " ORDER BY n", params).fetchall())
        return [r[0] for r in rows]

    def next_retries(self, limit: int = 100) -> list[tuple[str, float]]:
        """(id, next_attempt_at) of queued tasks waiting for a retry, soonest first."""
        with self._lock:
            rows = retry_busy(lambda: self._conn.execute(
                "SELECT id, next_attempt_at FROM tasks WHERE next_attempt_at IS NOT NULL "
                "AND state = ? ORDER BY next_attempt_at LIMIT ?",
                (TaskState.QUEUED.value, limit),
            ).fetchall())
        return [(r[0], r[1]) for r in rows]

    # ----------------------------------------------------------------- the log

    def pruned_through(self, principal: str) -> int:
        """The highest seq (the principal's own) of its events that pruning deleted (0: none).

        A client of this principal that last saw a seq below it may have missed events
        that are gone: it must reload its tasks from the API (the notifier's "reset").
        """
        with self._lock:
            row = retry_busy(lambda: self._conn.execute(
                "SELECT through FROM pruned WHERE principal = ?", (principal,)).fetchone())
        return int(row[0]) if row else 0

    def pruned_marks(self) -> dict[str, int]:
        """Every principal's `pruned_through` (one row per principal that lost events)."""
        with self._lock:
            rows = retry_busy(lambda: self._conn.execute(
                "SELECT principal, through FROM pruned").fetchall())
        return {p: int(t) for p, t in rows}

    def prune_batch(self, *, finished_before: float | None = None,
                    keep: int | None = None, limit: int = 200) -> PruneResult:  # fmt: skip
        """Delete up to `limit` finished tasks with their events, in one short transaction.

        A finished task goes when it finished before `finished_before` (a wall time), or
        when it is not among the `keep` most recently submitted finished tasks. Events left
        by tasks deleted from the ledger ("clear finished") go by the same age. Each
        principal's `pruned_through` watermark is raised to the highest seq deleted.

        Returns:
            How many tasks and events it deleted (0 tasks and 0 events: nothing is left
            to prune).
        """
        if finished_before is None and keep is None:
            return PruneResult()
        with self._write() as c:
            clauses, params = [], []
            if finished_before is not None:
                clauses.append("finished_at < ?")
                params.append(finished_before)
            if keep is not None:
                row = c.execute(
                    "SELECT n FROM tasks WHERE state IN ({}) ORDER BY n DESC LIMIT 1 "
                    "OFFSET ?".format(",".join("?" * len(TERMINAL_STATES))),
                    (*TERMINAL_STATES, max(0, keep)),
                ).fetchone()
                if row is not None:
                    clauses.append("n <= ?")
                    params.append(row[0])
            ids: list[str] = []
            if clauses:
                ids = [r[0] for r in c.execute(
                    "SELECT id FROM tasks WHERE state IN ({}) AND ({}) ORDER BY n LIMIT ?".format(
                        ",".join("?" * len(TERMINAL_STATES)), " OR ".join(clauses)),
                    (*TERMINAL_STATES, *params, limit),
                )]  # fmt: skip
            marks: dict[str, int] = {}
            events = 0
            if ids:
                marks_sql = ",".join("?" * len(ids))
                for principal, through in c.execute(
                    f"SELECT principal, MAX(pseq) FROM events WHERE task_id IN ({marks_sql}) "
                    "GROUP BY principal", ids,
                ):  # fmt: skip
                    marks[principal] = through
                events += c.execute(f"DELETE FROM events WHERE task_id IN ({marks_sql})",
                                    ids).rowcount  # fmt: skip
                c.execute(f"DELETE FROM tasks WHERE id IN ({marks_sql})", ids)
            if finished_before is not None and len(ids) < limit:
                # The events of tasks the ledger no longer has, oldest first.
                orphans = c.execute(
                    "SELECT seq, principal, pseq FROM events WHERE ts < ? AND task_id NOT IN "
                    "(SELECT id FROM tasks) ORDER BY seq LIMIT ?",
                    (finished_before, (limit - len(ids)) * 4),
                ).fetchall()
                for _, principal, pseq in orphans:
                    marks[principal] = max(marks.get(principal, 0), pseq)
                if orphans:
                    events += c.execute(
                        "DELETE FROM events WHERE seq IN ({})".format(",".join("?" * len(orphans))),
                        [seq for seq, _, _ in orphans],
                    ).rowcount  # fmt: skip
            for principal, through in marks.items():
                c.execute(
                    "INSERT INTO pruned (principal, through) VALUES (?, ?) ON CONFLICT "
                    "(principal) DO UPDATE SET through = MAX(through, excluded.through)",
                    (principal, through),
                )
        return PruneResult(len(ids), events)

    def prune(self, *, older_than: float | None = None, keep: int | None = None,
              batch: int = 200, pause: float = 0.01, wal_limit: int = PRUNE_WAL_LIMIT,
              stop: Callable[[], bool] | None = None) -> PruneResult:  # fmt: skip
        """Retention: delete finished tasks older than `older_than` seconds, or beyond the
        `keep` newest, with their events, `batch` tasks per transaction and `pause`
        seconds between transactions, so that no writer waits long for the lock.

        Args:
            wal_limit: a WAL past this many bytes is checkpointed and emptied between two
                batches (a first pass over a big ledger writes a lot).
            stop: checked between batches; True ends the pruning early.
        """
        before = None if older_than is None else time.time() - older_than
        total = PruneResult()
        while True:
            done = self.prune_batch(finished_before=before, keep=keep, limit=batch)
            total += done
            if (done.tasks < batch and done.events < batch * 4) or (stop and stop()):
                return total
            if self.sizes()["wal"] > wal_limit:
                self.checkpoint(truncate=True)
            if pause:
                time.sleep(pause)

    def vacuum(self) -> None:
        """Give the free pages back to the file system (VACUUM, then an emptied WAL).

        Writers wait for the whole rewrite (seconds for a big ledger), and the WAL grows
        to the database's size meanwhile: for `herald prune --vacuum`, not the services.
        """
        with self._lock:
            retry_busy(lambda: self._conn.execute("VACUUM"), 30.0)
        self.checkpoint(truncate=True, wait=5.0)

    def sizes(self) -> dict[str, int]:
        """Bytes on disk of the database and its WAL (for health and the bench)."""
        return {name: _size(Path(f"{self.path}{suffix}"))
                for name, suffix in (("db", ""), ("wal", "-wal"))}  # fmt: skip

    def activity(self, principal: str, start: float, end: float,
                 bucket: float) -> _activity.Activity:  # fmt: skip
        """The principal's tasks finished in [start, end): counts per bucket of `bucket`
        seconds and outcome, and each task type's counts and p50/p95 run durations (see
        `services.store.activity`).

        It reads one snapshot through a connection of its own (a WAL reader blocks no one),
        so it may run in a thread while this store's other calls go on: a day of 50,000
        tasks takes tens of milliseconds.
        """
        def run() -> _activity.Activity:
            conn = sqlite3.connect(str(self.path), timeout=0, isolation_level=None)
            try:
                conn.execute("BEGIN")  # both queries see the same tasks
                return _activity.query_activity(conn, principal, start, end, bucket)
            finally:
                conn.close()

        return retry_busy(run)  # type: ignore[no-any-return]

    def head(self, principal: str | None = None) -> int:
        """The seq of the principal's newest event (0 before its first), or without a
        principal the log position of the newest event of all (the notifier's own
        bookkeeping: never shown to a principal)."""
        with self._lock:
            if principal is None:
                row = retry_busy(lambda: self._conn.execute(
                    "SELECT MAX(seq) FROM events").fetchone())  # fmt: skip
            else:
                row = retry_busy(lambda: self._conn.execute(
                    "SELECT head FROM heads WHERE principal IN (?, ?) ORDER BY principal DESC "
                    "LIMIT 1", (principal, _FLOOR)).fetchone())  # fmt: skip
        return (row[0] or 0) if row else 0

    def events_after(
        self, after: int, *, principal: str | None = None, task_id: str | None = None,
        limit: int = 1000, max_bytes: int | None = None,
    ) -> list[Event]:  # fmt: skip
        """Events after `after`, oldest first: of one principal or task, those whose seq
        (the principal's own) is above `after`; of neither, every principal's events past
        the log position `after` (`Event.log_pos`: the notifier's fan-out).

        Args:
            max_bytes: stop after the event whose data brings the page past this many
                bytes (a page holds at least one event).
        """
        sql = "SELECT pseq, task_id, principal, type, ts, attempt, data, seq FROM events WHERE "
        params: list[Any] = []
        if principal is None and task_id is None:
            sql += "seq > ? ORDER BY seq LIMIT ?"
        else:
            clauses = []
            if principal is not None:
                clauses.append("principal = ?")
                params.append(principal)
            if task_id is not None:
                clauses.append("task_id = ?")
                params.append(task_id)
            sql += " AND ".join(clauses) + " AND pseq > ? ORDER BY pseq LIMIT ?"
        params += [after, limit]
        with self._lock:
            if max_bytes is None:
                rows = retry_busy(lambda: self._conn.execute(sql, params).fetchall())
            else:
                rows = retry_busy(lambda: _rows_within(self._conn.execute(sql, params),
                                                       max_bytes))  # fmt: skip
        return [
            Event(pseq, tid, p, EventType(t), ts, attempt, json.loads(data), log_pos=pos)
            for pseq, tid, p, t, ts, attempt, data, pos in rows
        ]


def _search_texts(row: tuple[Any, ...]) -> tuple[str, ...]:
    """What the search index holds of a task, from its row (_TASK_COLUMNS): id, name,
    args, message and result."""
    return (row[1], row[3], row[4], row[7] or "", (row[8] or "")[:_RESULT_CHARS])


def _rows_within(cursor: sqlite3.Cursor, max_bytes: int) -> list[tuple[Any, ...]]:
    """Rows of an events query until their data (the 7th column) passes `max_bytes`."""
    rows, size = [], 0
    for row in cursor:
        rows.append(row)
        size += len(row[6])
        if size > max_bytes:
            cursor.close()
            break
    return rows
