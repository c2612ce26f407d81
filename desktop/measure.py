"""Measurements of the running desktop app, for `python -m bench desktop` (which prints them).

They live here because they drive Qt, and only the desktop package imports Qt.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from embedded.procstat import children, pss_mb, rss_mb


async def until(predicate: Any, timeout: float = 60.0) -> None:
    """Wait (letting the loop run) until `predicate()` is true; TimeoutError after that."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(predicate)
        await asyncio.sleep(0.05)


def measure_stream(data_dir: Path, tasks: int = 200, seconds: float = 6.0,
                   period: float = 0.005) -> dict[str, Any]:  # fmt: skip
    """Run the app on `data_dir` (offscreen unless a platform is set), have `tasks` tasks
    stream progress at once while the window shows them, and time the event loop with a
    `period` timer: how late each tick ran is how long the loop was busy.

    Returns:
        {"lateness": [s, ...], "busy": [CPU s of the GUI thread in each tick's interval],
        "streamed": s, "events": n, "flushes": n (model flushes
        while streaming), "flush_ms": the model's flush period, "rss": {"gui": MB, ...}}
    """
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        return loop.run_until_complete(_stream(data_dir, tasks, seconds, period))


async def _stream(data_dir: Path, tasks: int, seconds: float, period: float) -> dict[str, Any]:
    from PySide6.QtCore import QSettings, QTimer

    from desktop.app import DesktopApp

    data_dir.mkdir(mode=0o700, exist_ok=True)
    (data_dir / "config.toml").write_text(f"[worker]\nthreads = {tasks}\n")
    settings = QSettings(str(data_dir / "settings.ini"), QSettings.Format.IniFormat)
    desktop = DesktopApp(data_dir, settings)
    desktop.window.resize(1360, 820)
    run = asyncio.ensure_future(desktop.run())
    w = desktop.window

    await until(lambda: w.lights.connection.state == "connected" and w.catalog_list.count())
    lateness: list[float] = []
    busy: list[float] = []  # the GUI thread's CPU time in each of those intervals
    last = [time.perf_counter(), time.thread_time()]

    def tick() -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        lateness.append(max(0.0, now - last[0] - period))
        busy.append(cpu - last[1])
        last[0], last[1] = now, cpu

    timer = QTimer(interval=max(1, int(period * 1000)))
    timer.timeout.connect(tick)
    client = desktop.bridge.client
    submitted = await asyncio.gather(*(client.submit("demo.answer", {"seconds": seconds})
                                       for _ in range(tasks)))  # fmt: skip
    for task in submitted:
        desktop.model.upsert(task)
    ids = [t["id"] for t in submitted]

    def state(task_id: str) -> str:
        task = desktop.model.task_by_id(task_id)
        return task["state"] if task else ""

    # Most of them started (on a loaded machine the first may finish before the last start).
    await until(lambda: sum(state(i) not in ("", "queued") for i in ids) >= tasks * 0.9)
    last[0], last[1] = time.perf_counter(), time.thread_time()
    timer.start()
    flushes = getattr(desktop.model, "flushes", 0)  # (a model that counts them)
    w.select_task(ids[0])  # the detail pane follows one of them too
    t0 = time.perf_counter()
    await until(lambda: all(state(i) == "succeeded" for i in ids), timeout=seconds * 10)
    streamed = time.perf_counter() - t0
    timer.stop()
    rss = {"gui": rss_mb(os.getpid())}
    pids = [os.getpid()]
    for name, pid in zip(("web", "worker", "notifier"), desktop.monitor.pids(), strict=False):
        rss[name] = rss_mb(pid)
        pids.append(pid)
        if name == "worker":
            executors = children(pid)
            rss["executors"] = sum(rss_mb(p) for p in executors)
            pids += executors
    result = {
        "lateness": lateness,
        "busy": busy,
        "streamed": streamed,
        "events": sum(len(desktop.model.events(i)) for i in ids),
        "flushes": getattr(desktop.model, "flushes", 0) - flushes,
        "flush_ms": desktop.model._flush_timer.interval(),
        "rss": rss,
        "pss": sum(pss_mb(p) for p in pids),
    }
    await desktop.quit(ask=False)
    await run
    return result
