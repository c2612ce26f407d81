"""`make bench BACKEND=redis` (`python -m bench backends`): the same figures on SQLite and
on Redis, measured interleaved in one run, and Redis's throughput with 1, 2 and 4 worker
processes.

Each round starts a real `herald serve` per backend (a redis-server of its own on a free
port, without persistence: what is measured is Herald, not the disk) and drives it as the
headless bench does: sequential round trips (submit to the "succeeded" event on the
WebSocket), then a burst from 20 principals with 8 tasks in flight each. Prints the
median of the rounds and their range.

    python -m bench backends [--rounds 3] [--tasks 2000] [--workers 1,2,4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.headless import HERALD, Client, pct
from embedded.procstat import children, rss_mb, tree_cpu_seconds

TARGET_P50_MS = 2.0
TARGET_RATE_4 = 1000.0


def _services(data: Path) -> dict[str, int]:
    """name -> pid of each service the supervisor runs (several workers: worker, worker-2...)."""
    status = json.loads((data / "run" / "services.json").read_text())["services"]
    return {name: int(s["pid"]) for name, s in status.items() if s.get("pid")}


async def _wait_services(data: Path, want: int, timeout: float = 30.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    pids: dict[str, int] = {}
    while True:
        try:
            pids = _services(data)
            if len(pids) >= want:
                return pids
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pids)} of {want} services came up: {sorted(pids)}")
        await asyncio.sleep(0.1)


class Instance:
    """One `herald serve` in a temp data dir, on one backend."""

    def __init__(self, backend: str | None, workers: int = 1) -> None:
        self.backend = backend
        self.workers = workers
        self.tmp = Path(tempfile.mkdtemp(prefix="herald-bench-backend-"))
        self.runtime = self.tmp / "runtime"
        self.runtime.mkdir(mode=0o700)
        self.data = self.tmp / "data"
        self.data.mkdir(mode=0o700)
        (self.data / "config.toml").write_text('[tasks]\nmodules = ["bench.tasks"]\n')
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(self.runtime),
                    "HERALD_DATA_DIR": str(self.data), "HERALD_LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(Path(__file__).parents[1])}  # fmt: skip
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, str] = {}

    async def start(self) -> None:
        args = [*HERALD, "serve"]
        if self.backend:
            args += ["--backend", self.backend]
        if self.workers != 1:
            args += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(args, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        for out in self.proc.stdout:
            if "Press Ctrl-C" in out:
                break
        else:
            raise RuntimeError(f"herald serve {' '.join(args[3:])} did not start")
        self.info = json.loads(next((self.runtime / "herald").glob("instance-*.json")).read_text())
        self.pids = await _wait_services(self.data, 2 + self.workers)

    def tokens(self, n: int) -> list[str]:
        """Tokens of `n` new principals (`herald token create`)."""
        out = []
        for i in range(n):
            args = [*HERALD, "token"]
            if self.backend:
                args += ["--backend", self.backend]
            args += ["create", f"bench{i}"]
            out.append(subprocess.run(args, env=self.env, capture_output=True, text=True,
                                      check=True).stdout.strip())  # fmt: skip
        return out

    def cpu(self) -> dict[str, float]:
        return {name: tree_cpu_seconds(pid) for name, pid in self.pids.items()}

    def rss(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            out[name] = rss_mb(pid)
        return out

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def measure(inst: Instance, tasks: int, sequential: int) -> dict[str, float]:
    """One round on a started instance: latency, throughput, CPU per task, RSS."""
    client = Client(inst.info["api"], inst.info["ws"], inst.info["token"])
    await client.open()
    for _ in range(30):
        await client.round_trip()
    lat = [await client.round_trip() for _ in range(sequential)]
    out = {"p50": pct(lat, 50) * 1000, "p99": pct(lat, 99) * 1000}
    clients = [Client(inst.info["api"], inst.info["ws"], t) for t in inst.tokens(20)]
    await asyncio.gather(*(c.open() for c in clients))
    await asyncio.sleep(0.5)
    cpu0 = inst.cpu()

    async def drive(c: Client, count: int) -> int:
        sem = asyncio.Semaphore(8)

        async def one() -> None:
            async with sem:
                await asyncio.wait_for(await c.submit(), 60)

        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        return sum(1 for r in results if isinstance(r, BaseException))

    t0 = time.perf_counter()
    lost = sum(await asyncio.gather(*(drive(c, tasks // 20) for c in clients)))
    elapsed = time.perf_counter() - t0
    cpu1 = inst.cpu()
    out["rate"] = tasks / elapsed
    out["lost"] = lost
    out["cpu"] = sum(cpu1[n] - cpu0[n] for n in cpu1) / tasks * 1e6
    for name in cpu1:
        kind = "worker" if name.startswith("worker") else name
        out[f"cpu_{kind}"] = out.get(f"cpu_{kind}", 0.0) + (cpu1[name] - cpu0[name]) / tasks * 1e6
    rss = inst.rss()
    out["rss"] = sum(rss.values())
    out["executors"] = float(sum(len(children(p)) for n, p in inst.pids.items()
                                 if n.startswith("worker")))  # fmt: skip
    await asyncio.gather(*(c.close() for c in clients))
    await client.close()
    return out


def _fmt(values: list[float], unit: str = "", digits: int = 2) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}{unit}"
    return f"{med:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


async def run(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from tests.redis_server import RedisServer

    print(f"Herald on SQLite and on Redis ({os.cpu_count()} cores, {args.rounds} round(s), "
          f"{args.tasks} tasks per burst)", flush=True)  # fmt: skip
    rounds: dict[str, list[dict[str, float]]] = {"sqlite": [], "redis": []}
    scale: dict[int, list[dict[str, float]]] = {n: [] for n in args.workers}
    redis_dir = Path(tempfile.mkdtemp(prefix="herald-bench-redis-"))
    try:
        for r in range(args.rounds):
            order = ["sqlite", "redis"] if r % 2 == 0 else ["redis", "sqlite"]
            for kind in order:
                with RedisServer(redis_dir / f"{kind}-{r}") as server:
                    inst = Instance(server.url if kind == "redis" else None)
                    try:
                        await inst.start()
                        rounds[kind].append(await measure(inst, args.tasks, args.sequential))
                    finally:
                        inst.stop()
                print(f"  round {r + 1}: {kind} done", flush=True)
            for n in args.workers:
                with RedisServer(redis_dir / f"scale-{n}-{r}") as server:
                    inst = Instance(server.url, workers=n)
                    try:
                        await inst.start()
                        scale[n].append(await measure(inst, args.tasks, 20))
                    finally:
                        inst.stop()
                print(f"  round {r + 1}: redis with {n} worker process(es) done", flush=True)
    finally:
        shutil.rmtree(redis_dir, ignore_errors=True)

    def col(kind: str, key: str, unit: str = "", digits: int = 2) -> str:
        return _fmt([x[key] for x in rounds[kind]], unit, digits)

    print(f"\n  {'':<44} {'SQLite':>22} {'Redis':>22}  target (Redis)")
    rows = [("latency p50, back to back (ms)", "p50", 2, f"<= {TARGET_P50_MS:g} ms"),
            ("latency p99, back to back (ms)", "p99", 2, ""),
            ("tasks/s, 20 principals, 8 in flight", "rate", 0, ""),
            ("results lost", "lost", 0, "0"),
            ("CPU per task, all services (µs)", "cpu", 0, ""),
            ("  of which web", "cpu_web", 0, ""),
            ("  of which worker (+ executors)", "cpu_worker", 0, ""),
            ("  of which notifier", "cpu_notifier", 0, ""),
            ("RSS of the services (MB)", "rss", 1, "")]  # fmt: skip
    for label, key, digits, target in rows:
        print(f"  {label:<44} {col('sqlite', key, '', digits):>22} "
              f"{col('redis', key, '', digits):>22}  {target}")  # fmt: skip
    print("\n  Redis, tasks/s by worker processes (20 principals, 8 in flight each)")
    for n in args.workers:
        rates = [x["rate"] for x in scale[n]]
        lost = sum(x["lost"] for x in scale[n])
        target = f"target >= {TARGET_RATE_4:.0f}/s" if n == 4 else ""
        print(f"  {n} worker process(es){'':<24} {_fmt(rates, '/s', 0):>22} "
              f"lost {lost:.0f}   {target}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench backends", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", type=int, default=2000, help="tasks per burst")
    p.add_argument("--sequential", type=int, default=200, help="back-to-back round trips")
    p.add_argument("--workers", default="1,2,4",
                   help="worker process counts for Redis's scaling run")
    args = p.parse_args(argv)
    args.workers = [int(x) for x in args.workers.split(",") if x]
    return asyncio.run(run(args))
