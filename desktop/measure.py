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


def measure_repaint(tasks: int = 200, rounds: int = 60) -> dict[str, list[float]]:
    """The GUI thread's CPU for one flush of the task model and the repaint it causes, with
    `tasks` running rows each changed by a progress event (each a different fraction, as a
    stream has them), in the window as the app shows it (offscreen unless a platform is
    set): what one turn of the event loop costs under a stream, without the machine's load.

    Returns:
        {"flush": [CPU s of each flush], "paint": [CPU s of the repaint after it]}
    """
    import tempfile

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from desktop.app import app_icon, paint_on_the_gui_thread
    from desktop.services import SERVICE_NAMES
    from desktop.task_model import TaskModel
    from desktop.ui.main_window import MainWindow
    from services.core import taskview
    from services.core.events import Event, EventType

    paint_on_the_gui_thread()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    scratch = tempfile.mkdtemp(prefix="herald-repaint-")
    settings = QSettings(os.path.join(scratch, "settings.ini"), QSettings.Format.IniFormat)
    model = TaskModel(tick_ms=3_600_000)  # no Duration refresh in between
    window = MainWindow(model, SERVICE_NAMES, scratch, app_icon(), settings)
    window.resize(1360, 820)
    window.show()
    now = time.time()
    rows = []
    for i in range(tasks):
        task = taskview.new_task(f"{i:032x}", "demo.answer", {"seconds": 6}, now - 10 + i / 1000)
        del task["seq"]
        task.update(state="running", attempt=1, started_at=taskview.iso(now - 5),
                    updated_at=taskview.iso(now - 5), max_attempts=3)  # fmt: skip
        rows.append(task)
    model.set_titles({"demo.answer": "The answer"})
    model.load(rows)
    window.select_task(rows[-1]["id"])  # the detail pane follows one of them
    for _ in range(10):
        app.processEvents()
    flush: list[float] = []
    paint: list[float] = []
    seq = 1_000_000
    for n in range(rounds):
        for i, task in enumerate(rows):
            seq += 1
            fraction = ((n + 1) / (rounds + 1) + i * 0.0037) % 1.0
            model.apply_event(Event(seq, task["id"], "", EventType.PROGRESS, time.time(), 1,
                                    {"fraction": fraction, "message": f"step {n}"}))  # fmt: skip
        c0 = time.thread_time()
        model.flush()
        c1 = time.thread_time()
        app.processEvents()
        flush.append(c1 - c0)
        paint.append(time.thread_time() - c1)
    window.close_for_quit()
    return {"flush": flush, "paint": paint}
