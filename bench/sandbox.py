"""What confining each attempt costs: `python -m bench sandbox [--tasks N]`.

Runs a no-op task N times, one after another, through a real dispatcher and its executor
processes (in this process, its loop in a thread), confined (a fork per attempt and the
owner's Landlock rules) and not (the attempt in the executor itself), interleaved; prints
the median time from enqueue to the recorded outcome of each, and what the rules alone
take in a forked process. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from services import landlock
from services.core.states import TaskState
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store import TaskStore
from services.tasks.catalog import Catalog
from services.wake import WakeSender
from services.worker import sandbox
from services.worker.dispatcher import Dispatcher

catalog = Catalog()


@catalog.task("bench.noop")
def noop(ctx):
    return None


class Worker:
    def __init__(self, root: Path, confine: bool) -> None:
        root.mkdir(mode=0o700)
        self.layout = DataLayout(root)
        self.store = TaskStore(self.layout.ledger_db)
        self.queue = TaskQueue(self.layout)
        self.dispatcher = Dispatcher(self.layout, catalog, 1, confine=confine)
        self.wake = WakeSender(self.layout.wake_address("worker"))
        self.thread = threading.Thread(target=self.dispatcher.run)
        self.thread.start()

    def one(self, principal: str = "a") -> float:
        rec, _ = self.store.create_task(principal=principal, name="bench.noop", args={},
                                        max_attempts=1, max_lost=1, timeout=None)  # fmt: skip
        start = time.perf_counter()
        self.queue.enqueue(rec.id)
        self.wake.wake(b"!" + rec.id.encode())
        while self.store.get_task(rec.id).state is not TaskState.SUCCEEDED:
            time.sleep(0.0002)
        return time.perf_counter() - start

    def close(self) -> None:
        self.dispatcher.stop()
        self.thread.join(15)
        self.wake.close()
        self.store.close()


def rules_cost(deny: list[str], runs: int = 20) -> tuple[float, int]:
    """Median ms to plan and apply the owner's rules in a forked process, and their count."""
    times = []
    for _ in range(runs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            start = time.perf_counter()
            sandbox.confine(sandbox.owner_policy(deny))
            os.write(w, str(time.perf_counter() - start).encode())
            os._exit(0)
        os.close(w)
        with os.fdopen(r) as f:
            times.append(float(f.read()))
        os.waitpid(pid, 0)
    return statistics.median(times) * 1000, len(sandbox.plan(sandbox.owner_policy(deny)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench sandbox", description=__doc__)
    p.add_argument("--tasks", type=int, default=200)
    args = p.parse_args(argv)
    support = landlock.support()
    print(f"sandbox: {support.describe()}")
    if not support.available:
        return 0
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        confined = Worker(Path(tmp) / "confined", True)
        plain = Worker(Path(tmp) / "plain", False)
        fresh = Worker(Path(tmp) / "fresh", True)  # each attempt another principal's
        try:
            for w in (confined, plain, fresh):
                for _ in range(10):
                    w.one()  # warm up
            a, b, c = [], [], []
            for i in range(args.tasks):
                a.append(confined.one())
                b.append(plain.one())
                c.append(fresh.one(f"p{i}"))  # a principal whose process is new
        finally:
            confined.close()
            plain.close()
            fresh.close()
        ms, count = rules_cost(confined.dispatcher.own_dirs)
    ca, cb = statistics.median(a) * 1000, statistics.median(b) * 1000
    cc = statistics.median(c) * 1000
    print(f"no-op attempt, enqueue to outcome, median of {args.tasks}: confined {ca:.2f} ms "
          f"(the principal's process reused), {cc:.2f} ms (a new one for another principal), "
          f"unconfined {cb:.2f} ms: {ca - cb:+.2f} / {cc - cb:+.2f} ms per attempt")
    around = ", ".join(confined.dispatcher.own_dirs)
    print(f"the owner's rules alone ({count} of them, around {around}), planned and applied "
          f"in a fresh process: {ms:.2f} ms (an executor builds them once and reuses them "
          "while the folders they were planned from are unchanged)")
    return 0
