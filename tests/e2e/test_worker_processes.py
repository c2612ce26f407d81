"""Several worker processes on one data dir (`herald serve --workers N` on SQLite): each
has a wake-up socket of its own, and the web wakes every one, so a task never waits for an
idle worker's fallback look (30 s) while another worker is busy."""

from __future__ import annotations

import time

from tests.e2e.harness import start_serve, wait_for


def test_every_worker_process_is_woken(tmp_path_factory, runtime_dir):
    inst = start_serve(tmp_path_factory.mktemp("data"), runtime_dir,
                       "--workers", "2", "--concurrency", "1")  # fmt: skip
    try:
        client = inst.client
        wait_for(lambda: all(inst.status()[n]["state"] == "ready" for n in ("worker", "worker-2")))
        time.sleep(0.5)  # both idle, asleep on their sockets
        a = client.submit("demo.answer", {"seconds": 8})["id"]
        wait_for(lambda: client.get(a)["state"] == "running", timeout=10)
        # One worker is busy with `a`, its only slot: `b` is for the other one, which
        # only a wake-up of its own brings before its idle look.
        b = client.submit("demo.answer", {"seconds": 0})["id"]
        wait_for(lambda: client.get(b)["state"] == "succeeded", timeout=5)
        assert client.get(a)["state"] == "running"
    finally:
        inst.stop()
