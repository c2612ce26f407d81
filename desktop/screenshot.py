"""Make docs/screenshot.png: the real app, real services, tasks in flight and finished;
and docs/screenshot-result.png: the same window showing a checksum's readable result.

    python -m desktop.screenshot [OUT.png]      (`make screenshot` runs it under Xvfb)
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
    await desktop.quit(ask=False)
    await run


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
