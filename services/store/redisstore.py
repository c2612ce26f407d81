"""The task ledger and the event log on Redis (scale-out): the same contract as the SQLite
`TaskStore`, for many web, worker and notifier nodes on many hosts.

Each state transition and the event it appends run in one Lua script
(`services.store.redis_scripts`, which lists every key): the ledger and the log never
disagree, and two nodes racing on one task (two reapers, a late finish after a reap) find
the second one's precondition false. Redis runs one script at a time, so a principal's
seqs are in commit order: a reader of "seq > N" never skips an event committed later with
a smaller number.

The log is a Redis Stream per principal (`ns:log:P`) whose entry ids are `<seq>-0`, seq
the principal's own counter incremented by the same script: XRANGE from `(N-0` resumes
exactly after seq N. Each task also has a list of its seqs (`ns:te:ID`) for the
API's per-task events and for retention.

Epoch and loss. A principal's counter is created (with its first event, or when its
counters are missing) at a floor above any seq it could have had before: the server's
clock in microseconds (about 1.8e15 < 2**53, exact in JavaScript), or the log's own last
id if that is higher. Its `pruned_through` is raised to that floor, so a client resuming
from a cursor of a lost log (any seq up to the floor) gets the "reset" the SQLite backend
gives after retention, never a silent gap; the principal's hash keeps the `epoch` (when
the counter was created) for health and logs. Seqs therefore start near 1.8e15 rather than
at 1, and a first client that starts at cursor 0 gets one reset too (harmless: it reloads
its tasks from the API). The floor assumes the server's clock does not go back by more
than the seqs a principal used since; a counter recreated with an older clock is caught
only when the client's cursor is above the new head (the "recreated" reset).

Persistence. For "nothing accepted is lost", run Redis with AOF and `appendfsync always`
(every write is on disk before Redis answers, so before the API answers 201). With
`appendfsync everysec` a crash of the Redis host (not of the process) can lose up to about
a second of writes: accepted tasks and their events vanish, and the counters go back with
them, so the next events would reuse seqs clients were already shown; the floor cannot see
that (the counter still exists). Only a restart without any persistence (or FLUSHALL), where
the counters are gone, is turned into an explicit reset by the floor. RDB snapshots alone
lose minutes. Use `maxmemory-policy noeviction`: an evicted key is lost data.

What differs from SQLite: times are the Redis server's clock (one clock for every host);
`events_after(after)` without a principal or a task, and `head()` without a principal,
are the SQLite notifier's global fan-out and raise NotImplementedError (notifier nodes on
Redis read per principal); `sizes()` is Redis's used memory; a `batch()` groups nothing
(each write is atomic on its own); search (`list_tasks(query=...)`) matches each task of
the principal newest first with `services.core.search.Query.matches` (no index), stopping
at `limit`; events of a deleted task are pruned by age once all of them are older than the
cutoff (its last event's time), not one by one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis

from services.core.errors import ErrorCode
from services.core.events import Event, EventType
from services.core.jsontext import compact
from services.core.retry import RetryReason, retry_message
from services.core.search import Query
from services.core.states import TaskState
from services.core.taskview import cancelled_message
from services.store import activity as _activity
from services.store import redis_scripts as _lua
from services.store.sqlite import (
    _RESULT_CHARS,
    CANCELLED_MESSAGE,
    PruneResult,
    TaskRecord,
    lease_owner_alive,
)

_PAGE = 200  # tasks read per round trip while a filter or a search skips some
_ACTIVITY_PAGE = 2000  # finished tasks read per round trip by activity()
_ACTIVE = {TaskState.QUEUED.value, TaskState.RUNNING.value}


def _opt(value: str | None) -> str:
    """An optional script argument ("0": none; "1" and the value)."""
    return "0" if value is None else "1" + value


def _float(value: float | None) -> str | None:
    return None if value is None else repr(float(value))


def _maybe_float(text: str | None) -> float | None:
    return None if text is None else float(text)


def _record(flat: list[str]) -> TaskRecord:
    """A TaskRecord from a task hash as HGETALL answers it (a missing field is None)."""
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    result, error = h.get("result"), h.get("error")
    return TaskRecord(
        n=int(h["n"]),
        id=h["id"],
        principal=h["principal"],
        name=h["name"],
        args=json.loads(h["args"]),
        state=TaskState(h["state"]),
        progress=_maybe_float(h.get("progress")),
        message=h.get("message"),
        result=json.loads(result) if result is not None else None,
        error=json.loads(error) if error is not None else None,
        attempt=int(h["attempt"]),
        max_attempts=int(h["max_attempts"]),
        failures=int(h["failures"]),
        lost=int(h["lost"]),
        uncharged=int(h["uncharged"]),
        max_lost=int(h["max_lost"]),
        next_attempt_at=_maybe_float(h.get("next_attempt_at")),
        timeout=_maybe_float(h.get("timeout")),
        cancel_requested=h.get("cancel_requested") == "1",
        idempotency_key=h.get("idempotency_key"),
        lease_owner=h.get("lease_owner"),
        lease_until=_maybe_float(h.get("lease_until")),
        created_at=float(h["created_at"]),
        started_at=_maybe_float(h.get("started_at")),
        finished_at=_maybe_float(h.get("finished_at")),
        updated_at=float(h["updated_at"]),
        pn=int(h["pn"]),
    )


def _event(reply: list[Any], data: dict[str, Any] | None = None) -> Event:
    """An Event from a script's answer {seq, type, principal, task id, attempt, data, ts};
    `data` is the dict the caller encoded (else the text is parsed)."""
    seq, etype, principal, task_id, attempt, text, ts = reply
    return Event(int(seq), task_id, principal, EventType(etype), float(ts), int(attempt),
                 json.loads(text) if data is None else data)  # fmt: skip


def _entry_event(principal: str, entry_id: str, fields: list[str]) -> Event:
    """An Event from an entry of a principal's stream (fields t, y, ts, a, d)."""
    f = dict(zip(fields[::2], fields[1::2], strict=True))
    return Event(int(entry_id.split("-", 1)[0]), f["t"], principal, EventType(f["y"]),
                 float(f["ts"]), int(f["a"]), json.loads(f["d"]))  # fmt: skip


def _search_texts(rec: TaskRecord, flat: dict[str, str]) -> tuple[str, ...]:
    """What a search matches of a task: id, name, args, message and result (as the
    SQLite index holds them: the JSON texts, the result's first characters)."""
    return (rec.id, rec.name, flat["args"], rec.message or "",
            flat.get("result", "")[:_RESULT_CHARS])  # fmt: skip


class RedisTaskStore:
    """The ledger and the log in Redis. Thread-safe (a connection pool); one per process.

    Args:
        url: a redis:// (or rediss://, unix://) URL with its database number.
        namespace: the prefix of every key, so several Heralds can share one database.
        client: a redis-py client to use instead of one made from `url` (it must decode
            responses).
    """

    # `batch()` groups nothing: a caller must not count on an exception undoing the
    # writes made inside it (the worker then retries only what failed).
    atomic_batches = False

    def __init__(self, url: str, *, namespace: str = "herald",
                 client: redis.Redis | None = None) -> None:  # fmt: skip
        self.url = url
        self.namespace = namespace
        self._r: redis.Redis = client or redis.Redis.from_url(url, decode_responses=True)
        self._ns = namespace
        register = self._r.register_script
        prelude = _lua.PRELUDE
        self._create = register(prelude + _lua.CREATE)
        self._claim = register(prelude + _lua.CLAIM)
        self._progress = register(prelude + _lua.PROGRESS)
        self._output = register(prelude + _lua.OUTPUT)
        self._finish = register(prelude + _lua.FINISH)
        self._retry_later = register(prelude + _lua.RETRY_LATER)
        self._lose = register(prelude + _lua.LOSE)
        self._cancel = register(prelude + _lua.CANCEL)
        self._delete = register(prelude + _lua.DELETE)
        self._renew = register(prelude + _lua.RENEW)
        self._leased = register(prelude + _lua.LEASED)
        self._running = register(prelude + _lua.RUNNING)
        self._queued = register(prelude + _lua.QUEUED)
        self._page = register(prelude + _lua.PAGE)
        self._task_events = register(prelude + _lua.TASK_EVENTS)
        self._activity = register(prelude + _lua.ACTIVITY)
        self._prune = register(prelude + _lua.PRUNE)

    def _run(self, script: Any, *args: Any) -> Any:
        return script(args=[self._ns, *args])

    def _key(self, *parts: str) -> str:
        return ":".join((self._ns, *parts))

    def close(self) -> None:
        self._r.close()

    @property
    def in_transaction(self) -> bool:
        """Always False: no write waits for a later one (see `batch`)."""
        return False

    @contextmanager
    def batch(self, *, isolated: bool = True) -> Iterator[None]:
        """The SQLite store's group commit, here a plain block: each write is one script,
        atomic and durable on its own (as far as Redis's persistence goes) when it
        returns. Nothing is undone when the block raises."""
        yield

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
        """Record a new task and its "queued" event (see `TaskStore.create_task`).

        Returns:
            The task and its queued event; with an idempotency key already used by this
            principal, the existing task and None.
        """
        task_id = uuid.uuid4().hex
        data: dict[str, Any] = {"name": name, "args": args, "max_attempts": max_attempts}
        if timeout is not None:
            data["timeout"] = timeout
        args_text = compact(args)
        reply = self._run(self._create, principal, task_id, name, args_text, int(max_attempts),
                          int(max_lost), _opt(_float(timeout)), _opt(idempotency_key),
                          compact(data))  # fmt: skip
        if reply[0] == 0:
            return _record(reply[1]), None
        _, n, pn, now_text, ev = reply
        now = float(now_text)
        rec = TaskRecord(
            n=int(n), id=task_id, principal=principal, name=name, args=json.loads(args_text),
            state=TaskState.QUEUED, progress=None, message=None, result=None, error=None,
            attempt=0, max_attempts=max_attempts, failures=0, lost=0, uncharged=0,
            max_lost=max_lost, next_attempt_at=None,
            timeout=None if timeout is None else float(timeout), cancel_requested=False,
            idempotency_key=idempotency_key, lease_owner=None, lease_until=None,
            created_at=now, started_at=None, finished_at=None, updated_at=now, pn=int(pn),
        )  # fmt: skip
        return rec, _event(ev, data)

    def get_task(self, task_id: str, principal: str | None = None) -> TaskRecord | None:
        """The task, or None if it does not exist or belongs to another principal."""
        flat = self._r.execute_command("HGETALL", self._key("t", task_id))
        if not flat:
            return None
        rec = _record(_flat(flat))
        if principal is not None and rec.principal != principal:
            return None
        return rec

    def tasks_by_id_prefix(self, prefix: str, principal: str, limit: int = 10) -> list[str]:
        """The ids of the principal's tasks that start with `prefix` (lowercase hex), in
        order, at most `limit` (a ZRANGEBYLEX over the principal's own ids)."""
        if not prefix or any(ch not in "0123456789abcdef" for ch in prefix):
            return []
        ids = self._r.zrangebylex(self._key("ids", principal), "[" + prefix, "(" + prefix + "g",
                                  start=0, num=limit)  # fmt: skip
        return list(cast(list[str], ids))

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
        """The principal's tasks, newest first; `before` is the `pn` of the last one seen.

        Args:
            query: only tasks matching this search (`services.core.search`), matched task
                by task newest first until `limit` are found.
            name: only tasks of this name.
            since, until: only tasks submitted at or after / before these wall times
                (submission times grow with pn: the walk stops at the first one before
                `since`).
        """
        if limit <= 0:
            return []
        wanted = {s.value for s in states} if states else None
        # Queued and running tasks only: their own index (few), not the whole history.
        index = "active" if wanted and wanted <= _ACTIVE else "pn"
        filtered = bool(wanted or query or name or until is not None)
        page = _PAGE if filtered else limit
        found: list[TaskRecord] = []
        below = before
        while len(found) < limit:
            rows = self._run(self._page, principal, _opt(None if below is None else str(below)),
                             page, index)  # fmt: skip
            for flat in rows:
                h = dict(zip(flat[::2], flat[1::2], strict=True))
                below = int(h["pn"])
                created = float(h["created_at"])
                if since is not None and created < since:
                    return found
                if wanted is not None and h["state"] not in wanted:
                    continue
                if name is not None and h["name"] != name:
                    continue
                if until is not None and created >= until:
                    continue
                rec = _record(flat)
                if query and not query.matches(_search_texts(rec, h)):
                    continue
                found.append(rec)
                if len(found) >= limit:
                    break
            if len(rows) < page:
                break
        return found

    def request_cancel(
        self, task_id: str, principal: str
    ) -> tuple[TaskRecord | None, Event | None]:
        """Cancel a queued task at once; ask a running one to stop at its next checkpoint.

        Returns:
            The task after the request (None if unknown) and the event recorded, if any.
        """
        reply = self._run(self._cancel, task_id, principal)
        if not reply:
            return None, None
        rec = _record(reply[0])
        return rec, (_event(reply[1]) if len(reply) > 1 else None)

    def delete_task(self, task_id: str, principal: str) -> TaskRecord | None:
        """Forget a finished task: its ledger entry goes (its events stay in the log until
        retention takes them by age).

        Returns:
            The task as it was; None if unknown or another principal's. A task that is not
            finished is returned unchanged and not deleted.
        """
        reply = self._run(self._delete, task_id, principal)
        return _record(reply[0]) if reply else None

    # -------------------------------------------------------------- worker side

    def claim(
        self, task_id: str, worker: str, lease_seconds: float, *, limit: int | None = None
    ) -> tuple[TaskRecord | None, Event | None]:
        """Start the next attempt of a queued task, leased to `worker` until the server's
        clock passes now + `lease_seconds`.

        Args:
            limit: at most this many tasks of the same name may run at once (on any
                worker; a per-name count kept by the scripts); None: no limit.

        Returns:
            (task, "started" event), or (None, None) if the task may not start now.
        """
        reply = self._run(self._claim, task_id, worker, repr(float(lease_seconds)),
                          _opt(None if limit is None else str(int(limit))))  # fmt: skip
        if not reply:
            return None, None
        return _record(reply[0]), _event(reply[1])

    def progress(
        self, task_id: str, attempt: int, fraction: float | None, message: str | None
    ) -> Event | None:
        """Record progress of a running attempt (ignored if the attempt is no longer current)."""
        data = {"fraction": fraction, "message": message}
        reply = self._run(self._progress, task_id, str(int(attempt)), _opt(_float(fraction)),
                          _opt(message), compact(data))  # fmt: skip
        return _event(reply, data) if reply else None

    def output(self, task_id: str, attempt: int, lines: list[str]) -> Event | None:
        """Record output lines of a running attempt."""
        data = {"lines": lines}
        reply = self._run(self._output, task_id, str(int(attempt)), compact(data))
        return _event(reply, data) if reply else None

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
        progress = None
        if state is TaskState.SUCCEEDED:
            data: dict[str, Any] = {"result": result}
            etype, message, progress = EventType.SUCCEEDED, "-", "1.0"
        elif state is TaskState.FAILED:
            data = {"error": error}
            etype, message = EventType.FAILED, _opt((error or {}).get("message"))
        else:
            data = {"reason": reason or "cancelled", **(extra or {})}
            etype, message = EventType.CANCELLED, _opt(cancelled_message(data))
        if extra:
            data.update(extra)
        reply = self._run(
            self._finish, task_id, str(int(attempt)), state.value,
            _opt(compact(result) if result is not None else None),
            _opt(compact(error) if error is not None else None), message, _opt(progress),
            etype.value, compact(data),
        )  # fmt: skip
        return _event(reply, data) if reply else None

    def renew_leases(self, worker: str, lease_seconds: float,
                     task_ids: list[str] | None = None) -> None:  # fmt: skip
        """Extend the leases of the tasks this worker is running (all, or these)."""
        if task_ids is not None and not task_ids:
            return
        self._run(self._renew, worker, repr(float(lease_seconds)), *(task_ids or ()))

    def leased_to(self, worker: str) -> list[tuple[str, int]]:
        """(id, attempt) of every running task leased to this worker."""
        flat = self._run(self._leased, worker, "all")
        return [(flat[i], int(flat[i + 1])) for i in range(0, len(flat), 2)]

    def task_name(self, task_id: str) -> str | None:
        """The name of a task (one field: cheaper than get_task)."""
        return cast(str | None, self._r.hget(self._key("t", task_id), "name"))

    def cancel_requested(self, worker: str) -> set[str]:
        """Ids of tasks running under this worker whose cancellation was requested."""
        flat = self._run(self._leased, worker, "cancel")
        return set(flat[::2])

    def retry_later(
        self,
        task_id: str,
        attempt: int,
        *,
        delay: float,
        error: dict[str, Any],
        requested: bool = False,
    ) -> Event | None:
        """Queue a failed attempt's task again, to run `delay` seconds from now (the
        server's clock); see `TaskStore.retry_later`.

        Returns the "retrying" event, or None if the attempt is no longer current.
        """
        reason = RetryReason.REQUESTED if requested else RetryReason.FAILED
        message = retry_message(reason, error.get("message"))
        reply = self._run(
            self._retry_later,
            task_id,
            str(int(attempt)),
            repr(float(delay)),
            compact(error),
            message,
            reason.value,
            compact(round(delay, 3)),
        )
        return _event(reply) if reply else None

    def _lose_one(
        self, task_id: str, attempt: int, *, stopped: bool, detail: str | None, check: str,
        owner: str | None,
    ) -> tuple[TaskRecord | None, Event | None]:  # fmt: skip
        reply = self._run(
            self._lose, task_id, str(int(attempt)), "1" if stopped else "0", _opt(detail),
            check, _opt(owner), retry_message(RetryReason.WORKER_LOST),
            retry_message(RetryReason.WORKER_STOPPED), CANCELLED_MESSAGE,
            ErrorCode.WORKER_LOST.value,
        )  # fmt: skip
        if not reply:
            return None, None
        return _record(reply[0]), _event(reply[1])

    def lose(
        self, task_id: str, attempt: int, *, stopped: bool = False, detail: str | None = None
    ) -> tuple[TaskRecord | None, Event | None]:
        """An attempt ended without an outcome: its process died (`stopped=False`), or the
        worker gave it back as it stopped (`stopped=True`); see `TaskStore.lose`.

        Returns:
            The task as it was (None if the attempt is no longer current) and the event.
        """
        return self._lose_one(task_id, attempt, stopped=stopped, detail=detail,
                              check="current", owner=None)  # fmt: skip

    def reap(
        self, *, live_worker: str | None = None, release: str | None = None
    ) -> tuple[list[TaskRecord], list[Event]]:
        """Recover running tasks whose worker is gone (any worker may call it: no single
        reaper).

        A lease is dead when it expired by the server's clock, or when its owner is a
        process on this host that no longer exists (and is not `live_worker`), or when its
        owner is `release`. Each is lost in a script that checks it is still the same
        attempt under the same owner (and, for an expiry, still expired), so two reapers
        never both re-queue one task.

        Returns:
            The tasks re-queued (the caller must enqueue them again) and every event recorded.
        """
        now_text, *rows = self._run(self._running)
        now = float(now_text)
        requeued: list[TaskRecord] = []
        events: list[Event] = []
        for task_id, owner_text, attempt, until in rows:
            owner = owner_text or None
            if release is not None:
                if owner != release:
                    continue
                check = "owner"
            elif owner == live_worker:
                continue
            elif not until or float(until) < now:
                check = "expired"
            elif owner is None or lease_owner_alive(owner) is False:
                check = "owner"
            else:
                continue
            rec, ev = self._lose_one(
                task_id, int(attempt), stopped=release is not None,
                detail=None if release else "its worker was gone", check=check, owner=owner,
            )  # fmt: skip
            if rec is None or ev is None:
                continue  # it moved on meanwhile
            events.append(ev)
            if ev.type is EventType.RETRYING:
                requeued.append(rec)
        return requeued, events

    def queued_ids(self, *, unchanged_since: float | None = None) -> list[str]:
        """Ids of queued tasks that may run now, oldest first (not those waiting for a
        retry's time); optionally only those not updated since `unchanged_since`."""
        return list(self._run(self._queued, _opt(_float(unchanged_since))))

    def next_retries(self, limit: int = 100) -> list[tuple[str, float]]:
        """(id, next_attempt_at) of queued tasks waiting for a retry, soonest first."""
        if limit <= 0:
            return []
        rows = self._r.zrange(self._key("retries"), 0, limit - 1, withscores=True)
        return [(tid, float(at)) for tid, at in cast(list[tuple[str, float]], rows)]

    # ----------------------------------------------------------------- the log

    def pruned_through(self, principal: str) -> int:
        """The highest seq of the principal's events that may be gone: what retention
        deleted, or the floor its counter was created at (0: none)."""
        value = self._r.hget(self._key("pruned"), principal)
        return int(cast(str, value)) if value is not None else 0

    def pruned_marks(self) -> dict[str, int]:
        """Every principal's `pruned_through` (those that have one)."""
        marks = cast(dict[str, str], self._r.hgetall(self._key("pruned")))
        return {p: int(t) for p, t in marks.items()}

    def epoch(self, principal: str) -> float | None:
        """When the principal's counter was created (server time), None if it has none:
        a later epoch than expected means its log was lost and started over."""
        value = self._r.hget(self._key("p", principal), "epoch")
        return float(cast(str, value)) if value is not None else None

    def prune_batch(self, *, finished_before: float | None = None,
                    keep: int | None = None, limit: int = 200) -> PruneResult:  # fmt: skip
        """Delete up to `limit` finished tasks with their events, in one script.

        A finished task goes when it finished before `finished_before` (a wall time), or
        when it is not among the `keep` most recently submitted finished tasks. Events left
        by tasks deleted from the ledger go once their last event is older than
        `finished_before`. Each principal's `pruned_through` is raised to the highest seq
        deleted.

        Returns:
            How many tasks and events it deleted.
        """
        if finished_before is None and keep is None:
            return PruneResult()
        tasks, events = self._run(self._prune, _opt(_float(finished_before)),
                                  _opt(None if keep is None else str(max(0, int(keep)))),
                                  max(1, int(limit)))  # fmt: skip
        return PruneResult(int(tasks), int(events))

    def prune(self, *, older_than: float | None = None, keep: int | None = None,
              batch: int = 200, pause: float = 0.01, wal_limit: int = 0,
              stop: Callable[[], bool] | None = None) -> PruneResult:  # fmt: skip
        """Retention: delete finished tasks older than `older_than` seconds, or beyond the
        `keep` newest, with their events, `batch` tasks per script and `pause` seconds
        between scripts, so that no other client waits long (Redis runs one script at a
        time). `wal_limit` is the SQLite store's and means nothing here."""
        before = None if older_than is None else self._server_time() - older_than
        total = PruneResult()
        while True:
            done = self.prune_batch(finished_before=before, keep=keep, limit=batch)
            total += done
            if (done.tasks < batch and done.events < batch * 4) or (stop and stop()):
                return total
            if pause:
                time.sleep(pause)

    def _server_time(self) -> float:
        sec, usec = cast(tuple[int, int], self._r.time())
        return sec + usec / 1e6

    def sizes(self) -> dict[str, int]:
        """Redis's memory (for health and the bench): used_memory, in bytes."""
        info = cast(dict[str, Any], self._r.info("memory"))
        return {"used_memory": int(info["used_memory"])}

    def activity(self, principal: str, start: float, end: float,
                 bucket: float) -> _activity.Activity:  # fmt: skip
        """The principal's tasks finished in [start, end): counts per bucket of `bucket`
        seconds and outcome, and each task type's counts and p50/p95 run durations over
        its newest MAX_DURATIONS runs (see `services.store.activity`). Read from the
        principal's set of finished tasks, a page per round trip (not one snapshot: a task
        finishing meanwhile may be counted or not)."""
        if bucket <= 0 or end <= start:
            raise ValueError("the window must be non-empty and its buckets positive")
        rows: list[tuple[str, str, float | None, float]] = []
        offset = 0
        while True:
            seen, flat = self._run(self._activity, principal, repr(float(start)),
                                   repr(float(end)), offset, _ACTIVITY_PAGE)  # fmt: skip
            for i in range(0, len(flat), 4):
                name, state, started, finished = flat[i : i + 4]
                if finished:
                    rows.append((name, state, float(started) if started else None,
                                 float(finished)))  # fmt: skip
            offset += int(seen)
            if int(seen) < _ACTIVITY_PAGE:
                break
        return summarize_activity(rows, start, end, bucket)

    def head(self, principal: str | None = None) -> int:
        """The seq of the principal's newest event (0 before its first).

        Raises:
            NotImplementedError: without a principal (the SQLite notifier's global log
                position: notifier nodes on Redis read per principal).
        """
        if principal is None:
            raise NotImplementedError(
                "RedisTaskStore has no global log position: read per principal "
                "(head(principal), events_after(after, principal=...))"
            )
        value = self._r.hget(self._key("p", principal), "head")
        return int(cast(str, value)) if value is not None else 0

    def events_after(
        self, after: int, *, principal: str | None = None, task_id: str | None = None,
        limit: int = 1000, max_bytes: int | None = None,
    ) -> list[Event]:  # fmt: skip
        """Events after seq `after` (the principal's own), oldest first: of one principal
        (its stream, from `(after-0`) or of one task (its seqs, each read from its
        principal's stream), at most `limit`.

        Args:
            max_bytes: stop after the event whose data brings the page past this many
                bytes (a page holds at least one event).

        Raises:
            NotImplementedError: with neither a principal nor a task (the SQLite
                notifier's global fan-out).
        """
        if limit <= 0:
            return []
        start = f"({max(0, int(after))}-0"
        if task_id is not None:
            rows = [(p, entry, fields) for p, entry, fields in self._run(
                self._task_events, task_id, str(max(0, int(after))), int(limit),
                _opt(principal))]  # fmt: skip
        elif principal is not None:
            entries = self._r.xrange(self._key("log", principal), start, "+", count=limit)
            rows = [(principal, entry, _pairs(fields)) for entry, fields in
                    cast(list[tuple[str, dict[str, str]]], entries)]  # fmt: skip
        else:
            raise NotImplementedError(
                "RedisTaskStore has no global log: read per principal or per task"
            )
        events: list[Event] = []
        size = 0
        for p, entry, fields in rows:
            ev = _entry_event(p, entry, fields)
            events.append(ev)
            if max_bytes is not None:
                size += len(fields[fields.index("d") + 1])
                if size > max_bytes:
                    break
        return events


def _flat(value: Any) -> list[str]:
    """HGETALL's answer as a flat [field, value, ...] list (redis-py may give a dict)."""
    if isinstance(value, dict):
        return [x for kv in value.items() for x in kv]
    return list(value)


def _pairs(fields: dict[str, str] | list[str]) -> list[str]:
    if isinstance(fields, dict):
        return [x for kv in fields.items() for x in kv]
    return list(fields)


def summarize_activity(
    rows: list[tuple[str, str, float | None, float]], start: float, end: float, bucket: float,
    max_durations: int = _activity.MAX_DURATIONS,
) -> _activity.Activity:  # fmt: skip
    """`services.store.activity.query_activity`'s figures from (name, state, started_at,
    finished_at) rows of tasks finished in [start, end), with the same rules."""
    nbuckets = -int(-(end - start) // bucket)
    buckets = [_activity.Bucket(start + i * bucket, dict.fromkeys(_activity.OUTCOMES, 0))
               for i in range(nbuckets)]  # fmt: skip
    per_type: dict[str, dict[str, int]] = {}
    for name, state, _, finished in rows:
        b = int((finished - start) / bucket)
        if state not in _activity.OUTCOMES or not 0 <= b < nbuckets:
            continue
        buckets[b].counts[state] += 1
        per_type.setdefault(name, dict.fromkeys(_activity.OUTCOMES, 0))[state] += 1
    runs: dict[str, list[float]] = {}
    timed = sorted((r for r in rows if r[2] is not None), key=lambda r: r[3], reverse=True)
    for name, _, started, finished in timed[:max_durations]:
        runs.setdefault(name, []).append(max(0.0, finished - cast(float, started)))
    tasks = []
    for name, counts in per_type.items():
        ds = sorted(runs.get(name, ()))
        tasks.append(_activity.TaskTypeStats(
            name, sum(counts.values()), counts, len(ds),
            _activity.percentile(ds, 50) if ds else None,
            _activity.percentile(ds, 95) if ds else None, ds[-1] if ds else None,
        ))  # fmt: skip
    tasks.sort(key=lambda t: (-t.n, t.name))
    return _activity.Activity(start, end, bucket, buckets, tasks)
