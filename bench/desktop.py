"""Measure the desktop app: start-up, event-loop stalls under a stream of progress, memory.

    python -m bench desktop        (offscreen; real embedded services in a temp data dir)

- Start-up: `herald --self-check` run as a user would, with the app's own milestones
  (window shown, services ready, live updates, history loaded) in seconds since launch.
- Stalls: 200 tasks stream progress at once (demo.answer, 10 reports a second each) while
  the window shows them; a 5 ms timer measures how late the event loop runs it. The
  longest lateness is the longest freeze a user could notice.
- Memory: RSS of the GUI process and of the whole app (GUI + the three services).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = 200
SECONDS = 6.0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def line(label: str, value: str, target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  ok" if ok else "  MISSED")
    print(f"  {label:<44} {value:>14}   {target}{mark}", flush=True)


def startup(tmp: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp / "rt1"),
           "HERALD_DATA_DIR": str(tmp / "data1")}  # fmt: skip
    (tmp / "rt1").mkdir(mode=0o700)
    print("\nStart-up (herald --self-check, offscreen)")
    for attempt in range(3):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "embedded", "--self-check"], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        wall = time.perf_counter() - t0
        report = next((ln for ln in proc.stderr.splitlines() if ln.startswith("self-check")), "")
        marks = dict(kv.rsplit(" ", 1) for kv in report.split(": ", 1)[-1].split(", ") if kv)
        label = "first launch (new data dir)" if attempt == 0 else f"launch {attempt + 1}"
        line(label, f"exit {proc.returncode}, {wall:.2f} s")
        for key in ("window_shown", "services_ready", "live"):
            if key in marks:
                line(f"  {key.replace('_', ' ')}", f"{float(marks[key]):.2f} s")


async def stream(tmp: Path) -> None:
    import qasync  # noqa: F401  (the loop is made in main)
    from PySide6.QtCore import QSettings, QTimer

    from desktop.app import DesktopApp

    data = tmp / "data2"
    data.mkdir(mode=0o700)
    (data / "config.toml").write_text(f"[worker]\nthreads = {TASKS}\n")
    desktop = DesktopApp(data, QSettings(str(tmp / "s.ini"), QSettings.Format.IniFormat))
    desktop.window.resize(1360, 820)
    run = asyncio.ensure_future(desktop.run())
    w = desktop.window

    async def until(predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.05)

    await until(lambda: w.lights.connection.state == "connected" and w.catalog_list.count())
    lateness: list[float] = []
    last = [time.perf_counter()]
    period = 0.005

    def tick() -> None:
        now = time.perf_counter()
        lateness.append(max(0.0, now - last[0] - period))
        last[0] = now

    timer = QTimer(interval=int(period * 1000))
    timer.timeout.connect(tick)
    client = desktop.bridge.client
    submitted = await asyncio.gather(*(client.submit("demo.answer", {"seconds": SECONDS})
                                       for _ in range(TASKS)))  # fmt: skip
    for task in submitted:
        desktop.model.upsert(task)
    ids = [t["id"] for t in submitted]
    await until(lambda: sum(desktop.model.task_by_id(i)["state"] == "running" for i in ids)
                >= TASKS * 0.9)  # fmt: skip
    last[0] = time.perf_counter()
    timer.start()
    w.select_task(ids[0])  # the detail pane follows one of them too
    t0 = time.perf_counter()
    await until(lambda: all(desktop.model.task_by_id(i)["state"] == "succeeded" for i in ids),
                timeout=SECONDS * 10)  # fmt: skip
    streamed = time.perf_counter() - t0
    timer.stop()
    events = sum(len(desktop.model.events(i)) for i in ids)
    gui = rss_mb(os.getpid())
    children = {n: rss_mb(p) for n, p in zip(("web", "worker", "notifier"),
                                             desktop.monitor.pids(), strict=False)}  # fmt: skip
    print(f"\n{TASKS} tasks streaming progress at once ({streamed:.1f} s, {events} events kept)")
    worst = max(lateness) * 1000
    line("longest event-loop stall", f"{worst:.1f} ms", "target <= 50 ms", worst <= 50)
    line("p99 / median lateness", f"{statistics.quantiles(lateness, n=100)[98] * 1000:.1f} / "
         f"{statistics.median(lateness) * 1000:.1f} ms")  # fmt: skip
    print("\nMemory")
    line("RSS of the GUI process", f"{gui:.1f} MB")
    for n, v in children.items():
        line(f"RSS {n}", f"{v:.1f} MB")
    total = gui + sum(children.values())
    line("RSS of the whole app", f"{total:.1f} MB", "target <= 250 MB", total <= 250)
    await desktop.quit(ask=False)
    await run


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="herald-bench-desktop-"))
    print(f"Herald desktop benchmark ({os.cpu_count()} cores; data in {tmp})", flush=True)
    startup(tmp)
    (tmp / "rt2").mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(tmp / "rt2")
    import qasync
    from PySide6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    with loop:
        loop.run_until_complete(stream(tmp))
    return 0
