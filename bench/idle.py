"""The services' CPU while idle, per service, for this tree and optionally another, interleaved.

Each tree runs a `herald serve` with the clients of `bench.compare.Tree` connected (20
principals and 20 subscribed connections of the owner, plus one: 41 event streams, HTTP
connections kept alive). Each round, for each tree in turn (the order alternates, ABBA): a
burst of 400 tasks, `--settle` s for its WAL checkpoint, then the CPU of each service's
process tree over `--idle` s of doing nothing (what `Tree.idle` measures, in % of one core),
and of `herald serve` itself (the supervisor); and the wake-ups of each (voluntary context
switches of all their threads, per minute).

    python -m bench idle [OTHER_TREE] [--rounds N] [--idle S] [--settle S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from pathlib import Path

from bench.compare import Tree
from embedded.procstat import children, cpu_seconds, tree_cpu_seconds

PARTS = ("web", "worker", "notifier", "supervisor")


def _switches(pid: int, tree: bool = True) -> int:
    """Voluntary context switches (sleeps that ended: wake-ups) of every thread of a
    process and, with `tree`, of its live descendants."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    if tree:
        with contextlib.suppress(OSError):
            total += sum(_switches(child) for child in children(pid))
    return total


def _wakeups(tree: Tree) -> dict[str, int]:
    out = {name: _switches(pid) for name, pid in tree.pids.items()}
    if tree.serve is not None:
        out["supervisor"] = _switches(tree.serve.pid, tree=False)
    return out


def _readings(tree: Tree) -> dict[str, float]:
    out = {name: tree_cpu_seconds(pid) for name, pid in tree.pids.items()}
    if tree.serve is not None:
        out["supervisor"] = cpu_seconds(tree.serve.pid)
    return out


async def idle_split(tree: Tree, seconds: float, settle: float) -> dict[str, float]:
    """% of one core each part used over `seconds` of idle after `settle` s; "services":
    the three services together (the figure of `Tree.idle`)."""
    await asyncio.sleep(settle)
    before, woken, t0 = _readings(tree), _wakeups(tree), time.perf_counter()
    await asyncio.sleep(seconds)
    after, elapsed = _readings(tree), time.perf_counter() - t0
    out = {name: (after[name] - before[name]) / elapsed * 100 for name in after}
    out["services"] = sum(out[n] for n in ("web", "worker", "notifier"))
    for name, count in _wakeups(tree).items():
        # (A thread that ended meanwhile takes its count along: at least this many.)
        out[f"{name} wake-ups/min"] = max(0, count - woken[name]) / elapsed * 60
    return out


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} ({min(values):.4f}-{max(values):.4f})"


async def run(args: argparse.Namespace) -> int:
    roots = [Path(__file__).resolve().parents[1]]
    if args.other:
        roots.append(Path(args.other).resolve())
    trees = [Tree(root) for root in roots]
    figures: list[list[dict[str, float]]] = [[] for _ in trees]
    print(
        f"Idle CPU, % of one core ({os.cpu_count()} cores): {args.rounds} rounds of a 400-task "
        f"burst, {args.settle:g} s settle, {args.idle:g} s idle",
        flush=True,
    )
    try:
        for tree in trees:
            await tree.start()
        for i in range(args.rounds):
            order = list(range(len(trees)))
            if i % 2:
                order.reverse()
            for k in order:
                await trees[k].burst(400)
                got = await idle_split(trees[k], args.idle, args.settle)
                figures[k].append(got)
                print(f"  round {i + 1} {trees[k].root}: services {got['services']:.4f} ("
                      + ", ".join(f"{n} {got[n]:.4f}" for n in PARTS if n in got)
                      + "); wake-ups/min " + ", ".join(
                          f"{n} {got[f'{n} wake-ups/min']:.0f}" for n in PARTS
                          if f"{n} wake-ups/min" in got), flush=True)  # fmt: skip
    finally:
        for tree in trees:
            await tree.stop()
    print("\nmedian (min-max) over the rounds, % of one core")
    for tree, rows in zip(trees, figures, strict=True):
        if not rows:
            continue
        print(f"{tree.root}")
        for name in ("services", *PARTS):
            print(f"  {name:<12} {_cell([r[name] for r in rows if name in r])}")
        print("  wake-ups per minute: " + ", ".join(
            f"{n} {statistics.median(r[f'{n} wake-ups/min'] for r in rows):.0f}"
            for n in PARTS if f"{n} wake-ups/min" in rows[0]))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench idle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("other", nargs="?", help="another checkout of Herald, measured interleaved")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--idle", type=float, default=30.0, help="seconds of idle measured")
    p.add_argument("--settle", type=float, default=5.0, help="seconds after the burst first")
    return asyncio.run(run(p.parse_args(argv)))
