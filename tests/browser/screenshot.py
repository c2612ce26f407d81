"""docs/browser.png: the task page in Chromium with tasks running and finished.

    python -m tests.browser.screenshot docs/browser.png     (make screenshot-browser)

A real `herald serve` in temporary folders, signed in through `herald open --print`; the
tasks are run from the page's own form.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browser.conftest import CHROMIUM, run_from_form, sign_in
from tests.e2e.harness import start_serve

CSV = """city,units,price,shipped
Oslo,3,9.50,2026-11-02
Lima,12,4.25,2026-11-03
Pune,7,,2026-11-03
Oslo,5,9.75,2026-11-05
Quito,9,3.10,2026-11-08
"""


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="herald-shot-") as tmp:
        root = Path(tmp)
        files = root / "files"
        files.mkdir()
        (files / "sales.csv").write_text(CSV)
        inst = start_serve(root / "data", root / "runtime", "--concurrency", "3")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM))
                context = browser.new_context(
                    viewport={"width": 1280, "height": 860},
                    color_scheme="dark" if os.environ.get("HERALD_SCHEME") == "dark" else "light",
                    device_scale_factor=1,
                )
                page = sign_in(inst, context)
                done = run_from_form(page, "demo.answer", seconds="0.3")
                page.wait_for_selector(f"#tasks li[data-id='{done}'][data-state=succeeded]")
                stopped = run_from_form(page, "demo.answer", seconds="300")
                page.wait_for_selector("#detail[data-state=running]")
                page.click("#detail-cancel")
                page.wait_for_selector(f"#tasks li[data-id='{stopped}'][data-state=cancelled]")
                run_from_form(page, "demo.answer", seconds="600")
                run_from_form(page, "demo.answer", seconds="40")
                report = run_from_form(page, "report.csv", source=str(files / "sales.csv"))
                page.wait_for_selector(f"#detail[data-id='{report}'][data-state=succeeded]")
                page.select_option("#task-select", "demo.answer")
                page.fill("#arg-seconds", "30")
                page.locator("#arg-seconds").blur()
                page.wait_for_timeout(1500)  # the running ones move on a little
                page.locator("#detail-output").scroll_into_view_if_needed()
                page.evaluate("() => window.scrollTo(0, 0)")
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            inst.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/browser.png"))
