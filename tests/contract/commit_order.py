"""Commit order, tested for real: writer processes, each with its own store, record events
of one principal as fast as they can while a reader process tails that principal's log
from its cursor, as the notifier does. A reader that is ever shown seq N+1 before N (a
number taken, then committed after a larger one) skips N for good: the check counts every
such jump, and compares what the reader saw with the final log.

The children are spawned (no fork: each opens its store from plain strings, as another
service or host would), so what they run lives here, in a module they can import.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import queue
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.core.states import TaskState
from services.store.sqlite import TaskStore
from tests.contract.backends import Backend

WRITE_SECONDS = 1.0  # how long the writers write (a bound on the test, not a figure)
JOIN_TIMEOUT = 60.0


@dataclass
class Outcome:
    """What one run saw."""

    written: dict[str, list[int]] = field(default_factory=dict)  # principal -> seqs returned
    seen: list[int] = field(default_factory=list)  # the reader's seqs, in the order it read
    jumps: list[tuple[int, int]] = field(default_factory=list)  # (cursor, seq read after it)
    final: list[int] = field(default_factory=list)  # the principal's log at the end


def _open(module: str, cls: str, location: str) -> Any:
    return Backend("child", module, cls, lambda request: location).open(location)


def _writer(module: str, cls: str, location: str, principal: str, worker: str, ready: Any,
            go: Any, stop: Any, results: Any) -> None:  # fmt: skip
    store = _open(module, cls, location)
    seqs: list[int] = []
    ready.put(worker)
    go.wait()
    i = 0
    while not stop.is_set():
        rec, ev = store.create_task(principal=principal, name="order", args={"i": i})
        seqs.append(ev.seq)
        _, started = store.claim(rec.id, worker, 60)
        seqs.append(started.seq)
        for k in range(2):
            seqs.append(store.progress(rec.id, 1, k / 2, f"step {k}").seq)
        seqs.append(store.finish(rec.id, 1, TaskState.SUCCEEDED, result=i).seq)
        i += 1
    store.close()
    results.put((principal, seqs))


def _reader(module: str, cls: str, location: str, principal: str, ready: Any, go: Any,
            writers_done: Any, results: Any) -> None:  # fmt: skip
    store = _open(module, cls, location)
    cursor = 0
    seen: list[int] = []
    jumps: list[tuple[int, int]] = []
    ready.put("reader")
    go.wait()
    while True:
        finishing = writers_done.is_set()  # read once more after they are all done
        page = store.events_after(cursor, principal=principal, limit=500)
        for ev in page:
            # (The first seq is the backend's: see checks.origin. What follows must not jump.)
            if seen and ev.seq != cursor + 1:
                jumps.append((cursor, ev.seq))
            seen.append(ev.seq)
            cursor = max(cursor, ev.seq)
        if finishing and not page:
            break
    store.close()
    results.put(("reader", (seen, jumps)))


def _get(q: Any, procs: list[Any]) -> Any:
    """The next report on `q`; fails at once if a child died instead of reporting."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    while time.monotonic() < deadline:
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise AssertionError(f"{dead[0].name} exited with {dead[0].exitcode}") from None
    raise AssertionError("a writer or the reader did not report in time")


def run(backend: Backend, location: str, *, writers: int = 3, principal: str = "a",
        others: int = 1) -> Outcome:  # fmt: skip
    """`writers` processes writing for `principal` and `others` for another principal
    ("b"), a reader tailing `principal`, all at once for WRITE_SECONDS."""
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go, stop, writers_done = ctx.Event(), ctx.Event(), ctx.Event()
    where = (backend.module, backend.cls, location)
    procs = [
        ctx.Process(target=_writer, args=(*where, p, f"w{n}", ready, go, stop, results))
        for n, p in enumerate([principal] * writers + ["b"] * others)
    ]
    reader = ctx.Process(target=_reader, args=(*where, principal, ready, go, writers_done, results))
    everyone = [*procs, reader]
    outcome = Outcome()
    try:
        for p in everyone:
            p.start()
        for _ in everyone:
            _get(ready, everyone)
        go.set()
        time.sleep(WRITE_SECONDS)
        stop.set()
        for _ in procs:
            who, seqs = _get(results, everyone)
            outcome.written.setdefault(who, []).extend(seqs)
        writers_done.set()
        who, (outcome.seen, outcome.jumps) = _get(results, everyone)
        assert who == "reader"
        for p in everyone:
            p.join(JOIN_TIMEOUT)
            assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"
    finally:
        for p in everyone:
            if p.is_alive():
                p.kill()
                p.join()
    store = backend.open(location)
    try:
        after = 0
        while page := store.events_after(after, principal=principal, limit=1000):
            outcome.final += [e.seq for e in page]
            after = page[-1].seq
    finally:
        store.close()
    return outcome


# -- a store that gets commit order wrong, to show the check catches it ------------------------


class SeqsOutsideTheTransaction(TaskStore):
    """Deliberately broken: each write takes its event's seq from a counter shared by every
    process (a locked file) *before* its transaction begins, as a store would that asks a
    server for the next number and then writes. Another writer can take the next number
    and commit first: a reader is then shown N+1 while N is still to come."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path)
        self._counter = Path(f"{path}.counter")
        self._reserved: list[int] = []

    def _take(self) -> int:
        fd = os.open(self._counter, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            value = int(os.read(fd, 32) or b"0") + 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, str(value).encode())
            return value
        finally:
            os.close(fd)

    @contextmanager
    def _write(self):  # type: ignore[no-untyped-def, override]
        if not self._depth:
            self._reserved.append(self._take())  # the number first, outside the transaction
        with super()._write() as c:
            yield c

    def _append(self, c, task_id, principal, etype, attempt, data, now):  # type: ignore[no-untyped-def]
        from services.core.events import Event
        from services.core.jsontext import compact

        pseq = self._reserved.pop()
        cur = c.execute(
            "INSERT INTO events (task_id, principal, type, ts, attempt, data, pseq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (task_id, principal, etype.value, now, attempt, compact(data), pseq),
        )
        return Event(pseq, task_id, principal, etype, now, attempt, data,
                     log_pos=cur.lastrowid or 0)  # fmt: skip
