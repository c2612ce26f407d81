"""Per-principal sequences: each principal's events are numbered 1, 2, 3, ... in the same
transaction as the append, retention's watermarks count in them, and a version 3 database
(one global seq) is migrated with every saved cursor still exact."""

import sqlite3

import pytest

from services.core.states import TaskState
from services.store import TaskStore
from services.store.sqlite import SCHEMA_VERSION


@pytest.fixture
def store(tmp_path):
    s = TaskStore(tmp_path / "herald.db")
    yield s
    s.close()


def lifecycle(store, principal):
    rec, queued = store.create_task(principal=principal, name="demo", args={})
    _, started = store.claim(rec.id, "w", 60)
    done = store.finish(rec.id, 1, TaskState.SUCCEEDED, result=1)
    return rec.id, [queued, started, done]


def test_each_principal_counts_its_own_events(store):
    a1, a_first = lifecycle(store, "a")
    _, b_events = lifecycle(store, "b")
    a2, a_second = lifecycle(store, "a")
    assert [e.seq for e in a_first + a_second] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in b_events] == [1, 2, 3]
    assert store.head("a") == 6 and store.head("b") == 3 and store.head("nobody") == 0
    assert store.head() == 9  # the log's own position, for the notifier only
    assert [e.seq for e in store.events_after(2, principal="a")] == [3, 4, 5, 6]
    assert [e.seq for e in store.events_after(4, task_id=a2)] == [5, 6]
    assert [e.seq for e in store.events_after(0, task_id=a1, limit=2)] == [1, 2]
    # The whole log, by position: what the notifier fans out.
    log = store.events_after(0)
    assert [e.log_pos for e in log] == list(range(1, 10))
    assert [(e.principal, e.seq) for e in log][3:6] == [("b", 1), ("b", 2), ("b", 3)]
    assert [e.log_pos for e in store.events_after(6)] == [7, 8, 9]


def test_pruning_keeps_the_counter_and_marks_in_the_principals_own_seqs(store):
    old, old_events = lifecycle(store, "a")
    lifecycle(store, "b")
    with store._write() as c:
        c.execute("UPDATE tasks SET finished_at = 0 WHERE id = ?", (old,))
    assert store.prune(older_than=86400).tasks == 1
    assert store.pruned_through("a") == old_events[-1].seq == 3
    assert store.pruned_through("b") == 0
    # Every event of "a" is gone: its next one still comes after what it was shown.
    _, later = lifecycle(store, "a")
    assert [e.seq for e in later] == [4, 5, 6]


def test_the_task_list_cursor_counts_the_principals_own_tasks(store):
    mine = []
    for _ in range(3):
        mine.append(lifecycle(store, "a")[0])
        lifecycle(store, "b")
    recs = store.list_tasks("a")
    assert [r.id for r in recs] == mine[::-1] and [r.pn for r in recs] == [3, 2, 1]
    assert [r.id for r in store.list_tasks("a", before=3, limit=1)] == [mine[1]]
    assert [r.pn for r in store.list_tasks("b")] == [3, 2, 1]


V3_SCHEMA = """
CREATE TABLE tasks (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    principal TEXT NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL, state TEXT NOT NULL,
    progress REAL, message TEXT, result TEXT, error TEXT, attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL, failures INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0, uncharged INTEGER NOT NULL DEFAULT 0,
    max_lost INTEGER NOT NULL DEFAULT 3, next_attempt_at REAL, timeout REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0, idempotency_key TEXT, lease_owner TEXT,
    lease_until REAL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    updated_at REAL NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL,
    principal TEXT NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL, attempt INTEGER NOT NULL,
    data TEXT NOT NULL);
CREATE INDEX events_principal_seq ON events (principal, seq);
CREATE INDEX events_task_seq ON events (task_id, seq);
CREATE TABLE pruned (principal TEXT PRIMARY KEY, through INTEGER NOT NULL);
PRAGMA user_version = 3;
"""


def test_a_version_3_log_is_migrated_and_saved_cursors_stay_exact(tmp_path):
    path = tmp_path / "herald.db"
    old = sqlite3.connect(path)
    old.executescript(V3_SCHEMA)
    for i, principal in enumerate(["a", "b", "a", "b", "b", "a"], 1):  # global seqs 1-6
        old.execute("INSERT INTO tasks (id, principal, name, args, state, max_attempts, "
                    "created_at, updated_at) VALUES (?, ?, 'demo', '{}', 'succeeded', 1, 0, 0)",
                    (f"t{i}", principal))  # fmt: skip
        old.execute("INSERT INTO events (task_id, principal, type, ts, attempt, data) "
                    "VALUES (?, ?, 'queued', 0, 0, '{}')", (f"t{i}", principal))  # fmt: skip
    old.execute("INSERT INTO events (task_id, principal, type, ts, attempt, data) "
                "VALUES ('t9', 'b', 'queued', 0, 0, '{}')")  # seq 7, deleted below
    old.execute("DELETE FROM events WHERE seq = 7")
    old.execute("INSERT INTO pruned VALUES ('b', 7)")
    old.commit()
    old.close()

    store = TaskStore(path)
    try:
        # Old events keep their seq; a cursor saved before the upgrade resumes exactly.
        assert [e.seq for e in store.events_after(0, principal="a")] == [1, 3, 6]
        assert [e.seq for e in store.events_after(3, principal="a")] == [6]
        assert [e.seq for e in store.events_after(2, principal="b")] == [4, 5]
        assert store.pruned_through("b") == 7  # still right: old seqs are unchanged
        # Each counter starts at the old log's head (deleted events included), so no
        # cursor a client was shown before is ever beyond it or reused.
        assert store.head("a") == store.head("b") == 7
        # ... also for a principal the old log never saw (a token with no task yet): its
        # client may have been shown that head.
        assert store.head("c") == 7
        _, new_a = lifecycle(store, "a")
        _, new_c = lifecycle(store, "c")
        assert [e.seq for e in new_a] == [8, 9, 10]
        assert [e.seq for e in new_c] == [8, 9, 10]
        assert [e.seq for e in store.events_after(6, principal="a")] == [8, 9, 10]
        assert store.head("b") == 7  # a's work did not move b
        indexes = {r[0] for r in store._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}  # fmt: skip
        assert {"events_principal_pseq", "events_task_pseq"} <= indexes
        assert "events_principal_seq" not in indexes and "tasks_principal_pn" in indexes
        # Task numbers likewise: old ones keep theirs (the list's cursor), new ones follow.
        assert [r.pn for r in store.list_tasks("a")] == [7, 6, 3, 1]  # six tasks before
        assert [r.id for r in store.list_tasks("a", before=6)] == ["t3", "t1"]
        assert [r.pn for r in store.list_tasks("c")] == [7]  # its own count, from the floor
    finally:
        store.close()
    again = TaskStore(path)  # opening it again changes nothing
    try:
        assert again.head("a") == 10 and again.head("d") == 7
        assert again._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        again.close()
