"""The worker process: `herald service worker --data-dir D`."""

from __future__ import annotations

import logging
import signal
import sys

from services.auth import Authenticator
from services.config import load_config
from services.runtime import (
    announce_ready,
    cannot_start,
    die_with_parent,
    layout_from,
    service_arguments,
    setup_logging,
    watch_stdin,
)
from services.store.backend import backend_of
from services.tasks.catalog import load_catalog
from services.worker import sandbox
from services.worker.dispatcher import Dispatcher

log = logging.getLogger("herald.worker")


def policy_of(auth: Authenticator, principal: str, deny: list[str]) -> sandbox.Policy:
    """The sandbox of an attempt of `principal`, from its capabilities as auth.json says
    them when the attempt starts (a principal revoked meanwhile gets nothing at all)."""
    auth.reload()  # a stat; read again only if auth.json changed
    caps = auth.capabilities(principal)
    if caps is not None and caps.owner:
        return sandbox.owner_policy(deny)
    if caps is None:
        return sandbox.principal_policy((), (), network=False, deny=deny)
    return sandbox.principal_policy(caps.read_roots, caps.roots, network=caps.network,
                                    deny=deny)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = service_arguments("worker", argv)
    setup_logging("worker", args.log_level)
    die_with_parent()
    layout = layout_from(args)
    try:
        config = load_config(layout)
        catalog = load_catalog(config.task_modules)
        concurrency = args.workers if args.workers else config.worker_threads
        backend = backend_of(args, layout)
        authenticator = Authenticator(layout, registry=backend.principals())
        dispatcher = Dispatcher(layout, catalog, concurrency,
                                max_tasks_per_executor=config.max_tasks_per_executor,
                                max_executor_memory=config.max_executor_memory,
                                retention_seconds=config.retention_seconds,
                                retention_keep=config.retention_keep,
                                backend=backend,
                                policy_for=lambda rec: policy_of(authenticator, rec.principal,
                                                                 dispatcher.own_dirs))  # fmt: skip
    except Exception as exc:
        return cannot_start("worker", exc)
    signal.signal(signal.SIGTERM, lambda *_: dispatcher.request_stop())
    signal.signal(signal.SIGINT, lambda *_: dispatcher.request_stop())
    watch_stdin(dispatcher.stop)
    dispatcher.start_pool()  # the executors exist before anyone is told the worker is ready
    announce_ready("worker", concurrency=concurrency, tasks=len(catalog),
                   executors=[ex.pid for ex in dispatcher.executors],
                   sandbox=dispatcher.sandbox.describe())  # fmt: skip
    log.info("worker %s ready with %d executor process(es), %d task(s) in the catalog; "
             "sandbox: %s", dispatcher.identity, concurrency, len(catalog),
             dispatcher.sandbox.describe())  # fmt: skip
    dispatcher.run()
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
