"""The worker's dispatcher: takes task ids from the queue and runs each attempt in an
executor process, recording every event; it never runs a task itself.

One thread does everything in a select loop: wake-ups (the web service sends a datagram
after it enqueues, one per burst, or asks for a cancel; services.wake: the loop clears its
pending flag and reads the whole queue before it sleeps), frames from the executors,
SIGCHLD (through a wake-up fd) and timers (time limits, cancel graces, retries due,
leases, reaping). Every store write of one round goes into one transaction (group
commit); the notifier is woken once per round, after the commit.

What it guarantees:
- An attempt is leased in the ledger before its run frame is sent, and the dispatcher
  knows which executor runs it: an executor that dies charges only its own attempt
  (`worker_lost`, queued again while the task's `max_lost` allows) and is replaced at once.
- A cancelled attempt is asked to stop at its next checkpoint; after its task's grace it
  is terminated, then killed, with everything it started; its registered temporary paths
  are removed; it ends `cancelled` (forced). A time limit does the same at once and ends
  the task `failed` / `timeout`.
- A failure the task allows to retry is queued again with a backoff; the wait lives in the
  ledger (`next_attempt_at`), so it survives restarts; this loop enqueues it when due.
- At most `concurrency` attempts of a task that declares it run at once (checked in the
  ledger, so across workers too); others wait, queued.
- Idle, it sleeps in select() with a long timeout: no polling latency, next to no CPU.
- Where the kernel has Landlock, every attempt runs confined to the policy `policy_for`
  gives its task (by default the owner's: everything but Herald's own folders), in a
  process forked for it by its executor, with a temp dir of its own (made here, removed
  by the executor, or here if the attempt is killed). Elsewhere attempts run unconfined
  in the executors themselves, and `sandbox` says why.
- A write the data disk refuses (full, or failing) is neither dropped nor fatal: it waits,
  in order with every later write, and they are tried again with backoff (at most
  `STORAGE_RETRY_MAX` apart). Meanwhile no attempt starts (running ones go on; what they
  report waits too), and the first attempts after an outage start only once their claim
  is committed. Once writes go through, the queue and the ledger are looked at again, so
  every queued task runs.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from services.core.errors import ErrorCode
from services.core.events import Event, EventType
from services.core.retry import format_seconds
from services.core.states import TaskState
from services.landlock import Support
from services.landlock import support as landlock_support
from services.layout import DataLayout
from services.own_dirs import own_dirs
from services.runtime import parent_gone
from services.store.backend import Backend, Ledger, open_backend
from services.store.failures import StorageProblem, storage_problem
from services.store.sqlite import JOURNAL_SIZE_LIMIT, TaskRecord, worker_identity
from services.tasks.catalog import MAX_TIMEOUT, Catalog, TaskSpec
from services.wake import PRUNED_WAKE, WakeSender
from services.worker import pool, protocol, sandbox
from services.worker.executor import describe_exit, runners_each
from services.worker.pool import Attempt, ExecutorProcess, ExecutorState, StopReason
from services.worker.temproot import TempRoot

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
IDLE_TIMEOUT = 30.0  # fallback look at the queue when no wake-up came (each costs CPU)
BUSY_TIMEOUT = 1.0  # while attempts run: notice cancel requests even if a wake-up was lost
REAP_INTERVAL = 30.0  # a new worker reaps at once; this catches other workers' leases
PARKED_RECHECK = 1.0  # tasks waiting for a concurrency slot another worker holds
TERM_GRACE = 0.5  # seconds between SIGTERM and SIGKILL of an attempt being stopped
KILL_WAIT = 10.0  # after SIGKILL: an unkillable process (D state) is abandoned after this
STOP_GRACE = 3.0  # seconds running attempts get to finish when the worker stops
SPAWN_RETRY = 1.0  # seconds before trying again when an executor could not be forked
CHECKPOINT_DELAY = 1.0  # seconds after a write before the WAL is checkpointed
# A WAL past this is checkpointed at once and emptied (TRUNCATE), even mid-burst: under a
# sustained stream of writes a PASSIVE checkpoint never catches up with the writers, so
# SQLite never starts the file over and it grows with every commit (735 MB for a backlog
# of 20,000 tasks drained by the worker alone).
# (Each costs the writers a pause of tens of ms, for its fsyncs: measured here 30-80 ms;
# the WAL can grow by 50 MB/s while the worker drains a backlog, hence the short poll.)
WAL_TRUNCATE_BYTES = 16 * 1024 * 1024
WAL_POLL = 0.05  # seconds between looks at the WALs' sizes while writes go on
PRUNE_INTERVAL = 600.0  # seconds between retention passes (only while things are written)
PRUNE_BATCH = 200  # finished tasks deleted per transaction
MAX_PARKED = 10_000  # task ids held waiting for a concurrency slot
# Writes the disk refused are tried again after this many seconds, doubling to the max.
STORAGE_RETRY_FIRST, STORAGE_RETRY_MAX = 0.1, 2.0
# Writes held while the disk refuses them; beyond this, progress and output reports are
# dropped (outcomes, claims and losses never are).
MAX_BACKLOG = 100_000
# The notifier is woken at once for a terminal event; for the others (started, progress,
# output) within this many seconds, so that a quick attempt's "started" and "succeeded"
# take one wake-up, and the notifier and its clients do not compete for the CPU with the
# attempt they are being told about.
NOTIFY_DELAY = 0.005


MAX_HINTS = 1024  # task ids from wake-ups kept to start at once
REREAD_FIRST, REREAD_MAX = 0.002, 1.0  # looking again for a message announced early
MAX_READS = 64  # rounds of reading the queue in one dispatch
MAX_HINTED = 10_000  # ids started by hint whose queue message is still to be dropped
MiB = 1024 * 1024
MAX_DETAIL = 64 * 1024  # characters of an error's `detail` (JSON) that are kept


class _Waker(Protocol):
    def wake(self, payload: bytes = ...) -> None: ...
    def close(self) -> None: ...


class _PairWake:
    """A wake-up of this process's own loop through its signal socket pair (which the loop
    watches: any byte wakes it). Never blocks: a full pair is awake already."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def wake(self, payload: bytes = b"!") -> None:
        with contextlib.suppress(OSError):
            self._sock.send(b"\0")

    def close(self) -> None:
        pass  # the pair is the dispatcher's


def _error_of(raw: Any) -> dict[str, Any]:
    """An executor's error object, checked: code and message are strings."""
    if not isinstance(raw, dict):
        raw = {}
    error: dict[str, Any] = {
        "code": str(raw.get("code") or ErrorCode.EXCEPTION)[:200],
        "message": str(raw.get("message") or "the task failed")[:10_000],
    }
    if isinstance(raw.get("traceback"), str):
        error["traceback"] = raw["traceback"][:100_000]
    detail = raw.get("detail")
    if isinstance(detail, dict) and len(json.dumps(detail, default=str)) <= MAX_DETAIL:
        error["detail"] = detail
    return error


class Dispatcher:
    """The worker process's engine.

    Args:
        layout: the data dir.
        catalog: the tasks it can run.
        concurrency: attempts run at once (executor processes).
        max_tasks_per_executor: an executor is replaced after this many attempts (0: never).
        max_executor_memory: MB above which an executor is replaced after its attempt
            (0: never).
        stop_grace: seconds running attempts get to finish when the worker stops.
        retention_seconds: finished tasks older than this are pruned with their events
            (None: no age limit).
        retention_keep: at most this many finished tasks are kept (None: no limit).
        prune_interval: seconds between retention passes while things are written.
        confine: confine each attempt with Landlock where the kernel has it.
        policy_for: the policy of a task's attempts (None: the owner's, for every task).
    """

    def __init__(self, layout: DataLayout, catalog: Catalog, concurrency: int = 4, *,
                 max_tasks_per_executor: int = 1000, max_executor_memory: int = 1024,
                 stop_grace: float = STOP_GRACE, retention_seconds: float | None = None,
                 retention_keep: int | None = None,
                 prune_interval: float = PRUNE_INTERVAL, confine: bool = True,
                 policy_for: Callable[[TaskRecord], sandbox.Policy] | None = None,
                 backend: Backend | None = None,
                 ) -> None:  # fmt: skip
        self.layout = layout
        self.backend = backend or open_backend(None, layout)
        self._errors = self.backend.errors
        self.catalog = catalog
        self.concurrency = max(1, concurrency)
        self._runners_each = runners_each(self.concurrency)  # (see executor.py)
        self.max_tasks_per_executor = max_tasks_per_executor
        self.max_executor_memory = max_executor_memory
        self.stop_grace = stop_grace
        self.retention_seconds = retention_seconds
        self.retention_keep = retention_keep
        self.prune_interval = prune_interval
        self.identity = worker_identity()
        self.sandbox: Support = landlock_support() if confine else Support(0, "not asked for")
        self.own_dirs = [str(p) for p in own_dirs(layout)]
        self._owner_policy = sandbox.owner_policy(self.own_dirs)
        self.policy_for = policy_for or (lambda rec: self._owner_policy)
        self._temp = TempRoot()
        # Commits here never checkpoint: the checkpointer thread does it off the hot path.
        self.store = self.backend.store(checkpoint_pages=0)
        self.queue = self.backend.queue(checkpoint_pages=0)
        self._notifier = self.backend.event_waker()
        self._told: list[Event] = []  # events recorded since the notifier was last woken
        self._receiver = self.backend.wake_source("worker")
        self._sig_r, self._sig_w = socket.socketpair()
        # Its own loop's wake-up (a stop request): on the worker's own socket where that is
        # local (SQLite); else (every worker of a Redis backend hears the channel) on the
        # signal socket pair, which wakes this loop alone.
        self._self_wake: _Waker = (WakeSender(self.backend.wake_address("worker"))
                                   if self.backend.local_files else _PairWake(self._sig_w))
        self._selector = selectors.DefaultSelector()
        self._executors: dict[int, ExecutorProcess] = {}  # by pid
        self._running: dict[str, ExecutorProcess] = {}  # by task id
        self._running_names: Counter[str] = Counter()
        self._parked: dict[str, deque[str]] = {}  # name -> ids waiting for a slot
        self._parked_count = 0
        self._retries: list[tuple[float, str]] = []  # (wall time due, task id), a heap
        self._retry_ids: set[str] = set()
        self._limited = any(spec.concurrency for spec in catalog)
        self._stopping = threading.Event()
        self._stop_requested = False  # set by a signal handler (see request_stop)
        self._hurry = False  # a second stop request: no grace for running attempts
        self._dirty = threading.Event()
        self._post: list[Callable[[], None]] = []  # after the round's commit
        # The round's writes, run at its end: (write, droppable).
        self._writes: list[tuple[Callable[[], object], bool]] = []
        # Writes the disk refused, in order, with every write queued after them.
        self._backlog: deque[tuple[Callable[[], object], bool]] = deque()
        self._storage_down_since: float | None = None  # monotonic; None: writes go through
        self._storage_retry_at = 0.0  # monotonic: no write is tried before
        self._storage_delay = STORAGE_RETRY_FIRST
        self._recover_due = False  # look at the ledger and the queue once writes go through
        self._dropped = 0  # progress reports dropped during this outage
        self._notify = False
        self._urgent = False
        self._notify_due: float | None = None  # monotonic time of a deferred wake-up
        self._credits = 0  # enqueues announced by wake-ups and not dequeued yet
        # Tasks a wake-up named before their message was enqueued ("?" + id): those not
        # started by the hint must be read as soon as their message lands; the others'
        # messages are duplicates, dropped whenever they are read. By id, not counted: a
        # stale message of another task (enqueued twice) is not theirs.
        self._expected: OrderedDict[str, None] = OrderedDict()
        self._expected_dups = 0
        self._reread_at: float | None = None
        self._reread_delay = REREAD_FIRST
        self._look = True  # the queue may hold more than was announced: drain it
        self._unpark = False  # a concurrency slot freed: look at the parked tasks
        self._hints: deque[tuple[str, bool]] = deque()  # (id, early) named by wake-ups
        # Started by hint (True: an early one): their queue message is dropped when read.
        self._hinted: OrderedDict[str, bool] = OrderedDict()
        self._ready: deque[str] = deque()  # dequeued, not claimed yet (no executor free)
        self._next_spawn = 0.0
        self._last_renew = self._last_reap = self._last_parked = time.monotonic()
        self._last_cancel_poll = time.monotonic()
        self.subreaper = False
        self._own_signals = False

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to stop (from any thread; from a signal handler, `request_stop`).
        A second request (the end of stdin and a SIGTERM, in either order) stops running
        attempts at once instead of giving them `stop_grace` to finish."""
        self._hurry = self._hurry or self.stopping
        self._stop_requested = True
        self._stopping.set()
        self._dirty.set()
        self._self_wake.wake(b"stop")

    def request_stop(self) -> None:
        """Ask the loop to stop from a signal handler: a flag and a wake-up, no lock. (A
        handler runs between two bytecodes of the main thread, which may be inside
        `Event.set` itself: taking that lock again there deadlocked the worker.)"""
        self._hurry = self._hurry or self.stopping
        self._stop_requested = True
        self._self_wake.wake(b"stop")

    @property
    def stopping(self) -> bool:
        return self._stop_requested or self._stopping.is_set()

    @property
    def executors(self) -> list[ExecutorProcess]:
        """The live executor processes (for tests and the bench)."""
        return [ex for ex in self._executors.values() if ex.state is not ExecutorState.DEAD]

    def start_pool(self) -> None:
        """Install the SIGCHLD wake-up, become a subreaper and fork the executors.

        Executor deaths are seen through a pidfd each (Linux); SIGCHLD also wakes the loop
        when it runs in the main thread, so that what killed attempts left behind is reaped.
        """
        if self._executors:
            return
        self._sig_r.setblocking(False)
        self._sig_w.setblocking(False)
        if threading.current_thread() is threading.main_thread():
            # The process is the worker service: it may own every child of its own.
            self.subreaper = pool.become_subreaper()
            signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the fd is written
            signal.set_wakeup_fd(self._sig_w.fileno(), warn_on_full_buffer=False)
            self._own_signals = True
        self._selector.register(self._sig_r, selectors.EVENT_READ, lambda: self._reap())
        self._selector.register(self._receiver, selectors.EVENT_READ, self._on_wake)
        self._fill_pool()

    # --------------------------------------------------------------------- loop

    def run(self) -> None:
        """The main loop; returns after `stop()` once running attempts were handled."""
        self.start_pool()
        with self._round():
            self._handle(self.recover)
        if self.sandbox.available:
            self._temp.sweep_once()  # the folders of workers that were killed
        housekeeping = self._checkpoints if self.backend.local_files else self._prunes
        threading.Thread(target=housekeeping, name="checkpoint", daemon=True).start()
        while not self.stopping:
            self._handle(self._before_sleep)
            self._handle(self._dispatch)
            timeout = self._timeout()
            ready = self._selector.select(timeout)
            if not ready and timeout >= BUSY_TIMEOUT:
                self._look = True  # the slow fallback: look at the queue whatever was said
            with self._round():
                for key, _ in ready:
                    self._handle(key.data)
                self._handle(self._timers)
        self.stop()  # now from the loop itself: the checkpoint thread ends too
        self._shutdown()

    def _handle(self, handler: Callable[[], object]) -> None:
        """Run one source's handler; a bug in one does not take the worker down with every
        attempt it runs (the failure is logged, the loop goes on), nor does a write the
        disk refused (the worker backs off)."""
        try:
            handler()
        except Exception as exc:
            problem = storage_problem(exc)
            if problem is not None:
                self._storage_failed(exc, problem)
            else:
                log.exception("a handler of the worker's loop failed")

    @contextlib.contextmanager
    def _round(self) -> Iterator[None]:
        """One round: handlers queue their writes (`_write`); at the end they run in one
        transaction (group commit), as a burst, so the write lock is held for the writes
        alone and never while a frame is parsed or a process signalled (the web service,
        waiting for that lock, sleeps at least a millisecond). Then what waited for the
        commit: waking the notifier, enqueueing what went back to the queue."""
        self._post = []
        self._writes = []
        self._notify = self._urgent = False
        yield
        if self._writes:
            self._hold(self._writes)
            self._writes = []
        if self._backlog and not self._storage_waiting:
            self._flush()
        if self._notify:
            self._dirty.set()
            if self._urgent:
                self._wake_notifier()
            elif self._notify_due is None:
                self._notify_due = time.monotonic() + NOTIFY_DELAY
        post, self._post = self._post, []
        for action in post:
            try:
                action()
            except Exception as exc:
                problem = storage_problem(exc)
                if problem is not None:  # an enqueue: the ledger has the task, recover finds it
                    self._storage_failed(exc, problem)
                else:
                    log.exception("post-commit action failed")

    def _write(self, action: Callable[[], object], *, droppable: bool = False) -> None:
        """Queue a store write for the end of this round (`droppable`: a report that may be
        dropped if the disk refuses writes for very long)."""
        self._writes.append((action, droppable))

    # ------------------------------------------------------------------ storage

    @property
    def _storage_waiting(self) -> bool:
        """The disk refused a write and it is not time to try again yet."""
        return self._storage_down_since is not None and time.monotonic() < self._storage_retry_at

    def _hold(self, writes: list[tuple[Callable[[], object], bool]]) -> None:
        """Put writes behind those waiting (all of them, in order, while the disk refused
        none; only the outcomes, past MAX_BACKLOG)."""
        for entry in writes:
            if entry[1] and len(self._backlog) >= MAX_BACKLOG:
                self._dropped += 1
                if self._dropped == 1:
                    log.warning("%d writes wait for the disk: dropping progress reports "
                                "until it takes them", len(self._backlog))  # fmt: skip
                continue
            self._backlog.append(entry)

    def _flush_one_by_one(self, writes: list[tuple[Callable[[], object], bool]]) -> None:
        """`_flush` for a store whose writes are atomic one by one (Redis): nothing undoes
        those that went through, so none is run twice; the first one the storage refuses
        waits, with every write behind it, in order."""
        self._backlog.clear()
        for i, (write, _) in enumerate(writes):
            try:
                write()
            except Exception as exc:
                problem = storage_problem(exc)
                if problem is not None:
                    self._backlog.extend(writes[i:])
                    self._storage_failed(exc, problem)
                    return
                log.exception("could not record an event")
        self._storage_ok()

    def _flush(self) -> None:
        """Run the writes waiting, in order, in one transaction (group commit). If the
        disk refuses them, they stay and are tried again after a backoff; if one write
        fails for another reason (a bug), each is run on its own, and that one is lost."""
        writes = list(self._backlog)
        post = list(self._post)
        if not self.store.atomic_batches:
            self._flush_one_by_one(writes)
            return
        try:
            with self.store.batch(isolated=False):
                for write, _ in writes:
                    write()
        except Exception as exc:
            self._post = post  # undone as a whole: so is what waited for it
            problem = storage_problem(exc)
            if problem is not None:
                self._storage_failed(exc, problem)
                return
            log.exception("could not record this round's events together")
            self._backlog.clear()
            for i, (write, _) in enumerate(writes):
                try:
                    write()
                except Exception as one:
                    problem = storage_problem(one)
                    if problem is not None:  # this one and the rest wait, in order
                        self._backlog.extend(writes[i:])
                        self._storage_failed(one, problem)
                        return
                    # What it recorded is lost (an outcome, progress); the lease keeps
                    # its task until the reaper finds it.
                    log.exception("could not record an event")
            self._storage_ok()
            return
        self._backlog.clear()
        self._storage_ok()

    def _storage_failed(self, exc: BaseException, problem: StorageProblem) -> None:
        """The disk refused a write: writes wait, attempts do not start, until a retry."""
        now = time.monotonic()
        if self._storage_down_since is None:
            self._storage_down_since = now
            self._storage_delay = STORAGE_RETRY_FIRST
            what = "is full" if problem is StorageProblem.DISK_FULL else "failed a write"
            log.warning("the data disk %s (%s): the worker holds its writes and starts no "
                        "attempt until it takes them", what, exc)  # fmt: skip
        else:
            self._storage_delay = min(STORAGE_RETRY_MAX, self._storage_delay * 2)
        self._storage_retry_at = now + self._storage_delay
        self._recover_due = True

    def _storage_ok(self) -> None:
        """Writes went through: if they had been refused, everything resumes."""
        if self._storage_down_since is None:
            return
        now = time.monotonic()
        log.info("the data disk takes writes again after %.1f s%s", now - self._storage_down_since,
                 f"; {self._dropped} progress report(s) were dropped" if self._dropped else "")
        self._storage_down_since = None
        self._storage_delay = STORAGE_RETRY_FIRST
        self._dropped = 0
        self._look = True
        self._last_renew = now - LEASE_SECONDS  # renew at once: they may have run short

    def _published(self, event: Event | None) -> Event | None:
        if event is not None:
            self._notify = True
            self._told.append(event)
            if event.terminal:
                self._urgent = True
        return event

    def _wake_notifier(self) -> None:
        self._notify_due = None
        told, self._told = self._told, []
        if told:
            self._notifier.recorded(told)
        else:
            self._notifier.wake()

    def _timeout(self) -> float:
        now = time.monotonic()
        busy = bool(self._running)
        limits = [now + (BUSY_TIMEOUT if busy else IDLE_TIMEOUT), self._last_reap + REAP_INTERVAL]
        if busy:
            limits.append(self._last_renew + LEASE_SECONDS / 3)
        for ex in self._executors.values():
            a = ex.attempt
            if a is None or a.done:
                continue
            if a.deadline is not None and a.stopping is None:
                limits.append(a.deadline)
            if a.cancel_sent is not None and a.stopping is None:
                limits.append(a.cancel_sent + a.spec.cancel_grace)
            if a.term_sent is not None and a.kill_sent is None:
                limits.append(a.term_sent + TERM_GRACE)
            if a.kill_sent is not None:
                limits.append(a.kill_sent + KILL_WAIT)
        if self._retries:
            limits.append(now + max(0.0, self._retries[0][0] - time.time()))
        if self._parked_count:
            limits.append(self._last_parked + PARKED_RECHECK)
        if self._notify_due is not None:
            limits.append(self._notify_due)
        if self._reread_at is not None:
            limits.append(self._reread_at)
        if self._serving() < self.concurrency:
            limits.append(self._next_spawn)
        if self._storage_waiting:
            limits.append(self._storage_retry_at)
        elif self._backlog or self._recover_due:
            limits.append(now)  # the writes waiting, or the look after an outage, are due
        return max(0.0, min(limits) - now)

    def _timers(self) -> None:
        now = time.monotonic()
        if self._notify_due is not None and now >= self._notify_due:
            self._wake_notifier()
        if self._reread_at is not None and now >= self._reread_at:
            self._reread_at = None  # _dispatch reads again: _expected is still counted
        for ex in list(self._executors.values()):
            a = ex.attempt
            if a is None or a.done:
                continue
            if a.stopping is None and a.deadline is not None and now >= a.deadline:
                self._stop_attempt(ex, StopReason.TIMEOUT)
            elif (a.stopping is None and a.cancel_sent is not None
                  and now >= a.cancel_sent + a.spec.cancel_grace):  # fmt: skip
                self._stop_attempt(ex, StopReason.CANCEL)
            elif (a.term_sent is not None and a.kill_sent is None
                  and now >= a.term_sent + TERM_GRACE):  # fmt: skip
                a.kill_sent = now
                pool.signal_tree(ex, signal.SIGKILL)
            elif a.kill_sent is not None and now >= a.kill_sent + KILL_WAIT:
                log.error("executor %d (task %s) did not die after SIGKILL; abandoning it",
                          ex.pid, a.task_id)  # fmt: skip
                self._executor_gone(ex, None)
        self._handle(self._enqueue_due_retries)
        if self._running and now - self._last_renew >= LEASE_SECONDS / 3 and (
                self._storage_down_since is None):  # fmt: skip
            self._last_renew = now
            running = list(self._running)
            self._write(lambda: self.store.renew_leases(self.identity, LEASE_SECONDS, running),
                        droppable=True)  # fmt: skip
        if now - self._last_cancel_poll >= BUSY_TIMEOUT and self._running:
            self._last_cancel_poll = now
            self._handle(self._apply_cancel_requests)
        # Not while writes wait, this round's included: their attempts are not running any
        # more, yet leased to this worker (the look would take them for lost ones).
        if not self._backlog and not self._writes and not self._storage_waiting:
            if self._recover_due:
                self._recover_due = False
                self._last_reap = now
                self._handle(self.recover)  # everything queued, not only the older tasks
            elif now - self._last_reap >= REAP_INTERVAL:
                self._last_reap = now
                self._handle(lambda: self.recover(unchanged_for=REAP_INTERVAL))
        if self._parked_count and now - self._last_parked >= PARKED_RECHECK:
            self._last_parked = now
            self._unpark = True  # another worker may have freed a slot
        if self._serving() < self.concurrency and now >= self._next_spawn:
            self._fill_pool()
        if not self._own_signals and self._executors and not pool.HAVE_PIDFD:
            self._reap()  # no SIGCHLD and no pidfd: look at every round

    def _enqueue_due_retries(self) -> None:
        wall = time.time()
        while self._retries and self._retries[0][0] <= wall and not self._storage_waiting:
            task_id = self._retries[0][1]
            self.queue.enqueue(task_id)  # if the disk refuses, it stays due
            heapq.heappop(self._retries)
            self._retry_ids.discard(task_id)
            self._credits += 1

    # ----------------------------------------------------------------- sources

    def _before_sleep(self) -> None:
        """Before the loop may sleep: while it was awake, senders left their wake-ups out
        (services.wake); clear the flag that told them so, and read the whole queue.

        Not while the queue is to be read anyway and no executor could take what it
        holds: then the flag stays set while the loop sleeps, so the web sends nothing for
        the tasks it enqueues meanwhile. That keeps the promise of services.wake (while the
        flag is set, the receiver will clear it and then read the queue to its end): a
        running attempt's end (its frame, its executor's death, its time limit) wakes the
        loop, which then has an idle executor, clears the flag here and reads, since
        `_look` is still set."""
        if self._look and self._running and not self._idle() and not self.stopping:
            return
        messages = self._receiver.park()
        if messages is not None:
            with self._round():  # a "cancel" among them writes
                self._on_messages(messages)
            self._look = True

    def _on_wake(self) -> None:
        # The flag stays set until `_before_sleep`: the loop is awake, none need wake it.
        self._on_messages(self._receiver.drain(clear=False))

    def _on_messages(self, messages: list[bytes]) -> None:
        if not messages:
            return
        # Plain wake-ups are coalesced, one per burst (services.wake): any datagram may
        # stand for tasks enqueued without one of their own, so each means "read the whole
        # queue". A task named after its enqueue ("!" + id) may start ahead of the queue
        # only if the queue had been read to its end before this batch (else older tasks
        # wait there and the queue's order decides), and only the batch's first (the later
        # ones may have overtaken tasks whose wake-up was coalesced); the queue yields it
        # anyway. One named before its enqueue ("?" + id: a sender that sends no wake-up
        # after it) keeps its hint as before: the queue cannot yield it yet.
        hints_ok = not self._look
        self._look = True
        for m in messages:
            kind = m[:1]
            if kind in (b"!", b"?") and len(m) > 1:
                task_id = m[1:].decode("ascii", "replace")
                early = kind == b"?"
                if early:  # its message will be read when it lands
                    self._expect(task_id)
                else:
                    self._credits += 1
                if (early or hints_ok) and len(self._hints) < MAX_HINTS:
                    self._hints.append((task_id, early))
                    hints_ok = hints_ok and early
        if b"cancel" in messages:
            self._apply_cancel_requests()

    def _expect(self, task_id: str) -> None:
        """Look for this task's message until it lands (it was named before it)."""
        self._expected[task_id] = None
        if len(self._expected) > MAX_HINTED:  # bounded: the oldest is found by a look
            self._expected.popitem(last=False)
            self._look = True

    def _reap(self) -> None:
        """Reap every child that ended; an executor among them is gone."""
        with contextlib.suppress(OSError):
            while self._sig_r.recv(512):
                pass
        pids = None if self._own_signals else list(self._executors)
        for pid, status in pool.reap_children(pids):
            ex = self._executors.get(pid)
            if ex is not None:
                self._executor_gone(ex, status)

    def _on_executor(self, ex: ExecutorProcess) -> None:
        if ex.state is ExecutorState.DEAD:
            return
        try:
            messages, eof = ex.receive()
        except protocol.FrameError as exc:
            log.error("executor %d sent a bad frame (%s); killing it", ex.pid, exc)
            self._unwatch(ex)
            if ex.attempt is not None and not ex.attempt.done:
                self._stop_attempt(ex, StopReason.BROKEN)
            else:
                ex.state = ExecutorState.RETIRING
                pool.signal_tree(ex, signal.SIGKILL)
            return
        for msg in messages:
            self._on_frame(ex, msg)
        if eof:
            self._unwatch(ex)
            if ex.state is not ExecutorState.RETIRING and ex.status is None:
                # Its socket closed but it lives on (or is about to be reaped): it cannot
                # be talked to any more, so it goes.
                pool.signal_tree(ex, signal.SIGKILL)

    def _unwatch(self, ex: ExecutorProcess) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(ex.run)

    # --------------------------------------------------------------- executors

    def _serving(self) -> int:
        """Executors that can take attempts (not those retiring or being killed: their
        replacements start at once)."""
        return sum(1 for ex in self._executors.values()
                   if ex.state in (ExecutorState.IDLE, ExecutorState.BUSY))  # fmt: skip

    def _fill_pool(self) -> None:
        while self._serving() < self.concurrency and not self.stopping:
            try:
                ex = pool.spawn(self.catalog, fork_attempts=self.sandbox.available,
                                runners=self._runners_each)
            except OSError as exc:
                log.error("could not start an executor process: %s; retrying", exc)
                self._next_spawn = time.monotonic() + SPAWN_RETRY
                return
            self._executors[ex.pid] = ex
            self._selector.register(ex.run, selectors.EVENT_READ,
                                    functools.partial(self._on_executor, ex))
            if ex.pidfd is not None:
                self._selector.register(ex.pidfd, selectors.EVENT_READ, self._reap)

    def _on_frame(self, ex: ExecutorProcess, msg: dict[str, Any]) -> None:
        a = ex.attempt
        kind = msg["t"]
        if a is None or a.done:
            return  # late frames of an attempt already decided
        rec = a.record
        if kind == "progress":
            fraction = msg.get("fraction")
            if isinstance(fraction, bool) or not isinstance(fraction, int | float):
                fraction = None
            else:
                fraction = min(1.0, max(0.0, float(fraction)))
            message = msg.get("message")
            text = None if message is None else str(message)[:1000]
            self._write(lambda: self._published(self.store.progress(
                rec.id, rec.attempt, fraction, text)), droppable=True)  # fmt: skip
        elif kind == "output":
            lines = msg.get("lines")
            if isinstance(lines, list) and lines:
                texts = [str(x) for x in lines]
                self._write(lambda: self._published(self.store.output(rec.id, rec.attempt,
                                                                      texts)), droppable=True)
        elif kind == "cleanup":
            if isinstance(msg.get("add"), str):
                a.temp_paths.add(msg["add"])
            elif isinstance(msg.get("drop"), str):
                a.temp_paths.discard(msg["drop"])
        elif kind == "ended":
            # The attempt's own process ended (confined attempts): without its done frame,
            # the attempt is lost, as if its executor had died.
            if msg.get("id") != rec.id or msg.get("attempt") != rec.attempt:
                return  # an earlier attempt's process, whose done frame came first
            status = msg.get("status")
            a.done = True
            self._remove_temp_paths(a)
            self._record_loss(a, describe_exit(status) if isinstance(status, int)
                              else "ended")  # fmt: skip
            self._release(ex)
            if a.stopping is not None:
                self._kill_strays()
        elif kind == "done":
            a.done = True
            rss = msg.get("rss")
            ex.rss = rss if isinstance(rss, int) else 0
            self._record_outcome(a, msg)
            self._release(ex, recycle=bool(msg.get("recycle")))

    def _record_outcome(self, a: Attempt, msg: dict[str, Any]) -> None:
        rec = a.record
        outcome = msg.get("outcome")
        if outcome == "succeeded":
            self._finish(rec, TaskState.SUCCEEDED, result=msg.get("result"))
        elif outcome == "cancelled":
            self._finish(rec, TaskState.CANCELLED, reason="stopped at a checkpoint")
        else:
            error = _error_of(msg.get("error"))
            retry = msg.get("retry")
            if isinstance(retry, dict) and rec.retries_left > 0 and not rec.cancel_requested:
                after = retry.get("after")
                if isinstance(after, bool) or not isinstance(after, int | float):
                    delay = a.spec.backoff.delay(rec.failures + 1)
                else:
                    delay = min(MAX_TIMEOUT, max(0.0, float(after)))
                def retry(delay: float = delay, requested: bool = after is not None) -> None:
                    ev = self.store.retry_later(rec.id, rec.attempt, delay=delay, error=error,
                                                requested=requested)  # fmt: skip
                    if self._published(ev) is not None:
                        self._schedule_retry(rec.id, time.time() + delay)

                self._write(retry)
            else:
                self._finish(rec, TaskState.FAILED, error=error)

    def _finish(self, rec: TaskRecord, state: TaskState, **kw: Any) -> None:
        self._write(lambda: self._published(self.store.finish(rec.id, rec.attempt, state, **kw)))

    def _release(self, ex: ExecutorProcess, *, recycle: bool = False) -> None:
        """An executor's attempt is over: free its slot; recycle it if it is due."""
        a = ex.attempt
        ex.attempt = None
        if a is not None:
            if self._running.get(a.task_id) is ex:
                del self._running[a.task_id]
            self._running_names[a.record.name] -= 1
            if a.record.name in self._parked:
                self._unpark = True
        ex.tasks_run += 1
        if ex.state is not ExecutorState.BUSY:
            return
        due = recycle or (self.max_tasks_per_executor
                          and ex.tasks_run >= self.max_tasks_per_executor) or (
            self.max_executor_memory and ex.rss > self.max_executor_memory * MiB)  # fmt: skip
        if due:
            log.info("recycling executor %d after %d attempt(s), %d MB", ex.pid, ex.tasks_run,
                     ex.rss // MiB)  # fmt: skip
            ex.state = ExecutorState.RETIRING
            if not ex.send({"t": "exit"}):
                pool.signal_tree(ex, signal.SIGKILL)
            self._fill_pool()
        else:
            ex.state = ExecutorState.IDLE

    def _executor_gone(self, ex: ExecutorProcess, status: int | None) -> None:
        """An executor ended (reaped, with its status) or was abandoned (None)."""
        if ex.state is ExecutorState.DEAD:
            return
        if status is not None:
            with contextlib.suppress(protocol.FrameError):
                messages, _ = ex.receive()  # what it sent before it died
                for msg in messages:
                    self._on_frame(ex, msg)
        self._unwatch(ex)
        if ex.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(ex.pidfd)
        ex.close()
        ex.status = status
        a = ex.attempt
        how = describe_exit(status) if status is not None else "could not be killed"
        expected = ex.state is ExecutorState.RETIRING or (a is not None and a.stopping)
        ex.state = ExecutorState.DEAD
        del self._executors[ex.pid]
        if ex.temp_folder is not None:
            shutil.rmtree(ex.temp_folder, ignore_errors=True)
            ex.temp_folder = None
        if a is not None and not a.done:
            a.done = True
            self._remove_temp_paths(a)
            self._record_loss(a, how)
            self._release(ex)
        if not expected:
            log.warning("executor %d ended: %s", ex.pid, how)
        if a is not None and a.stopping is not None:
            self._kill_strays()
        if not self.stopping:
            self._fill_pool()

    def _record_loss(self, a: Attempt, how: str) -> None:
        rec = a.record
        if a.stopping is StopReason.CANCEL:
            grace = a.spec.cancel_grace
            self._finish(rec, TaskState.CANCELLED,
                         reason=f"stopped by force after {format_seconds(grace)}: it did not "
                         "stop at a checkpoint", extra={"forced": True, "grace": grace})
        elif a.stopping is StopReason.TIMEOUT:
            limit = rec.timeout or 0.0
            self._finish(rec, TaskState.FAILED, error={
                "code": ErrorCode.TIMEOUT.value, "timeout": limit,
                "message": f"Timed out after {format_seconds(limit)}; the attempt was stopped.",
            })  # fmt: skip
        elif a.stopping is StopReason.BROKEN:
            self._finish(rec, TaskState.FAILED, error={
                "code": ErrorCode.BAD_RESULT.value,
                "message": "The task's process sent something Herald cannot read; it was "
                           "stopped."})  # fmt: skip
        else:
            stopped = a.stopping is StopReason.SHUTDOWN
            detail = None if stopped else how

            def lose() -> None:
                _, ev = self.store.lose(rec.id, rec.attempt, stopped=stopped, detail=detail)
                if ev is not None and self._published(ev) and ev.type is EventType.RETRYING:
                    self._enqueue_after_commit([rec.id])
                if ev is not None and not stopped:
                    log.warning("task %s (%s): %s during attempt %d", rec.id, rec.name, detail,
                                rec.attempt)  # fmt: skip

            self._write(lose)

    def _stop_attempt(self, ex: ExecutorProcess, reason: StopReason) -> None:
        """Terminate an attempt's process tree (SIGKILL follows after TERM_GRACE)."""
        a = ex.attempt
        if a is None or a.stopping is not None:
            return
        a.stopping = reason
        a.term_sent = time.monotonic()
        ex.state = ExecutorState.RETIRING  # it will not serve again
        log.info("stopping task %s (%s): %s", a.task_id, a.record.name, reason.value)
        pool.signal_tree(ex, signal.SIGTERM)
        self._fill_pool()  # its replacement starts now, not when it is gone

    def _release_leases(self) -> None:
        requeued, events = self.store.reap(release=self.identity)
        for ev in events:
            self._published(ev)
        self._enqueue_after_commit([r.id for r in requeued])

    def _kill_strays(self) -> None:
        """Kill what killed attempts left behind (re-parented here as a subreaper)."""
        if not self.subreaper:
            return
        live = set(self._executors)
        for pid in pool.strays(live):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _remove_temp_paths(self, a: Attempt) -> None:
        """Remove what a killed attempt registered, never anything of Herald's own."""
        own = os.path.realpath(self.layout.root)
        for path in sorted(a.temp_paths, key=len, reverse=True):
            try:
                real = os.path.realpath(path)
                if os.path.commonpath([real, own]) == own or real == "/":
                    log.warning("task %s asked to remove %s, inside Herald's data; refused",
                                a.task_id, path)  # fmt: skip
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
                log.info("removed %s, left by task %s", path, a.task_id)
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as exc:
                log.warning("could not remove %s (task %s): %s", path, a.task_id, exc)

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self) -> None:
        """Give every idle executor an attempt, then take the queue's messages.

        A wake-up from the web names the task it enqueued: when the queue had been read to
        its end before it, that task is claimed and started at once, before its queue
        message is read (which is dropped when it comes). Next come tasks dequeued earlier
        that found no executor free, and parked tasks whose concurrency slot freed. Only
        then is the queue read, to its end while executors are idle (wake-ups are
        coalesced, one per burst: any may stand for many tasks), so that reading it never
        delays a start; what it yields is started in turn.
        """
        if self.stopping or self._storage_waiting or self._backlog:
            return  # the writes waiting go first
        self._start_known()
        # A message taken may turn out to start nothing (its task was cancelled or has run
        # already): then read on while executors are idle and more is announced.
        for _ in range(MAX_READS):
            if self._storage_waiting:
                return  # a claim was refused just now
            if not (self._credits or self._look or self._expected_dups
                    or (self._expected and self._reread_at is None)):  # fmt: skip
                return
            if not self._read_queue():
                return
            self._start_known()
            if not self._idle():
                return

    def _idle(self) -> list[ExecutorProcess]:
        return [ex for ex in self._executors.values() if ex.state is ExecutorState.IDLE]

    def _start_known(self) -> None:
        """Claim and start the tasks known to be waiting, while executors are idle."""
        idle = self._idle()
        if not idle or not (self._ready or self._hints or self._unpark):
            self._hints.clear()  # no room: their queue messages bring them back
            return
        starts: list[tuple[TaskRecord, TaskSpec]] = []
        # Just after the disk refused writes, an attempt starts only once its claim is
        # committed: one whose claim is refused never runs (and is never killed).
        careful = self._storage_down_since is not None
        with self._round(), self._claims(starts):
            while self._ready and len(starts) < len(idle):
                self._try_claim(self._ready.popleft(), None, starts)
            if self._unpark:
                self._unpark = False
                for parked_id, name in self._unparked(len(idle) - len(starts)):
                    self._try_claim(parked_id, name, starts)
            # Hints only when every announced task has an executor: otherwise the queue's
            # order decides (newer tasks must not overtake older ones).
            use_hints = not self._ready and (
                self._credits + len(self._expected) <= len(idle) - len(starts))  # fmt: skip
            while use_hints and self._hints and len(starts) < len(idle):
                task_id, early = self._hints.popleft()
                if task_id in self._hinted:
                    continue
                before = len(starts)
                self._try_claim(task_id, None, starts, hinted=True)
                if len(starts) > before:
                    self._hinted[task_id] = early
                    if early:  # its message, when it lands, is a duplicate
                        self._expected.pop(task_id, None)
                        self._expected_dups += 1
                    if len(self._hinted) > MAX_HINTED:
                        _, was_early = self._hinted.popitem(last=False)
                        if was_early:
                            self._expected_dups = max(0, self._expected_dups - 1)
            self._hints.clear()
            # Each claim is decided (this transaction holds the write lock); the run
            # frames go out before the commit, so an attempt starts while it is being
            # made durable. Should the commit fail, the attempts are void: killed
            # below, their tasks still queued in the ledger.
            if not careful:
                for (rec, spec), ex in self._pair(starts, idle):
                    self._start(ex, rec, spec)
        if careful:  # `starts` is empty if the commit failed
            for (rec, spec), ex in self._pair(starts, idle):
                self._start(ex, rec, spec)

    @staticmethod
    def _pair(starts: list[tuple[TaskRecord, TaskSpec]],
              idle: list[ExecutorProcess]) -> list[tuple[tuple[TaskRecord, TaskSpec],
                                                         ExecutorProcess]]:  # fmt: skip
        """An idle executor for each start: preferably one that ran the same principal's
        attempts lately, the most recently first (its runner serves the next one without a
        fork, see executor.py), else the one that ran the fewest principals lately."""
        free = list(idle)
        out = []
        for rec, spec in starts:
            mine = [e for e in free if rec.principal in e.principals]
            ex = max(mine, key=lambda e: list(e.principals).index(rec.principal)) if mine \
                else min(free, key=lambda e: len(e.principals))  # fmt: skip
            free.remove(ex)
            out.append(((rec, spec), ex))
        return out

    @contextlib.contextmanager
    def _claims(self, starts: list[tuple[TaskRecord, TaskSpec]]) -> Iterator[None]:
        """The claims of a dispatch in one transaction of their own (they must be decided
        before their run frames go out). A failed commit voids the attempts started."""
        try:
            with self.store.batch(isolated=False):
                yield
        except self._errors as exc:
            problem = storage_problem(exc)
            if problem is not None:
                self._storage_failed(exc, problem)
            else:
                log.exception("could not record the start of %d task(s)", len(starts))
            self._post.clear()
            self._writes.clear()
            self._notify = False
            self._void([rec for rec, _ in starts])
            starts.clear()
        else:
            if starts:
                self._storage_ok()

    def _read_queue(self) -> bool:
        """Take queue messages for the idle executors (and drop those of tasks already
        started by hint): as many as were announced, or until it is empty. A message
        announced before it was enqueued may not be there yet: it is looked for again
        shortly (a duplicate's, lazily, on the next occasion).

        Returns whether it took a message that may start a task.
        """
        room = len(self._idle()) - len(self._ready)
        took = False
        while (room > 0 and (self._credits or self._expected or self._look)) or (
                self._expected_dups):  # fmt: skip
            task_id = self.queue.dequeue()
            if task_id is None:
                self._look = False
                self._credits = 0
                if self._expected and self._reread_at is None:
                    self._reread_at = time.monotonic() + self._reread_delay
                    self._reread_delay = min(REREAD_MAX, self._reread_delay * 2)
                return took
            self._reread_delay = REREAD_FIRST
            early = self._hinted.pop(task_id, None)
            if early is not None:  # started already: this message is a duplicate
                if early:
                    self._expected_dups = max(0, self._expected_dups - 1)
                else:
                    self._credits = max(0, self._credits - 1)
                continue
            if task_id in self._expected:
                del self._expected[task_id]
            elif self._credits:
                self._credits -= 1
            self._ready.append(task_id)
            took = True
            room -= 1
        return took

    def _void(self, records: list[TaskRecord]) -> None:
        """Claims that were never committed: stop their attempts (if started), and keep
        their tasks, still queued in the ledger, first in line to be claimed again (their
        queue messages are gone, or dropped when read: they were started by hint)."""
        for rec in records:
            ex = self._running.pop(rec.id, None)
            if ex is None or ex.attempt is None:
                continue
            self._running_names[rec.name] -= 1
            ex.attempt.done = True
            ex.attempt = None
            ex.state = ExecutorState.RETIRING
            pool.signal_tree(ex, signal.SIGKILL)
        for rec in reversed(records):
            if rec.id not in self._ready:
                self._ready.appendleft(rec.id)

    def _unparked(self, room: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for name, ids in list(self._parked.items()):
            spec = self.catalog.get(name)
            limit = spec.concurrency if spec is not None else None
            while ids and len(out) < room and (limit is None or self._running_names[name]
                                                + sum(1 for _, n in out if n == name) < limit):
                out.append((ids.popleft(), name))
                self._parked_count -= 1
            if not ids:
                del self._parked[name]
        return out

    def _try_claim(self, task_id: str, name: str | None,
                   starts: list[tuple[TaskRecord, TaskSpec]], *, hinted: bool = False) -> None:
        limit = None
        if self._limited:
            name = name or self.store.task_name(task_id)
            spec = self.catalog.get(name) if name else None
            limit = spec.concurrency if spec is not None else None
            if not hinted and limit is not None and name is not None:
                running = self._running_names[name] + sum(1 for r, _ in starts if r.name == name)
                if running >= limit:
                    self._park(task_id, name)
                    return
            if hinted and limit is not None and name is not None and self._running_names[name] \
                    + sum(1 for r, _ in starts if r.name == name) >= limit:  # fmt: skip
                return  # its queue message brings it back
        rec, ev = self.store.claim(task_id, self.identity, LEASE_SECONDS, limit=limit)
        if rec is None:
            if not hinted:  # a hint needs no answer: the queue message follows
                self._not_claimed(task_id)
            return
        self._published(ev)
        spec = self.catalog.get(rec.name)
        if spec is None:
            self._finish(rec, TaskState.FAILED, error={
                "code": ErrorCode.UNKNOWN_TASK.value,
                "message": f"This worker has no task named {rec.name!r}.",
            })  # fmt: skip
            return
        starts.append((rec, spec))

    def _not_claimed(self, task_id: str) -> None:
        """A dequeued task could not start: find out why, keep it if it must wait."""
        rec = self.store.get_task(task_id)
        if rec is None or rec.state is not TaskState.QUEUED:
            return  # cancelled while queued, finished, or a duplicate message: dropped
        if rec.next_attempt_at is not None and rec.next_attempt_at > time.time():
            self._schedule_retry(task_id, rec.next_attempt_at)
        else:
            self._park(task_id, rec.name)  # its limit is held by another worker

    def _park(self, task_id: str, name: str) -> None:
        if self._parked_count >= MAX_PARKED:
            self._enqueue_after_commit([task_id])  # leave it to the queue
            return
        ids = self._parked.setdefault(name, deque())
        if task_id not in ids:
            ids.append(task_id)
            self._parked_count += 1

    def _schedule_retry(self, task_id: str, at: float) -> None:
        if task_id in self._retry_ids:
            return
        self._retry_ids.add(task_id)
        heapq.heappush(self._retries, (at, task_id))

    def _start(self, ex: ExecutorProcess, rec: TaskRecord, spec: TaskSpec) -> None:
        now = time.monotonic()
        a = Attempt(rec, spec, now, deadline=None if rec.timeout is None else now + rec.timeout)
        ex.attempt = a
        ex.state = ExecutorState.BUSY
        ex.principals[rec.principal] = None
        ex.principals.move_to_end(rec.principal)
        if len(ex.principals) > self._runners_each:
            ex.principals.popitem(last=False)
        self._running[rec.id] = ex
        self._running_names[rec.name] += 1
        frame = {"t": "run", "id": rec.id, "attempt": rec.attempt, "name": rec.name,
                 "args": rec.args, "timeout": rec.timeout, "memory_limit": spec.memory_limit,
                 "cancelled": rec.cancel_requested}  # fmt: skip
        if rec.cancel_requested:
            a.cancel_sent = now
        if self.sandbox.available:
            frame["sandbox"] = self.policy_for(rec).to_json()
            frame["principal"] = rec.principal
            try:
                frame["temp_parent"] = self._executor_folder(ex)
            except OSError as exc:  # the attempt then has no temp dir it may write to
                log.warning("no temp dir for task %s: %s", rec.id, exc)
        if not ex.send(frame):
            # It died as it was handed the attempt: not the task's fault.
            a.stopping = StopReason.SHUTDOWN
            ex.state = ExecutorState.RETIRING
            pool.signal_tree(ex, signal.SIGKILL)

    def _executor_folder(self, ex: ExecutorProcess) -> str:
        """The folder of `ex`'s attempts' temp dirs (its runners' roots, and the temp dirs of
        attempts in a child of their own: the executor makes and removes them), removed
        when the executor ends, with whatever a killed attempt left in it."""
        if ex.temp_folder is None or not os.path.isdir(ex.temp_folder):
            ex.temp_folder = tempfile.mkdtemp(prefix=f"herald-executor-{ex.pid}-",
                                              dir=self._temp_root())  # fmt: skip
        return ex.temp_folder

    def _temp_root(self) -> str:
        """The folder of the attempts' temp dirs (one per worker): making one there leaves
        the system's temp dir unchanged, so that the executors' rulesets stay true."""
        return self._temp.path()

    def _apply_cancel_requests(self) -> None:
        if not self._running:
            return
        now = time.monotonic()
        for task_id in self.store.cancel_requested(self.identity):
            ex = self._running.get(task_id)
            a = ex.attempt if ex is not None else None
            if ex is None or a is None or a.cancel_sent is not None or a.stopping is not None:
                continue
            log.info("cancelling task %s (attempt %d)", task_id, a.number)
            a.cancel_sent = now
            if a.spec.cancel_grace <= 0:
                self._stop_attempt(ex, StopReason.CANCEL)
            elif not ex.send({"t": "cancel", "id": task_id, "attempt": a.number}, control=True):
                self._stop_attempt(ex, StopReason.CANCEL)

    # ----------------------------------------------------------------- recovery

    def recover(self, *, unchanged_for: float | None = None) -> None:
        """Re-queue or fail tasks whose worker died, re-enqueue lost queue messages and
        pick up the retries waiting in the ledger.

        Args:
            unchanged_for: only look for lost messages of tasks queued at least this long
                (None: all, as at start-up). A web service that died between recording a
                task and enqueueing it leaves such a task behind.
        """
        self._look = True  # and look at the whole queue again
        # Messages announced early that never came (a web service that died in between):
        # the look above finds whatever did come.
        if unchanged_for is not None:
            self._expected.clear()
            self._expected_dups = 0
        requeued, events = self.store.reap(live_worker=self.identity)
        for event in events:
            self._published(event)
            if event.type is EventType.FAILED:
                log.error("task %s failed: its worker was lost too many times", event.task_id)
        ids = [r.id for r in requeued]
        # Our own leases on attempts this dispatcher does not run (a write that failed).
        for task_id, attempt in self.store.leased_to(self.identity):
            if task_id not in self._running:
                _, ev = self.store.lose(task_id, attempt, stopped=True)
                if ev is not None and self._published(ev) and ev.type is EventType.RETRYING:
                    ids.append(task_id)
        since = None if unchanged_for is None else time.time() - unchanged_for
        queued = self.store.queued_ids(unchanged_since=since)
        if queued:
            pending = self.queue.pending_ids() | set(ids) | set(self._ready) | {
                t for q in self._parked.values() for t in q}  # fmt: skip
            for task_id in queued:
                if task_id not in pending:
                    log.warning("task %s was queued but not in the queue; re-enqueued", task_id)
                    ids.append(task_id)
        for task_id, at in self.store.next_retries():
            self._schedule_retry(task_id, at)
        self._enqueue_after_commit(ids)

    def _enqueue_after_commit(self, ids: list[str]) -> None:
        """Put these tasks in the queue once the round that queued them in the ledger
        has committed."""

        def enqueue() -> None:
            for task_id in ids:
                self.queue.enqueue(task_id)
            self._credits += len(ids)

        if ids:
            self._post.append(enqueue)

    def _checkpoints(self) -> None:
        """Housekeeping on connections of its own, so that no round waits for it: checkpoint
        both databases shortly after writes, and prune finished tasks (retention) at most
        every `prune_interval` seconds. Sleeps while nothing is written.

        WAL policy: a PASSIVE checkpoint a second after writes; a WAL past
        WAL_TRUNCATE_BYTES is checkpointed at once and emptied (TRUNCATE), and so is one
        past the journal size limit once the writes have stopped, so that neither file
        stays at a burst's size.
        """
        from services.queue import TaskQueue  # (SQLite's: the data dir's files)
        from services.store.sqlite import TaskStore

        store = TaskStore(self.layout.ledger_db, checkpoint_pages=0)
        queue = TaskQueue(self.layout, checkpoint_pages=0)
        refused = False
        wals = ((store, lambda: store.sizes()["wal"]), (queue, queue.wal_size))
        next_prune = time.monotonic()
        next_truncate = 0.0  # after a failed try, the next is not sooner than this
        while not self._stopping.is_set():
            self._dirty.wait()
            deadline = time.monotonic() + CHECKPOINT_DELAY
            while not self._stopping.is_set():
                now = time.monotonic()
                left = deadline - now
                if left <= 0 or (now >= next_truncate and any(
                        size() > WAL_TRUNCATE_BYTES for _, size in wals)):  # fmt: skip
                    break
                self._stopping.wait(min(WAL_POLL, left))
            if self._stopping.is_set():
                break
            self._dirty.clear()
            try:
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self.prune_interval
                    self._prune(store)
                for db, size in wals:
                    done = db.checkpoint()
                    wal = size()
                    quiet = not self._dirty.is_set()
                    if wal > WAL_TRUNCATE_BYTES or (quiet and wal > JOURNAL_SIZE_LIMIT):
                        if not db.checkpoint(truncate=True):
                            # A reader holds an old snapshot: try again in a while.
                            next_truncate = time.monotonic() + CHECKPOINT_DELAY
                            log.debug("could not empty a %d-byte WAL yet", wal)
                    elif done and quiet:  # its header's fsync here, not in the next task's
                        db.restart_wal()  # (an emptied WAL stays empty)
            except Exception as exc:
                if storage_problem(exc) is None:
                    log.exception("checkpoint failed")
                elif not refused:
                    log.warning("checkpoint put off: %s", exc)
                refused = True  # the next write tries again
            else:
                refused = False
        store.close()

    def _prunes(self) -> None:
        """Housekeeping where the storage is not the data dir's files (Redis): retention
        alone, at most every `prune_interval` seconds, and only while things are written."""
        store = self.backend.store()
        next_prune = time.monotonic()
        while not self._stopping.is_set():
            self._dirty.wait()
            self._stopping.wait(max(0.0, next_prune - time.monotonic()))
            if self._stopping.is_set():
                break
            self._dirty.clear()
            next_prune = time.monotonic() + self.prune_interval
            try:
                self._prune(store)
            except Exception as exc:
                log.warning("retention put off: %s", exc)
        store.close()

    def _prune(self, store: Ledger) -> None:
        """One retention pass, in short transactions (see TaskStore.prune)."""
        if self.retention_seconds is None and self.retention_keep is None:
            return
        done = store.prune(older_than=self.retention_seconds, keep=self.retention_keep,
                           batch=PRUNE_BATCH, stop=self._stopping.is_set)  # fmt: skip
        if done.tasks or done.events:
            self._notifier.wake(PRUNED_WAKE)
            log.info("retention: pruned %d finished task(s) and %d event(s)",
                     done.tasks, done.events)  # fmt: skip

    # ----------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        """Give running attempts a moment, then stop them and put their tasks back.

        When the supervisor died (SIGKILLed), nothing may outlive it by more than a moment:
        every attempt is killed at once, and its task put back for the next start.
        """
        if parent_gone():
            self._abandon()
            return
        deadline = time.monotonic() + self.stop_grace
        while self._running and time.monotonic() < deadline and not self._hurry:
            # The end of stdin comes as the supervisor's files are closed, a moment before
            # the kernel re-parents us and sends the parent-death signal: look again.
            if parent_gone():
                self._abandon()
                return
            ready = self._selector.select(max(0.0, min(0.05, deadline - time.monotonic())))
            with self._round():
                for key, _ in ready:
                    key.data()
        with self._round():
            for ex in list(self._executors.values()):
                if ex.attempt is not None and not ex.attempt.done:
                    self._stop_attempt(ex, StopReason.SHUTDOWN)
                elif ex.state is ExecutorState.IDLE:
                    ex.state = ExecutorState.RETIRING
                    if not ex.send({"t": "exit"}):
                        pool.signal_tree(ex, signal.SIGKILL)
        # Wait for them (SIGKILL after TERM_GRACE), recording each attempt given back.
        deadline = time.monotonic() + TERM_GRACE + 2.0
        while self._executors and time.monotonic() < deadline:
            if parent_gone():
                self._abandon()
                return
            ready = self._selector.select(0.05)
            with self._round():
                for key, _ in ready:
                    key.data()
                if not self._own_signals and not pool.HAVE_PIDFD:
                    self._reap()
                now = time.monotonic()
                for ex in list(self._executors.values()):
                    if ex.status is None and now > deadline - 2.0:
                        pool.signal_tree(ex, signal.SIGKILL)
        with self._round():
            for ex in list(self._executors.values()):  # unkillable: give their tasks back
                self._executor_gone(ex, None)
        if self._backlog:  # one last try; else their leases bring their tasks back
            self._storage_retry_at = 0.0
            with self._round():
                pass
        if not self._backlog:
            with self._round():
                self._handle(self._release_leases)
        self._kill_strays()
        self._close()

    def _abandon(self) -> None:
        """The supervisor is gone: kill every attempt's process tree now, give the tasks
        back (their leases would do it at the next start anyway), and close."""
        log.warning("the supervisor is gone: killing %d running attempt(s) and stopping",
                    len(self._running))  # fmt: skip
        for ex in list(self._executors.values()):
            pool.signal_tree(ex, signal.SIGKILL)
        self._kill_strays()
        deadline = time.monotonic() + 0.5
        while self._own_signals and time.monotonic() < deadline:
            pool.reap_children()  # so that none is left behind, not even as a zombie
            if not pool.strays(set()):
                break
            time.sleep(0.01)
        try:
            self.store.reap(release=self.identity)
        except self._errors as exc:
            log.warning("could not give the tasks back now (%s); their leases will", exc)
        self._close()

    def _close(self) -> None:
        self._temp.close()
        if self._own_signals:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self._selector.close()
        self._receiver.close()
        self._self_wake.close()
        self._notifier.close()
        self._sig_r.close()
        self._sig_w.close()
