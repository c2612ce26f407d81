"""Make docs/screenshot.png: the real app, real services, tasks in flight and finished;
docs/screenshot-result.png: the same window showing a checksum's readable result;
docs/screenshot-failed.png: a failed row and why it failed; then a
minute and a half of real tasks (succeeded, failed, cancelled) and docs/activity.png, the
activity view that counts them.

    python -m desktop.screenshot [OUT.png]      (`make screenshot` runs it under Xvfb;
                                                 the other pictures go next to OUT.png)
"""

from __future__ import annotations

import asyncio
import csv
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sample_files(root: Path) -> dict[str, Path]:
    """A folder of photos-ish files and a CSV, for the tasks to chew on."""
    photos = root / "Holiday photos"
    photos.mkdir(parents=True)
    for i in range(12):
        (photos / f"IMG_{4810 + i}.jpg").write_bytes(os.urandom(300_000 + i * 5000))
    table = root / "sales-2026.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["date", "region", "product", "units", "price"])
        for i in range(400):
            day = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}"
            w.writerow([day, ["North", "South", "East"][i % 3],
                        ["Lamp", "Desk", "Chair", "Shelf"][i % 4], 1 + i % 9,
                        f"{19.5 + (i % 7) * 3.25:.2f}"])  # fmt: skip
    return {"photos": photos, "table": table, "out": root}


async def scenario(desktop, files: dict[str, Path], out: Path) -> None:
    from PySide6.QtWidgets import QApplication

    from desktop.measure import until

    run = asyncio.ensure_future(desktop.run())
    w = desktop.window

    await until(lambda: w.lights.connection.state == "connected" and w.catalog_list.count())
    submit = desktop.bridge.submit
    done = [
        await submit("demo.answer", {"seconds": 0}),
        await submit("files.checksum", {"path": str(files["photos"])}),
        await submit("report.csv", {"source": str(files["table"])}),
        await submit("files.archive", {"source": str(files["photos"]),
                                       "destination": str(files["out"] / "photos.zip")}),
        await submit("process.run", {"program": "/usr/bin/false-program"}),
    ]
    for task in done:
        desktop.model.upsert(task)
    await until(lambda: all(desktop.model.task_by_id(t["id"])["state"] in
                            ("succeeded", "failed") for t in done))  # fmt: skip
    # Four run at once (the worker's threads); the rest wait in the queue.
    running = [await submit("demo.answer", {"seconds": s}) for s in (40, 25, 90, 60)]
    queued = [await submit("demo.answer", {"seconds": 5}) for _ in range(2)]
    for task in running + queued:
        desktop.model.upsert(task)
    await asyncio.sleep(6)  # let the running ones get somewhere
    w.select_catalog_task("files.archive")
    w.form.set_values({"source": str(files["photos"]),
                       "destination": str(files["out"] / "photos-backup.tar.gz")})
    w.select_task(done[2]["id"])  # the CSV report: a result with links
    await asyncio.sleep(0.5)
    QApplication.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    w.grab().save(str(out))
    print(f"wrote {out} ({w.width()}x{w.height()})")
    # The readable result of a checksum: digest, size, the manifest as a table.
    w.select_task(done[1]["id"])
    w.detail.tabs.setCurrentIndex(0)
    await asyncio.sleep(0.5)
    QApplication.processEvents()
    result_shot = out.with_name(out.stem + "-result" + out.suffix)
    w.grab().save(str(result_shot))
    print(f"wrote {result_shot}")
    # A failed row: its own colour and icon, the reason in words, what to do next.
    w.select_task(done[4]["id"])
    await asyncio.sleep(0.5)
    QApplication.processEvents()
    failed_shot = out.with_name(out.stem + "-failed" + out.suffix)
    w.grab().save(str(failed_shot))
    print(f"wrote {failed_shot}")
    await activity_scenario(desktop, files, running, out.parent / "activity.png")
    await desktop.quit(ask=False)
    await run


async def activity_scenario(desktop, files: dict[str, Path], running: list[dict],
                            out: Path, seconds: float = 95) -> None:  # fmt: skip
    """Real tasks of every kind for `seconds`, a few failing and a few cancelled, then the
    activity view of the last hour."""
    import random

    from PySide6.QtWidgets import QApplication

    from desktop.measure import until

    w = desktop.window
    submit, cancel = desktop.bridge.submit, desktop.bridge.cancel
    rng = random.Random(10)
    for task in running[1:]:  # the user changed their mind about the long ones
        await cancel(task["id"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    n = 0
    while loop.time() < deadline:
        n += 1
        kind = rng.random()
        try:
            if kind < 0.40:
                await submit("demo.answer", {"seconds": round(rng.uniform(0.2, 2.5), 1)})
            elif kind < 0.55:
                await submit("files.checksum", {"path": str(files["photos"])})
            elif kind < 0.65:
                await submit("report.csv", {"source": str(files["table"]),
                                            "destination": str(files["out"] / f"r{n}.html")})
            elif kind < 0.73:
                await submit("files.archive", {"source": str(files["photos"]),
                                               "destination": str(files["out"] / f"a{n}.zip")})
            elif kind < 0.80:  # a program that exits non-zero: it fails
                await submit("process.run", {"program": "false"})
            elif kind < 0.87:  # over its time limit: it fails
                await submit("demo.answer", {"seconds": 5}, timeout=0.5)
            else:
                task = await submit("demo.answer", {"seconds": 30})
                loop.call_later(rng.uniform(0.5, 3), lambda t=task: asyncio.ensure_future(
                    cancel(t["id"])))
        except Exception as exc:  # a refused submit is not what this picture is about
            print(f"submit refused: {exc}")
        await asyncio.sleep(rng.uniform(0.6, 1.6))
    await until(lambda: not any(t["state"] in ("queued", "running")
                                for t in desktop.model.all_tasks()), timeout=90)  # fmt: skip
    w.activity_action.trigger()
    view = w.activity_view
    dock = w.activity_dock
    dock.setFloating(True)  # the picture is of the view: at a size that suits it
    dock.resize(1120, 700)
    before = view.refreshes
    view.refresh()
    await until(lambda: view.refreshes > before and not view.chart.empty)
    await asyncio.sleep(0.5)
    # Hover the busiest minute, as a user would, so the picture shows the highlight.
    busiest = max(range(len(view.chart.buckets)), key=lambda i: view.chart.buckets[i].total)
    view.chart.hovered = busiest
    view.chart.update()
    QApplication.processEvents()
    dock.grab().save(str(out))
    print(f"wrote {out} ({dock.width()}x{dock.height()}): {view.summary.text()}")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "screenshot.png").resolve()
    tmp = Path(tempfile.mkdtemp(prefix="herald-shot-"))
    runtime = tmp / "runtime"
    runtime.mkdir(mode=0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import qasync
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from desktop.app import DesktopApp, app_icon

    app = QApplication(sys.argv[:1])
    app.setApplicationName("Herald")
    app.setWindowIcon(app_icon())
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    desktop = DesktopApp(tmp / "data", settings)
    desktop.window.resize(1360, 820)
    files = sample_files(tmp / "files")
    with loop:
        loop.run_until_complete(scenario(desktop, files, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
