"""The search index: kept in step with the ledger by every write, one principal's tasks
only, filters by name and time, and a version 4 ledger migrated with its tasks indexed."""

import sqlite3
import time

import pytest

from services.core.search import parse
from services.core.states import TaskState
from services.store import TaskStore
from tests.services.store.test_sequences import V3_SCHEMA


@pytest.fixture
def store(tmp_path):
    s = TaskStore(tmp_path / "herald.db")
    yield s
    s.close()


def found(store, text, principal="me", **kw):
    return [r.id for r in store.list_tasks(principal, query=parse(text), **kw)]


def integrity(store):
    """FTS5's own check of the index against the finished tasks of the ledger (raises if
    they disagree)."""
    store._conn.execute("INSERT INTO tasks_fts (tasks_fts, rank) VALUES ('integrity-check', 1)")


def test_the_index_follows_submit_finish_and_delete(store):
    rec, _ = store.create_task(principal="me", name="files.checksum",
                               args={"path": "/home/u/sales-2026.csv"})  # fmt: skip
    assert found(store, "sales") == [rec.id]
    assert found(store, "checksum") == [rec.id]  # the name
    assert found(store, rec.id[:6]) == [rec.id]  # an id prefix, as the user types it
    assert found(store, "sal") == [rec.id]  # the last word is a prefix
    assert found(store, "sal report") == []  # every word must match
    store.claim(rec.id, "w", 60)
    store.progress(rec.id, 1, 0.5, "hashing quarterly")  # a running task's message
    assert found(store, "quarterly") == [rec.id]
    assert store._conn.execute("SELECT COUNT(*) FROM tasks_fts").fetchone()[0] == 0  # unindexed
    store.finish(rec.id, 1, TaskState.SUCCEEDED, result={"digest": "beefcafe", "files": 3})
    assert found(store, "beefcafe") == [rec.id]  # the result
    assert found(store, "quarterly") == [rec.id]  # the message it finished with
    failed, _ = store.create_task(principal="me", name="process.run", args={"program": "x"})
    store.claim(failed.id, "w", 60)
    store.finish(failed.id, 1, TaskState.FAILED,
                 error={"code": "exit_status", "message": "Quota exceeded on volume"})
    assert found(store, "quota volume") == [failed.id]  # the message of a finished task
    assert found(store, '"volume quota"') == []  # a phrase keeps its order
    integrity(store)
    store.delete_task(rec.id, "me")
    assert found(store, "sales") == [] and found(store, "quota") == [failed.id]
    integrity(store)


def test_pruning_takes_tasks_out_of_the_index(store):
    ids = []
    for i in range(5):
        rec, _ = store.create_task(principal="me", name="demo", args={"word": f"apple{i}"})
        store.request_cancel(rec.id, "me")
        ids.append(rec.id)
    assert len(found(store, "apple")) == 5
    store.prune(keep=2)
    assert found(store, "apple") == ids[:2:-1]  # the newest two, newest first
    integrity(store)


def test_search_sees_only_the_principals_own_tasks(store):
    mine, _ = store.create_task(principal="me", name="demo", args={"word": "secret"})
    theirs, _ = store.create_task(principal="other", name="demo", args={"word": "secret"})
    assert found(store, "secret") == [mine.id]
    assert found(store, "secret", principal="other") == [theirs.id]
    assert found(store, "secret", principal="nobody") == []


def test_pages_names_and_times(store):
    ids, times = [], []
    for i in range(7):
        rec, _ = store.create_task(principal="me", name="a" if i % 2 else "b",
                                   args={"word": "common"})  # fmt: skip
        store.create_task(principal="other", name="a", args={"word": "common"})
        if i % 3:  # finished (indexed) and queued (matched row by row) tasks mixed
            store.request_cancel(rec.id, "me")
        ids.append(rec.id)
        times.append(rec.created_at)
        time.sleep(0.002)
    newest_first = ids[::-1]
    page = store.list_tasks("me", query=parse("common"), limit=3)
    assert [r.id for r in page] == newest_first[:3]
    rest = store.list_tasks("me", query=parse("common"), limit=10, before=page[-1].pn)
    assert [r.id for r in rest] == newest_first[3:]
    assert found(store, "common", name="a") == [ids[5], ids[3], ids[1]]
    assert [r.id for r in store.list_tasks("me", name="a")] == [ids[5], ids[3], ids[1]]
    since, until = times[2], times[5]
    assert found(store, "common", since=since, until=until) == [ids[4], ids[3], ids[2]]
    assert [r.id for r in store.list_tasks("me", since=since, until=until)] == [
        ids[4], ids[3], ids[2]]
    assert [r.id for r in store.list_tasks("me", since=since, until=until, before=rest[0].pn,
                                           limit=1)] == [ids[2]]  # fmt: skip
    assert store.list_tasks("me", until=times[0]) == []
    assert store.list_tasks("me", since=times[-1] + 1) == []


V4_EXTRA = """
ALTER TABLE tasks ADD COLUMN pn INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN pseq INTEGER NOT NULL DEFAULT 0;
CREATE TABLE heads (principal TEXT PRIMARY KEY, head INTEGER NOT NULL, tasks INTEGER NOT NULL);
PRAGMA user_version = 4;
"""


def test_a_version_4_ledger_is_migrated_with_its_tasks_indexed(tmp_path):
    path = tmp_path / "herald.db"
    old = sqlite3.connect(path)
    old.executescript(V3_SCHEMA + V4_EXTRA)
    for i, (principal, state) in enumerate([("me", "succeeded"), ("you", "failed"),
                                            ("me", "running")], 1):  # fmt: skip
        old.execute("INSERT INTO tasks (id, principal, name, args, state, message, result, "
                    "max_attempts, created_at, updated_at, pn) VALUES (?, ?, 'demo', ?, ?, "
                    "'went fine', '\"zebra\"', 1, 0, 0, ?)",
                    (f"t{i}", principal, f'{{"file": "old{i}.csv"}}', state, i))  # fmt: skip
    old.execute("INSERT INTO heads VALUES ('', 3, 3)")
    old.commit()
    old.close()
    store = TaskStore(path)
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == 5
        assert found(store, "old1") == ["t1"] and found(store, "old2") == []
        assert found(store, "old2", principal="you") == ["t2"]
        assert found(store, "zebra") == ["t3", "t1"]
        assert found(store, "fine") == ["t3", "t1"]  # indexed, and matched while running
        assert found(store, "fine", states=[TaskState.SUCCEEDED]) == ["t1"]
        assert store._conn.execute("SELECT COUNT(*) FROM tasks_fts").fetchone()[0] == 2
        integrity(store)
        rec, _ = store.create_task(principal="me", name="demo", args={"file": "new.csv"})
        assert found(store, "csv") == [rec.id, "t3", "t1"]  # and it is kept in step
    finally:
        store.close()
