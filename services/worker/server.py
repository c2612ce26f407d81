"""The worker process: `herald service worker --data-dir D`."""

from __future__ import annotations

import logging
import signal
import sys

from services.config import load_config
from services.runtime import (
    announce_ready,
    die_with_parent,
    layout_from,
    service_arguments,
    setup_logging,
    watch_stdin,
)
from services.tasks.catalog import load_catalog
from services.worker.runner import Runner

log = logging.getLogger("herald.worker")


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("worker", argv)
    setup_logging("worker", args.log_level)
    die_with_parent()
    layout = layout_from(args)
    try:
        config = load_config(layout)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    catalog = load_catalog(config.task_modules)
    threads = args.workers if args.workers else config.worker_threads
    runner = Runner(layout, catalog, threads=threads)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    watch_stdin(runner.stop)
    announce_ready("worker", pid_threads=threads, tasks=len(catalog))
    log.info("worker %s ready with %d thread(s), %d task(s) in the catalog",
             runner.identity, threads, len(catalog))  # fmt: skip
    runner.run()
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
