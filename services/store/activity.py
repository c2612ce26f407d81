"""What a principal's finished tasks add up to over a window of time: the activity view's data.

Two queries, each one pass over the principal's tasks finished in the window, through the
covering index `tasks_principal_finished` (principal, finished_at, state, name, started_at):

1. counts per (bucket, task name, outcome): the chart's stacked bars, and each task type's
   outcome counts;
2. the run durations (finished_at - started_at of the last attempt, for every finished task
   that started, whatever its outcome) of the newest MAX_DURATIONS runs in the window, in
   index order (no sort in SQL): each task type's p50/p95 come from these, so a window of
   any size costs a bounded time and memory. (Ranking every run in SQL with window
   functions was 4x slower than this at 50,000 runs a day.)

Percentiles are nearest-rank: the p-th percentile of n sorted durations is the one of rank
ceil(p * n / 100) (so p50 of 1, 2, 3, 4 is 2, and every percentile is a real run's duration).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from services.core.states import TaskState

# The outcomes counted, in the order a chart stacks them.
OUTCOMES: tuple[str, ...] = (
    TaskState.SUCCEEDED.value,
    TaskState.FAILED.value,
    TaskState.CANCELLED.value,
)

INDEX = (
    "CREATE INDEX IF NOT EXISTS tasks_principal_finished ON tasks "
    "(principal, finished_at, state, name, started_at) WHERE finished_at IS NOT NULL"
)

_COUNTS = """
SELECT CAST((finished_at - :start) / :bucket AS INTEGER) AS b, name, state, COUNT(*)
FROM tasks
WHERE principal = :principal AND finished_at >= :start AND finished_at < :end
GROUP BY b, name, state
"""

# The newest runs whose durations make the percentiles (the counts are always exact).
MAX_DURATIONS = 20_000

_DURATIONS = """
SELECT name, finished_at - started_at FROM tasks
WHERE principal = :principal AND finished_at >= :start AND finished_at < :end
  AND started_at IS NOT NULL
ORDER BY finished_at DESC LIMIT :limit
"""


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank p-th percentile (0 < p <= 100) of sorted, non-empty `ordered`."""
    rank = max(1, -int(-p * len(ordered) // 100))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Bucket:
    """Tasks finished in [start, start + the bucket's length), by outcome."""

    start: float
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class TaskTypeStats:
    """One task type's finished tasks in the window: how many, how they ended, how long
    they ran (seconds; None when none of them started)."""

    name: str
    n: int
    counts: dict[str, int]
    timed: int = 0  # how many of them ran (the durations' count)
    p50: float | None = None
    p95: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True)
class Activity:
    """A principal's finished tasks in [start, end), in buckets of `bucket` seconds."""

    start: float
    end: float
    bucket: float
    buckets: list[Bucket]
    tasks: list[TaskTypeStats] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {o: sum(b.counts[o] for b in self.buckets) for o in OUTCOMES}


def query_activity(
    conn: sqlite3.Connection, principal: str, start: float, end: float, bucket: float,
    max_durations: int = MAX_DURATIONS,
) -> Activity:
    """The activity of `principal` between `start` and `end` (Unix times), in buckets of
    `bucket` seconds from `start` (the last one may be cut by `end`)."""
    if bucket <= 0 or end <= start:
        raise ValueError("the window must be non-empty and its buckets positive")
    nbuckets = -int(-(end - start) // bucket)
    buckets = [Bucket(start + i * bucket, dict.fromkeys(OUTCOMES, 0)) for i in range(nbuckets)]
    per_type: dict[str, dict[str, int]] = {}
    params = {"principal": principal, "start": start, "end": end, "bucket": bucket}
    for b, name, state, count in conn.execute(_COUNTS, params):
        if state not in OUTCOMES or not 0 <= b < nbuckets:
            continue  # a terminal state this view does not know; a float at the edge
        buckets[b].counts[state] += count
        per_type.setdefault(name, dict.fromkeys(OUTCOMES, 0))[state] += count
    runs: dict[str, list[float]] = {}
    for name, d in conn.execute(_DURATIONS, {**params, "limit": max_durations}):
        runs.setdefault(name, []).append(max(0.0, d))
    tasks = []
    for name, counts in per_type.items():
        ds = sorted(runs.get(name, ()))
        tasks.append(TaskTypeStats(
            name, sum(counts.values()), counts, len(ds),
            percentile(ds, 50) if ds else None, percentile(ds, 95) if ds else None,
            ds[-1] if ds else None,
        ))  # fmt: skip
    # The busiest first, then by name: the order a table shows them.
    tasks.sort(key=lambda t: (-t.n, t.name))
    return Activity(start, end, bucket, buckets, tasks)
