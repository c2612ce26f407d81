"""The web service never waits for SQLite's write lock on its event loop: while another
process holds the ledger's lock, requests are answered; writes waiting meanwhile are
committed together; a 202 is durable (the process killed right after it).

`api` is the conftest's running app (class `Api`), typed `Any` (see test_submit.py).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

from services.auth import ensure_install_token
from services.layout import DataLayout
from services.queue import TaskQueue
from services.store.sqlite import WRITE_STATS, TaskStore
from services.store.writer import QUIET
from services.web.app import WRITER
from tests.services.store.test_writer import until, write_lock_held
from tests.services.web.test_server import reap, start, wait_ready


async def test_requests_are_answered_while_another_process_holds_the_write_lock(
        api: Any) -> None:  # fmt: skip
    loop_waits = WRITE_STATS.loop_lock_waits
    with write_lock_held(api.layout.ledger_db) as release:
        waits = WRITE_STATS.lock_waits
        submit = asyncio.ensure_future(api.submit("test.noop"))
        cancel = asyncio.ensure_future(api.call("POST", "/api/tasks/" + "0" * 32 + "/cancel"))
        await until(lambda: WRITE_STATS.lock_waits > waits)  # a write waits for the lock
        health = await api.call("GET", "/api/health")
        listed = await api.call("GET", "/api/tasks")
        assert not release.is_set()  # answered while the lock was still held
        assert health.status == 200 and listed.status == 200
        assert not submit.done() and not cancel.done()  # no answer before the commit
        release.set()
        assert (await submit).status == 202
        assert (await cancel).status == 404
    assert WRITE_STATS.loop_lock_waits == loop_waits  # none of the waiting on the loop
    assert (await api.call("GET", "/api/tasks")).body["tasks"][0]["task"] == "test.noop"


async def test_submits_waiting_for_the_lock_share_one_transaction_and_queue_write(
        api: Any) -> None:  # fmt: skip
    writer = api.app[WRITER]
    with write_lock_held(api.layout.ledger_db) as release:
        first = asyncio.ensure_future(api.submit("test.noop"))
        await until(lambda: writer.writing == 1)
        rest = [asyncio.ensure_future(api.submit("test.echo", {"text": str(i)}))
                for i in range(20)]  # fmt: skip
        await until(lambda: writer.pending == 20)
        groups, enqueues = writer.groups, writer.enqueues
        release.set()
        answers = await asyncio.gather(first, *rest)
    assert [a.status for a in answers] == [202] * 21
    assert writer.groups - groups == 2  # the first, then the 20 that waited: one transaction
    assert writer.enqueues - enqueues == 2  # ... and one queue transaction
    ids = [a.body["id"] for a in answers]
    assert [str(t.args[0]) for t in api.queue.huey.pending()] == ids  # in order
    mine = api.store.events_after(0, principal=api.store.get_task(ids[0]).principal)
    assert [ev.task_id for ev in mine] == ids  # the log's order is the submits' order


async def test_an_idempotency_conflict_in_a_group_answers_that_request_only(api: Any) -> None:
    key = {"Idempotency-Key": "k1"}
    assert (await api.submit("test.echo", {"text": "a"}, headers=key)).status == 202
    writer = api.app[WRITER]
    with write_lock_held(api.layout.ledger_db) as release:
        first = asyncio.ensure_future(api.submit("test.noop"))
        await until(lambda: writer.writing == 1)
        group = [asyncio.ensure_future(api.submit("test.echo", {"text": "b"})),
                 asyncio.ensure_future(api.submit("test.echo", {"text": "c"}, headers=key)),
                 asyncio.ensure_future(api.submit("test.echo", {"text": "a"}, headers=key)),
                 asyncio.ensure_future(api.submit("test.echo", {"text": "d"}))]  # fmt: skip
        await until(lambda: writer.pending == 4)
        release.set()
        answers = await asyncio.gather(first, *group)
    assert [a.status for a in answers] == [202, 202, 409, 200, 202]
    assert answers[2].body["error"]["code"] == "idempotency_conflict"
    assert answers[3].headers["Idempotent-Replayed"] == "true"


async def test_a_submit_after_a_quiet_moment_is_written_on_the_loop_when_the_locks_are_free(
        api: Any) -> None:  # fmt: skip
    """No thread to wake (its CPU may be halted: ~1.3 ms here after idle), no lock waited
    for: the ledger and the queue both have it before the 202, in order."""
    writer = api.app[WRITER]
    waits = WRITE_STATS.lock_waits
    ids = []
    for _ in range(3):
        await asyncio.sleep(2 * QUIET)
        inline = writer.inline
        answer = await api.submit("test.noop")
        assert answer.status == 202
        assert writer.inline == inline + 1  # written on the loop
        ids.append(answer.body["id"])
    assert writer._thread is None  # the thread was never needed
    assert WRITE_STATS.lock_waits == waits
    assert [str(t.args[0]) for t in api.queue.huey.pending()] == ids
    assert [api.store.get_task(i).state.value for i in ids] == ["queued"] * 3


async def test_a_quiet_submit_whose_queue_lock_is_held_is_enqueued_by_the_thread(
        api: Any) -> None:  # fmt: skip
    """The ledger's lock was free (written on the loop), the queue's was not: the thread
    waits for it and enqueues, the loop does not; the 202 comes after the enqueue, and a
    submit meanwhile goes behind it (the thread is busy now), in order."""
    writer = api.app[WRITER]
    loop_waits = WRITE_STATS.loop_lock_waits
    await asyncio.sleep(2 * QUIET)
    with write_lock_held(api.layout.queue_db) as release:
        first = asyncio.ensure_future(api.submit("test.noop"))
        await until(lambda: writer.writing == 1)  # the thread, waiting for the queue
        second = asyncio.ensure_future(api.submit("test.noop"))
        await until(lambda: writer.pending == 1)
        health = await api.call("GET", "/api/health")
        assert health.status == 200 and not first.done() and not second.done()
        release.set()
        answers = [await first, await second]
    assert [a.status for a in answers] == [202, 202]
    assert writer.inline >= 1
    assert WRITE_STATS.loop_lock_waits == loop_waits
    ids = [a.body["id"] for a in answers]
    assert [str(t.args[0]) for t in api.queue.huey.pending()] == ids


def post(port: int, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/api/tasks", body=json.dumps(body), headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_a_202_is_in_the_ledger_and_the_queue_after_a_kill_9_right_after_it(
        tmp_path: Path) -> None:  # fmt: skip
    layout = DataLayout(tmp_path / "data")
    token = ensure_install_token(layout)
    proc = start(layout.root)
    try:
        port = wait_ready(proc)["port"]
        accepted: list[str] = []
        lock = threading.Lock()

        def client() -> None:
            for _ in range(10):
                status, body = post(port, token, {"task": "demo.answer"})
                assert status == 202, body
                with lock:
                    accepted.append(body["id"])

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        os.kill(proc.pid, signal.SIGKILL)  # right after the last answer
        proc.wait(10)
    finally:
        reap(proc)
    assert len(accepted) == 40
    with closing(sqlite3.connect(layout.ledger_db)) as conn:
        ledger = {r[0] for r in conn.execute("SELECT id FROM tasks WHERE state = 'queued'")}
    assert ledger == set(accepted)
    assert TaskQueue(layout).pending_ids() == set(accepted)
    TaskStore(layout.ledger_db).close()  # and it opens again
