"""`python -m bench skeleton`'s skeleton, run for real: every result comes, every task's
events come in order (its figures are never asserted)."""

import asyncio
import json
import sqlite3

from bench.skeleton import start
from embedded.client import AsyncHeraldClient

TASKS = 30  # per principal


async def _drive(api: str, ws: str, token: str) -> tuple[list[str], list[tuple[int, str, str]]]:
    """Submit TASKS tasks at once from one principal; its task ids and the events its
    stream got until every one succeeded: (seq, task id, event type)."""
    async with AsyncHeraldClient(api, ws, token) as http:
        stream = http.events()
        await stream.open()
        ids = [t["id"] for t in await asyncio.gather(
            *(http.submit("demo.answer", {"seconds": 0}) for _ in range(TASKS)))]  # fmt: skip
        got: list[tuple[int, str, str]] = []
        left = set(ids)

        async def read() -> None:
            async for msg in stream:
                ev = msg.event
                if ev is None:
                    continue
                got.append((ev.seq, ev.task_id, ev.type.value))
                if ev.type.value == "succeeded":
                    assert ev.data == {"result": 42}
                    left.discard(ev.task_id)
                    if not left:
                        return

        try:
            await asyncio.wait_for(read(), 30)
        finally:
            await stream.close()
        return ids, got


async def test_every_result_comes_and_each_tasks_events_in_order(tmp_path):
    run = start(tmp_path, 2)
    try:
        both = await asyncio.gather(*(_drive(run.api, run.ws, t) for t in run.tokens))
    finally:
        run.stop()
    for ids, got in both:
        seqs = [seq for seq, _, _ in got]
        assert seqs == sorted(set(seqs))  # each once, in order
        assert {task for _, task, _ in got} == set(ids)  # no other principal's
        for task_id in ids:
            assert [t for _, task, t in got if task == task_id] == [
                "queued", "started", "succeeded"]  # fmt: skip
    db = sqlite3.connect(tmp_path / "ledger.db")
    rows = db.execute("select state, result from tasks").fetchall()
    db.close()
    assert rows == [("succeeded", json.dumps(42))] * (2 * TASKS)
