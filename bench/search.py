"""Measure searching a big history: the first page of `GET /api/tasks?q=...` (and the other
filters) over 100,000 finished tasks, through the real web API.

    python -m bench search [--tasks N] [--repeat R]

Builds a real ledger (the store's own writes: each task is submitted, started and finished,
a thousand to a transaction, with another principal's tasks in between) in a temp data dir,
serves it with the web app on 127.0.0.1, and times each request as a client sees it, from
sending it to having its JSON decoded. The issue's target: the first page under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp import web

from services.auth import Authenticator, create_principal, ensure_install_token
from services.core.states import TaskState
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store.sqlite import TaskStore
from services.tasks.catalog import load_catalog
from services.wake import WakeSender
from services.web.app import make_app
from services.web.limits import GuardedSite

TARGET_MS = 50.0
NAMES = ("files.checksum", "files.archive", "report.csv", "process.run", "demo.answer")
WORDS = ("sales", "invoices", "photos", "backup", "quarterly", "ledger", "music", "thesis")


def line(label: str, value: str, target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  ok" if ok else "  MISSED")
    print(f"  {label:<52} {value:>18}   {target}{mark}", flush=True)


def build(store: TaskStore, principal: str, count: int) -> float:
    """`count` finished tasks of `principal` (and a tenth as many of another's); returns
    the wall time halfway through (a `since`/`until` boundary)."""
    middle = 0.0
    for start in range(0, count, 1000):
        with store.batch(isolated=False):
            for i in range(start, min(count, start + 1000)):
                who = principal if i % 10 else "someone-else"
                word = WORDS[i % len(WORDS)]
                name = NAMES[i % len(NAMES)]
                rec, _ = store.create_task(principal=who, name=name, args={
                    "path": f"/home/user/{word}/{word}-{i % 997}.csv", "n": i})  # fmt: skip
                store.claim(rec.id, "bench", 60)
                if i % 13 == 0:
                    store.finish(rec.id, 1, TaskState.FAILED, error={
                        "code": "exit_status", "message": f"Disk quota exceeded on volume {i % 7}"})
                else:
                    store.finish(rec.id, 1, TaskState.SUCCEEDED, result={
                        "path": f"/home/user/out/{word}-{i}.zip", "bytes": i * 1024})
                if i == count // 2:
                    middle = time.time()
        if start and start % 20000 == 0:
            print(f"    {start:,} tasks…", flush=True)
    return middle


async def measure(base: str, token: str, queries: list[tuple[str, str]],
                  repeat: int) -> list[tuple[str, list[float], int]]:  # fmt: skip
    """(label, seconds of each request, tasks on the first page) for each query."""
    out = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for label, query in queries:
            times, count = [], 0
            for _ in range(repeat):
                t0 = time.perf_counter()
                async with session.get(f"{base}/api/tasks?{query}") as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                times.append(time.perf_counter() - t0)
                count = len(body["tasks"])
            out.append((label, times, count))
    return out


async def serve_and_measure(layout: DataLayout, store: TaskStore, queries: list[tuple[str, str]],
                            repeat: int) -> list[tuple[str, list[float], int]]:  # fmt: skip
    token = ensure_install_token(layout)
    wakes = [WakeSender(layout.wake_address(n)) for n in ("worker", "notifier")]
    app = make_app(layout, load_catalog(), store, TaskQueue(layout), *wakes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        return await measure(f"http://127.0.0.1:{site.port}", token, queries, repeat)
    finally:
        await runner.cleanup()
        for w in wakes:
            w.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench search")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="build the data dir here and keep it; reuse it if it exists")
    args = parser.parse_args(argv)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="herald-bench-search-"))
    reuse = args.keep is not None and (tmp / "data" / "herald.db").exists()
    try:
        layout = DataLayout(tmp / "data")
        layout.root.mkdir(parents=True, exist_ok=True)
        token = ensure_install_token(layout)
        if not reuse:
            create_principal(layout, "someone-else")
        principal = Authenticator(layout).principal_for(token)
        assert principal is not None
        store = TaskStore(layout.ledger_db)
        print(f"Herald search benchmark ({os.cpu_count()} cores; {args.tasks:,} finished "
              f"tasks in {tmp})", flush=True)  # fmt: skip
        if reuse:
            middle = float((tmp / "middle").read_text())
        else:
            t0 = time.perf_counter()
            middle = build(store, principal, args.tasks)
            built = time.perf_counter() - t0
            line("building the ledger (submit, start, finish)", f"{built:.1f} s",
                 f"{args.tasks / built:,.0f} tasks/s")  # fmt: skip
            (tmp / "middle").write_text(repr(middle))
        store.checkpoint(truncate=True)
        sizes = store.sizes()
        line("ledger size (with its search index)", f"{sizes['db'] / 1e6:.1f} MB")
        when = quote(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(middle)))
        queries = [
            ("no search (the first page of the history)", "limit=100"),
            ("q=sales (a word in a tenth of them)", "q=sales&limit=100"),
            ("q=sal (the prefix being typed)", "q=sal&limit=100"),
            ("q=csv (a word in every one)", "q=csv&limit=100"),
            ("q=quota volume (two words, failures)", "q=quota%20volume&limit=100"),
            ('q="disk quota" (a phrase)', "q=%22disk%20quota%22&limit=100"),
            ("q=thesis-123 (a rare one)", "q=thesis-123&limit=100"),
            ("q=nothinglikethis (no match at all)", "q=nothinglikethis&limit=100"),
            ("task=report.csv", "task=report.csv&limit=100"),
            ("state=failed", "state=failed&limit=100"),
            ("q=sales&state=failed", "q=sales&state=failed&limit=100"),
            ("until=<the middle> (the older half)", f"until={when}&limit=100"),
            ("since=<the middle>&q=backup", f"since={when}&q=backup&limit=100"),
        ]
        results = asyncio.run(serve_and_measure(layout, store, queries, args.repeat))
        store.close()
        print(f"\nFirst page (up to 100 tasks), {args.repeat} requests each: median / worst")
        worst_all = 0.0
        for label, times, count in results:
            median, worst = statistics.median(times) * 1000, max(times) * 1000
            worst_all = max(worst_all, median)
            line(f"{label} [{count}]", f"{median:.1f} / {worst:.1f} ms",
                 f"target < {TARGET_MS:.0f} ms", median < TARGET_MS)  # fmt: skip
        return 0 if worst_all < TARGET_MS else 1
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
