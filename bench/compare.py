"""Compare this tree with another checkout of Herald in one run, measurements interleaved.

This machine's speed drifts by a factor of two over minutes: two benchmarks run one after
the other say little. This runs a `herald serve` of each tree at once and alternates short
measurements between them, so that both see the same drift; the client is this tree's.

    python -m bench compare OTHER_TREE [--rounds N]

For each tree: back-to-back latency (p50, p99) with the CPU each service used per task,
throughput from 20 clients (each its own principal) with CPU per task, start to first round
trip (cold starts, interleaved) and the peak RSS of each service during the bursts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.headless import HERALD, Client, launch, pct, stop
from embedded.procstat import children, cpu_seconds, pss_mb, rss_mb, tree_cpu_seconds

CLIENTS = 20


@dataclass
class Tree:
    """One checkout, its running instance and what was measured of it."""

    root: Path
    serve: subprocess.Popen[str] | None = None
    tmp: Path | None = None
    pids: dict[str, int] = field(default_factory=dict)
    client: Client | None = None
    clients: list[Client] = field(default_factory=list)
    shared: list[Client] = field(default_factory=list)  # one principal's, subscribed
    latency: list[float] = field(default_factory=list)
    seq_cpu: dict[str, float] = field(default_factory=dict)
    seq_tasks: int = 0
    burst_seconds: float = 0.0
    burst_cpu: float = 0.0
    burst_tasks: int = 0
    start_seconds: float = 0.0
    starts: list[float] = field(default_factory=list)  # cold starts (`cold_start`)
    peaks: dict[str, float] = field(default_factory=dict)  # peak RSS (MB) over the bursts

    async def start(self) -> None:
        """Start `herald serve`, open the clients and warm up; `start_seconds` is the time from
        launching it to its first round trip."""
        t_launch = time.perf_counter()
        self.tmp = Path(tempfile.mkdtemp(prefix="herald-compare-"))
        runtime = self.tmp / "runtime"
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime),
               "HERALD_DATA_DIR": str(self.tmp / "data"), "HERALD_LOG_LEVEL": "WARNING",
               "PYTHONPATH": str(self.root)}  # fmt: skip
        herald = HERALD
        try:
            self.serve, info = launch(env, runtime, cwd=self.root)
        except RuntimeError:
            raise SystemExit(f"herald serve of {self.root} did not start") from None
        status = json.loads((self.tmp / "data" / "run" / "services.json").read_text())
        self.pids = {n: s["pid"] for n, s in status["services"].items()}
        self.client = Client(info["api"], info["ws"], info["token"])
        await self.client.open()
        await self.client.round_trip()
        self.start_seconds = time.perf_counter() - t_launch
        tokens = [subprocess.run([*herald, "token", "create", f"c{i}"], env=env, cwd=self.root,
                                 capture_output=True, text=True, check=True).stdout.strip()
                  for i in range(CLIENTS)]  # fmt: skip
        self.clients = [Client(info["api"], info["ws"], t) for t in tokens]
        self.shared = [Client(info["api"], info["ws"], info["token"], subscribed=True)
                       for _ in range(CLIENTS)]  # fmt: skip
        await asyncio.gather(*(c.open() for c in [*self.clients, *self.shared]))
        for _ in range(100):  # warm up
            await self.client.round_trip()
        await self.burst(200)

    def cpu(self) -> dict[str, float]:
        out = {n: tree_cpu_seconds(p) for n, p in self.pids.items()}
        out["dispatcher"] = cpu_seconds(self.pids["worker"])
        return out

    async def sequential(self, n: int) -> None:
        assert self.client is not None
        before = self.cpu()
        for _ in range(n):
            self.latency.append(await self.client.round_trip())
        after = self.cpu()
        for name, value in after.items():
            self.seq_cpu[name] = self.seq_cpu.get(name, 0.0) + value - before[name]
        self.seq_tasks += n

    async def burst(self, total: int, window: int | None = 8) -> float:
        """Seconds for `total` tasks from the clients, to the last result. With a `window`,
        each client keeps at most that many tasks in flight; with None, each submits all of
        its tasks one request after the other without waiting for results (as the original
        design's load driver does), then waits for them."""
        lost, seconds = await self._burst(total, window)
        if lost:
            raise RuntimeError(f"{lost} of {total} results did not arrive")
        return seconds

    async def _burst(self, total: int, window: int | None, timeout: float = 60,
                     clients: list[Client] | None = None) -> tuple[int, float]:
        """(results lost, seconds to the last result) of one burst from `clients` (the 20
        principals' by default)."""
        clients = self.clients if clients is None else clients

        async def drive(c: Client, count: int) -> int:
            if window is None:
                futs, refused = [], 0
                for _ in range(count):
                    try:
                        futs.append(await c.submit())
                    except Exception:  # counted as lost, as the original's driver does
                        refused += 1
                done = await asyncio.gather(*(asyncio.wait_for(f, timeout) for f in futs),
                                            return_exceptions=True)  # fmt: skip
                return refused + sum(isinstance(d, BaseException) for d in done)
            sem = asyncio.Semaphore(window)

            async def one() -> None:
                async with sem:
                    await asyncio.wait_for(await c.submit(), timeout)

            ends = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
            return sum(isinstance(e, BaseException) for e in ends)

        t0 = time.perf_counter()
        n = len(clients)
        lost = await asyncio.gather(*(drive(c, total // n + (i < total % n))
                                      for i, c in enumerate(clients)))  # fmt: skip
        return sum(lost), time.perf_counter() - t0

    def tree_pids(self) -> list[int]:
        """The services' processes and all their descendants (the worker's executors)."""
        out, todo = [], list(self.pids.values())
        while todo:
            pid = todo.pop()
            out.append(pid)
            with contextlib.suppress(OSError):  # an executor that just ended
                todo.extend(children(pid))
        return out

    async def throughput(self, total: int, window: int | None,
                         clients: list[Client] | None = None) -> dict[str, float]:
        """One measured burst: tasks/s to the last result, results lost, CPU per task of
        every service (ms), and the peak RSS of the services' process trees while it ran
        (MB, sampled every 0.1 s, like the original's driver does), and of the three
        services alone (without the worker's executors), and each service's own peak
        (`peak_rss_mb_<service>`, the worker's without its executors); and the peak PSS of
        the trees (the pages that forked processes share counted once, shared out among
        them)."""
        peak = services = peak_pss = 0.0
        each = dict.fromkeys(self.pids, 0.0)
        running = True

        def rss(pids: list[int], of: Callable[[int], float] = rss_mb) -> float:
            total = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):
                    total += of(pid)
            return total

        async def sample() -> None:
            nonlocal peak, services, peak_pss
            while running:
                tree = self.tree_pids()
                peak = max(peak, rss(tree))
                peak_pss = max(peak_pss, rss(tree, pss_mb))
                services = max(services, rss(list(self.pids.values())))
                for name, pid in self.pids.items():
                    each[name] = max(each[name], rss([pid]))
                await asyncio.sleep(0.1)

        sampler = asyncio.ensure_future(sample())
        before = sum(tree_cpu_seconds(p) for p in self.pids.values())
        lost, seconds = await self._burst(total, window, clients=clients)
        cpu = sum(tree_cpu_seconds(p) for p in self.pids.values()) - before
        running = False
        await sampler
        return {"tasks_per_s": (total - lost) / seconds, "lost": lost,
                "cpu_ms_per_task": cpu / max(total - lost, 1) * 1000, "peak_rss_mb": peak,
                "peak_pss_mb": peak_pss, "peak_services_rss_mb": services,
                **{f"peak_rss_mb_{name}": mb for name, mb in each.items()}}  # fmt: skip

    async def idle(self, seconds: float, settle: float = 5.0) -> tuple[float, float]:
        """(CPU of the services over `seconds` of idle, in % of one core; the first round
        trip after it, in ms), after `settle` s for the last burst's WAL checkpoint."""
        assert self.client is not None
        await asyncio.sleep(settle)
        before, t0 = sum(tree_cpu_seconds(p) for p in self.pids.values()), time.perf_counter()
        await asyncio.sleep(seconds)
        used = sum(tree_cpu_seconds(p) for p in self.pids.values()) - before
        pct_core = used / (time.perf_counter() - t0) * 100
        return pct_core, await self.client.round_trip() * 1000

    async def measured_burst(self, total: int) -> None:
        """One burst with a window of 8, its time, CPU and peak RSS kept for the report."""
        got = await self.throughput(total, 8)
        if got["lost"]:
            raise RuntimeError(f"{got['lost']:.0f} of {total} results did not arrive")
        self.burst_seconds += total / got["tasks_per_s"]
        self.burst_cpu += got["cpu_ms_per_task"] * total / 1000
        self.burst_tasks += total
        for key, mb in got.items():
            if key.startswith("peak_"):
                self.peaks[key] = max(self.peaks.get(key, 0.0), mb)

    async def stop(self) -> None:
        for c in [*self.clients, *self.shared, *([self.client] if self.client else [])]:
            await c.close()
        if self.serve is not None:
            stop(self.serve)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.clients, self.shared, self.client, self.serve, self.tmp = [], [], None, None, None

    def report(self) -> None:
        lat = self.latency
        per = {n: v / self.seq_tasks * 1e6 for n, v in self.seq_cpu.items()}
        executors = per.get("worker", 0.0) - per.get("dispatcher", 0.0)
        print(f"\n{self.root}")
        print(f"  latency p50 {pct(lat, 50) * 1000:.2f} ms, p99 {pct(lat, 99) * 1000:.2f} ms, "
              f"mean {statistics.mean(lat) * 1000:.2f} ms ({len(lat)} back to back)")
        print("  CPU per task back to back: " + ", ".join(
            f"{n} {per[n]:.0f} µs" for n in ("web", "worker", "notifier") if n in per)
            + f" (of the worker's, executors {executors:.0f} µs)")
        print(f"  throughput {self.burst_tasks / self.burst_seconds:.0f} tasks/s from {CLIENTS} "
              f"clients, CPU per task {self.burst_cpu / self.burst_tasks * 1000:.2f} ms")
        if self.starts:
            st = sorted(self.starts)
            print(f"  start to first round trip {statistics.median(st):.3f} s "
                  f"({st[0]:.3f}-{st[-1]:.3f}, {len(st)} cold starts)")  # fmt: skip
        if self.peaks:
            each = ", ".join(f"{n} {self.peaks[f'peak_rss_mb_{n}']:.1f}"
                             for n in ("web", "worker", "notifier"))  # fmt: skip
            print(f"  peak RSS of the three services {self.peaks['peak_services_rss_mb']:.1f} MB "
                  f"({each}; the worker without its executors), with the executors "
                  f"{self.peaks['peak_rss_mb']:.1f} MB (PSS "
                  f"{self.peaks['peak_pss_mb']:.1f} MB)")  # fmt: skip


async def cold_start(root: Path) -> float:
    """Seconds from launching a `herald serve` of `root` (fresh data dir) to its first round
    trip; it is stopped again."""
    t_launch = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="herald-compare-"))
    runtime = tmp / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HERALD_DATA_DIR": str(tmp / "data"),
           "HERALD_LOG_LEVEL": "WARNING", "PYTHONPATH": str(root)}  # fmt: skip
    try:
        serve, info = launch(env, runtime, cwd=root)
    except RuntimeError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"herald serve of {root} did not start") from None
    client = Client(info["api"], info["ws"], info["token"])
    try:
        await client.open()
        await client.round_trip()
        return time.perf_counter() - t_launch
    finally:
        await client.close()
        stop(serve)
        shutil.rmtree(tmp, ignore_errors=True)


async def run(args: argparse.Namespace) -> int:
    trees = [Tree(Path(__file__).resolve().parents[1]), Tree(Path(args.other).resolve())]
    print(f"Comparing {trees[0].root} with {trees[1].root} ({os.cpu_count()} cores), "
          f"{args.rounds} interleaved rounds", flush=True)
    try:
        # Each round in the other order: whichever goes first follows the other's burst (its
        # WAL checkpoint, the kernel's clean-up), which cost the first tree ~5 % every time.
        for i in range(args.starts):  # alone on the machine: before the trees' instances run
            for tree in trees[:: 1 if i % 2 == 0 else -1]:
                tree.starts.append(await cold_start(tree.root))
        for tree in trees:
            await tree.start()
        for i in range(args.rounds):
            order = trees[:: 1 if i % 2 == 0 else -1]
            for tree in order:
                await tree.sequential(20)
            for tree in order:
                await tree.measured_burst(400)
        for tree in trees:
            tree.report()
    finally:
        for tree in trees:
            await tree.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__)
    p.add_argument("other", help="another checkout of Herald (e.g. a `git worktree` of main)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--starts", type=int, default=5,
                   help="cold starts of each tree, interleaved, before the rounds")  # fmt: skip
    return asyncio.run(run(p.parse_args(argv)))
