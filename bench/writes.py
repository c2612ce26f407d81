"""Count the web service's writes during a burst: write transactions (ledger and queue),
lock waits (sleeps waiting for SQLite's write lock, and those on its event loop), and the
longest stall of its event loop.

Starts a real `herald serve`, submits `--tasks` demo.answer tasks from 20 principals (8 in
flight each, as `python -m bench` does), stops it, and prints what the web counted
(`services.web.server.STATS_ENV`). Counters, not timings: they hold on a loaded machine.

    python -m bench.writes [--tasks 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.headless import HERALD, Client, launch, stop
from services.web.server import STATS_ENV


async def run(tasks: int, nclients: int = 20) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="herald-writes-"))
    runtime, data = tmp / "runtime", tmp / "data"
    runtime.mkdir(mode=0o700)
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text('[tasks]\nmodules = ["bench.tasks"]\n')
    stats_file = tmp / "web-stats.json"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HERALD_DATA_DIR": str(data),
           "HERALD_LOG_LEVEL": "WARNING", "PYTHONPATH": str(Path(__file__).parents[1]),
           STATS_ENV: str(stats_file)}  # fmt: skip
    serve, info = launch(env, runtime)
    try:
        tokens = [subprocess.run([*HERALD, "token", "create", f"bench{i}"], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip()
                  for i in range(nclients)]  # fmt: skip
        clients = [Client(info["api"], info["ws"], t) for t in tokens]
        await asyncio.gather(*(c.open() for c in clients))

        async def drive(c: Client, count: int) -> int:
            sem = asyncio.Semaphore(8)

            async def one() -> None:
                async with sem:
                    await asyncio.wait_for(await c.submit(), 60)

            done = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
            return sum(1 for r in done if isinstance(r, BaseException))

        t0 = time.perf_counter()
        lost = sum(await asyncio.gather(*(drive(c, tasks // nclients) for c in clients)))
        elapsed = time.perf_counter() - t0
        await asyncio.gather(*(c.close() for c in clients))
    finally:
        stop(serve)
    try:
        stats = json.loads(stats_file.read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**stats, "tasks": tasks, "lost": lost, "tasks_per_s": round(tasks / elapsed)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writes")
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args(argv)
    stats = asyncio.run(run(args.tasks))
    print(f"web service, {stats['tasks']} tasks from 20 principals "
          f"({stats['tasks_per_s']}/s, {stats['lost']} lost):")
    for name, value in stats.items():
        if name not in ("tasks", "lost", "tasks_per_s"):
            print(f"  {name:24} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
