"""Runs task attempts: takes task ids from the queue when woken, records every event.

The main thread waits on the wake-up socket (the web service sends a datagram after it
enqueues) and hands each dequeued task to a pool thread. Each attempt is leased in the
ledger; leases are renewed while the task runs, and tasks whose worker died are re-queued
or failed by `TaskStore.reap`, at start and on a slow timer. Idle, the loop sleeps in
select() with a long timeout: no polling latency, next to no CPU.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.core.errors import TaskCancelled, TaskFailure
from services.core.events import Event
from services.core.states import TaskState
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store import TaskStore
from services.store.sqlite import TaskRecord, worker_identity
from services.tasks.catalog import Catalog, TaskSpec
from services.tasks.context import TaskContext
from services.wake import WakeReceiver, WakeSender

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
# Fallback look at the queue when no wake-up came. Rarely useful (wake-ups on a local socket
# are not lost) and each one wakes an idle process, which costs milliseconds of CPU on a
# cold machine: keep it slow.
IDLE_TIMEOUT = 30.0
BUSY_TIMEOUT = 1.0  # while tasks run: notice cancel requests even if a wake-up was lost
REAP_INTERVAL = 30.0  # a new worker reaps at once; this catches other workers' expired leases
STOP_GRACE = 3.0  # seconds running tasks get to finish when the worker stops
CHECKPOINT_DELAY = 1.0  # seconds after a write before the WAL is checkpointed


class RecordingContext(TaskContext):
    """A TaskContext that records progress and output in the event log."""

    def __init__(self, runner: Runner, task_id: str, attempt: int) -> None:
        super().__init__(task_id, attempt)
        self._runner = runner

    def _record_progress(self, fraction: float | None, message: str | None) -> None:
        self._runner.published(self._runner.store.progress(
            self.task_id, self.attempt, fraction, message))  # fmt: skip

    def _record_output(self, lines: list[str]) -> None:
        self._runner.published(self._runner.store.output(self.task_id, self.attempt, lines))


class Runner:
    """The worker process's engine.

    Args:
        layout: the data dir.
        catalog: the tasks it can run.
        threads: how many tasks run at once.
    """

    def __init__(self, layout: DataLayout, catalog: Catalog, threads: int = 4) -> None:
        self.layout = layout
        self.catalog = catalog
        self.threads = max(1, threads)
        self.identity = worker_identity()
        # Commits here never checkpoint: the checkpointer thread does it off the hot path.
        self.store = TaskStore(layout.ledger_db, checkpoint_pages=0)
        self.queue = TaskQueue(layout, checkpoint_pages=0)
        self._dirty = threading.Event()
        self._notifier = WakeSender(layout.wake_address("notifier"))
        self._receiver = WakeReceiver(layout.wake_address("worker"))
        self._self_wake = WakeSender(layout.wake_address("worker"))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="task")
        self._free = self.threads
        self._lock = threading.Lock()
        self._running: dict[str, RecordingContext] = {}
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to stop (thread- and signal-safe)."""
        self._stopping.set()
        self._dirty.set()
        self._self_wake.wake(b"stop")

    def published(self, event: Event | None) -> None:
        """Tell the notifier that an event was recorded."""
        if event is not None:
            self._notifier.wake()
            self._dirty.set()

    def _checkpoints(self) -> None:
        """Checkpoint both databases shortly after writes, on connections of its own, so
        that no attempt waits for a checkpoint's fsync. Sleeps while nothing is written."""
        store = TaskStore(self.layout.ledger_db, checkpoint_pages=0)
        queue = TaskQueue(self.layout, checkpoint_pages=0)
        while not self._stopping.is_set():
            self._dirty.wait()
            if self._stopping.wait(CHECKPOINT_DELAY):
                break
            self._dirty.clear()
            try:
                store.checkpoint()
                queue.checkpoint()
            except Exception:
                log.exception("checkpoint failed")
        store.close()

    def recover(self, *, unchanged_for: float | None = None) -> None:
        """Re-queue or fail tasks whose worker died, and re-enqueue lost queue messages.

        Args:
            unchanged_for: only look for lost messages of tasks queued at least this long
                (None: all, as at start-up). A web service that died between recording a
                task and enqueueing it leaves such a task behind.
        """
        requeued, events = self.store.reap(live_worker=self.identity)
        for rec in requeued:
            log.warning("task %s lost its worker during attempt %d; re-queued", rec.id, rec.attempt)
            self.queue.enqueue(rec.id)
        for ev in events:
            if ev.type.value == "failed":
                log.error("task %s failed: worker lost too many times", ev.task_id)
        since = None if unchanged_for is None else time.time() - unchanged_for
        queued = self.store.queued_ids(unchanged_since=since)
        if queued:
            pending = self.queue.pending_ids() | {r.id for r in requeued}
            for task_id in queued:
                if task_id not in pending:
                    log.warning("task %s was queued but not in the queue; re-enqueued", task_id)
                    self.queue.enqueue(task_id)
        if events:
            self._notifier.wake()

    # --------------------------------------------------------------------- loop

    def run(self) -> None:
        """The main loop; returns after `stop()` once running tasks were handled."""
        self.recover()
        threading.Thread(target=self._checkpoints, name="checkpoint", daemon=True).start()
        last_reap = last_renew = time.monotonic()
        while not self._stopping.is_set():
            self._dispatch()
            with self._lock:
                busy = bool(self._running)
            messages = self._receiver.wait(BUSY_TIMEOUT if busy else IDLE_TIMEOUT)
            if self._stopping.is_set():
                break
            now = time.monotonic()
            if b"cancel" in messages or (busy and not messages):
                self._apply_cancel_requests()
            if busy and now - last_renew >= LEASE_SECONDS / 3:
                self.store.renew_leases(self.identity, LEASE_SECONDS)
                last_renew = now
            if now - last_reap >= REAP_INTERVAL:
                last_reap = now
                self.recover(unchanged_for=REAP_INTERVAL)
        self._shutdown()

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._free == 0:
                    return
            task_id = self.queue.dequeue()
            if task_id is None:
                return
            with self._lock:
                self._free -= 1
            self._pool.submit(self._attempt, task_id)

    def _apply_cancel_requests(self) -> None:
        ids = self.store.cancel_requested(self.identity)
        with self._lock:
            for task_id in ids:
                ctx = self._running.get(task_id)
                if ctx is not None and not ctx.cancelled:
                    log.info("cancelling task %s", task_id)
                    ctx.request_cancel()

    def _shutdown(self) -> None:
        """Give attempts in flight a moment, then put the unfinished back in the queue."""
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            with self._lock:
                if self._free == self.threads:
                    break
            self._receiver.wait(0.05)
        # Every task still leased to this worker goes back, whether its thread had got as
        # far as registering its context or not.
        requeued, events = self.store.reap(release=self.identity)
        for rec in requeued:
            self.queue.enqueue(rec.id)
        with self._lock:
            leftovers = list(self._running.values())
        for ctx in leftovers:
            ctx.request_cancel()  # its outcome is discarded: the attempt is no longer current
        if events:
            self._notifier.wake()
        if requeued:
            log.info("stopped with %d task(s) put back in the queue", len(requeued))
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._receiver.close()
        # A leftover task thread may still try to wake someone: sending on a closed socket
        # is ignored by WakeSender.
        self._self_wake.close()
        self._notifier.close()

    # ------------------------------------------------------------------ attempts

    def _attempt(self, task_id: str) -> None:
        try:
            self._run_attempt(task_id)
        except Exception:  # the store itself failed: log it, the reaper will recover the task
            log.exception("attempt of task %s could not be recorded", task_id)
        finally:
            with self._lock:
                self._free += 1
            self._self_wake.wake()

    def _run_attempt(self, task_id: str) -> None:
        rec, ev = self.store.claim(task_id, self.identity, LEASE_SECONDS)
        if rec is None:
            return  # cancelled while queued, or already handled
        self.published(ev)
        spec = self.catalog.get(rec.name)
        if spec is None:
            self._finish(rec.id, rec.attempt, TaskState.FAILED, error={
                "code": "unknown_task",
                "message": f"This worker has no task named {rec.name!r}.",
            })  # fmt: skip
            return
        ctx = RecordingContext(self, rec.id, rec.attempt)
        with self._lock:
            self._running[rec.id] = ctx
        try:
            self._run_with(rec, spec, ctx)
        finally:
            # Only this attempt's own entry: a duplicate message of the same task (they
            # happen, see recover) ends without ever registering and must not remove it.
            with self._lock:
                if self._running.get(rec.id) is ctx:
                    del self._running[rec.id]

    def _run_with(self, rec: TaskRecord, spec: TaskSpec, ctx: RecordingContext) -> None:
        if rec.cancel_requested:
            ctx.request_cancel()
        # Defaults for parameters added since the task was queued (an upgrade meanwhile).
        args = {p.name: p.default for p in spec.params if not p.required} | rec.args
        try:
            result = spec.func(ctx, **args)
            json.dumps(result)
        except TaskCancelled:
            ctx.flush()
            self._finish(rec.id, rec.attempt, TaskState.CANCELLED, reason="cancelled while running")
        except TaskFailure as exc:
            ctx.flush()
            self._finish(rec.id, rec.attempt, TaskState.FAILED,
                         error={"code": exc.code, "message": exc.message})  # fmt: skip
        except Exception as exc:
            ctx.flush()
            tb = traceback.format_exc()
            log.warning("task %s (%s) raised %s", rec.id, rec.name, exc.__class__.__name__)
            code = "bad_result" if isinstance(exc, TypeError | ValueError) and "JSON" in str(
                exc) else "exception"  # fmt: skip
            self._finish(rec.id, rec.attempt, TaskState.FAILED, error={
                "code": code, "message": f"{exc.__class__.__name__}: {exc}", "traceback": tb,
            })  # fmt: skip
        else:
            ctx.flush()
            self._finish(rec.id, rec.attempt, TaskState.SUCCEEDED, result=result)

    def _finish(self, task_id: str, attempt: int, state: TaskState, **kw: Any) -> None:
        self.published(self.store.finish(task_id, attempt, state, **kw))
