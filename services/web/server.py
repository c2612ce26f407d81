"""The web service process: wires the real store, queue and wake-ups into the app and serves.

Binds 127.0.0.1 by default (another address with `--host`, its names with
`--allowed-host`, HTTPS with `--tls-cert`/`--tls-key`), bounds slow and hostile clients
(`services.web.limits`), announces
`HERALD_READY {"service": "web", "port": P, "url": ..., "version": V}` once it listens (the
version it serves, which the supervisor's runtime file then says without reading the
package metadata itself), and stops cleanly (exit 0) on SIGTERM, SIGINT or end-of-file on
stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
from typing import Any

from aiohttp import web

# The SQLite backend's queue, imported here while OpenSSL is hidden (services.notls):
# `open_backend` imports it only when asked, after that window.
import services.queue  # noqa: F401
from services.auth import Authenticator, Exposure
from services.config import load_config
from services.runtime import (
    announce_ready,
    cannot_start,
    die_with_parent,
    is_loopback,
    layout_from,
    public_url,
    server_tls_context,
    service_arguments,
    setup_logging,
    watch_stdin,
)
from services.store.backend import backend_of
from services.store.sqlite import WRITE_STATS
from services.tasks.catalog import load_catalog
from services.web.app import herald_version, make_app
from services.web.browser import EXPOSURE, NOTIFIER_URL
from services.web.limits import GuardedSite, raise_fd_limit

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# A file to write this process's write counters and its longest event-loop stall to when
# it stops (for `python -m bench.writes`; unset, nothing is watched).
STATS_ENV = "HERALD_WEB_STATS"
PROBE_PERIOD = 0.002  # seconds between two looks of the stall probe


STALLS_MS = (5, 20, 100)  # the probe counts the stalls longer than each


async def _probe_stalls(stalls: dict[str, float]) -> None:
    """Keep in `stalls` the longest time this loop came late to a short timer, and how
    many times it came later than each of STALLS_MS."""
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(PROBE_PERIOD)
        late = loop.time() - t0 - PROBE_PERIOD
        stalls["longest_loop_stall_ms"] = max(stalls["longest_loop_stall_ms"], late * 1000)
        for ms in STALLS_MS:
            if late * 1000 > ms:
                stalls[f"loop_stalls_over_{ms}ms"] += 1


def _write_stats(path: str, stalls: dict[str, float]) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = {**WRITE_STATS.as_dict(), **{k: round(v, 2) for k, v in stalls.items()},
             "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
             "context_switches": usage.ru_nvcsw + usage.ru_nivcsw}
    with contextlib.suppress(OSError):
        with open(path, "w") as f:
            json.dump(stats, f)


async def serve(
    app: web.Application, port: int, *, access_log: bool = False, version: str | None = None,
    host: str = HOST, exposure: Exposure | None = None, ssl_context: Any = None,
) -> None:
    """Serve `app` on `host`:`port` (127.0.0.1 by default) until SIGTERM, SIGINT or stdin
    end-of-file; the readiness line says `version` (if given) and the public URL.

    Args:
        exposure: the names the Host check accepts and the page's origins (default: the
            loopback names, plain HTTP).
        ssl_context: serve HTTPS with it (None: plain HTTP).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop() -> None:
        # Called from the stdin watcher's thread, possibly after the loop has closed.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch_stdin(request_stop)
    # The access log costs a formatted record per request: only when debugging.
    runner_access_log = logging.getLogger("aiohttp.access") if access_log else None
    exposure = exposure or Exposure.local(port)
    app[EXPOSURE] = exposure  # port 0 (any free one): the port a request arrives on
    runner = web.AppRunner(app, access_log=runner_access_log, handle_signals=False)
    await runner.setup()
    try:
        site = GuardedSite(runner, host, port, access_log=runner_access_log,
                           ssl_context=ssl_context)  # fmt: skip
        await site.start()
        actual = site.port
        url = public_url(exposure.scheme, host, exposure.names, actual)
        log.info("listening on %s://%s:%d as %s (at most %d connections at once)",
                 exposure.scheme, host, actual, url, site.guard.cap)  # fmt: skip
        extra = {} if version is None else {"version": version}
        announce_ready("web", port=actual, url=url, **extra)
        stats_file = os.environ.get(STATS_ENV)
        stalls = {"longest_loop_stall_ms": 0.0, **{f"loop_stalls_over_{ms}ms": 0.0
                                                    for ms in STALLS_MS}}  # fmt: skip
        probe = asyncio.ensure_future(_probe_stalls(stalls)) if stats_file else None
        await stop.wait()
        log.info("stopping")
        if probe is not None and stats_file:
            probe.cancel()
            _write_stats(stats_file, stalls)
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None) -> int:
    """Run the web service; returns the exit status."""
    args = service_arguments("web", argv)
    setup_logging("web", args.log_level)
    die_with_parent()
    raise_fd_limit()  # before anything opens a file: the connection cap is set from it
    layout = layout_from(args)
    try:
        ssl_context = (server_tls_context(args.tls_cert, args.tls_key)
                       if args.tls_cert is not None else None)  # fmt: skip
    except ValueError as exc:
        return cannot_start("web", exc)
    try:
        config = load_config(layout)
        catalog = load_catalog(config.task_modules)
        backend = backend_of(args, layout)
        store = backend.store()
        queue = backend.queue()
        worker_wake = backend.loop_waker("worker")
        notifier_wake = backend.loop_waker("notifier")
        registry = backend.principals()
        if registry is not None:
            registry.join(layout)  # this node's owner token is the cluster's (or the first)
    except Exception as exc:
        return cannot_start("web", exc)
    app = make_app(
        layout,
        catalog,
        store,
        queue,
        worker_wake,
        notifier_wake,
        max_lost=config.max_attempts,
        authenticator=Authenticator(layout, registry=registry),
        runtime_dir=args.runtime_dir,
        backend=backend,
    )
    exposure = Exposure(args.port, tuple(n.lower() for n in args.allowed_host),
                        loopback=is_loopback(args.host), tls=ssl_context is not None)
    if not exposure.loopback and ssl_context is None:
        log.warning("serving plain HTTP on %s (--insecure-http): tokens and cookies cross "
                    "the network in clear", args.host)  # fmt: skip
    if args.notifier_url:
        app[NOTIFIER_URL] = args.notifier_url
    try:
        # The app read the metadata already (for health and the OpenAPI document): asking
        # again is a lookup in importlib.metadata's cache.
        asyncio.run(serve(app, args.port, access_log=args.log_level.upper() == "DEBUG",
                          version=herald_version(), host=args.host, exposure=exposure,
                          ssl_context=ssl_context))  # fmt: skip
    except OSError as exc:  # the port is taken, most likely
        return cannot_start("web", exc, args.port)
    finally:
        worker_wake.close()
        notifier_wake.close()
        store.close()
    return 0
