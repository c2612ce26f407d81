"""Which failures mean "the disk is full", from real SQLite and OS errors."""

from __future__ import annotations

import contextlib
import errno
import sqlite3

import pytest

from services.store.failures import DiskWatch, StorageProblem, is_disk_full, storage_problem


def full_database_error() -> sqlite3.Error:
    """The error SQLite raises when a write finds no room (a page limit stands for the
    disk's size)."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("PRAGMA max_page_count = 2")
        with pytest.raises(sqlite3.OperationalError) as caught:
            for _ in range(100):
                conn.execute("INSERT INTO t VALUES (randomblob(3000))")
    return caught.value


def test_sqlite_full_and_enospc_are_disk_full():
    exc = full_database_error()
    assert exc.sqlite_errorcode == 13
    assert storage_problem(exc) is StorageProblem.DISK_FULL and is_disk_full(exc)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))


def test_io_errors_are_storage_errors_not_disk_full():
    assert storage_problem(OSError(errno.EIO, "I/O error")) is StorageProblem.IO_ERROR
    assert not is_disk_full(OSError(errno.EIO, "I/O error"))


def test_other_failures_are_not_storage_problems(tmp_path):
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        with pytest.raises(sqlite3.OperationalError) as bad_sql:
            conn.execute("SELECT nothing FROM nowhere")
    assert storage_problem(bad_sql.value) is None
    closed = sqlite3.connect(":memory:")
    closed.close()
    with pytest.raises(sqlite3.ProgrammingError) as programming:
        closed.execute("SELECT 1")
    assert storage_problem(programming.value) is None
    assert storage_problem(FileNotFoundError(errno.ENOENT, "gone")) is None
    assert storage_problem(ValueError("no")) is None


def test_a_wrapped_disk_full_is_found_through_its_cause():
    try:
        try:
            raise full_database_error()
        except sqlite3.Error as exc:
            raise RuntimeError("could not enqueue") from exc
    except RuntimeError as outer:
        assert is_disk_full(outer)


def test_disk_watch_says_full_for_a_while_after_a_failed_write(tmp_path):
    now = [100.0]
    watch = DiskWatch(tmp_path, low_space=0, window=5.0, clock=lambda: now[0])
    assert watch.problem() is None
    assert watch.failed(StorageProblem.DISK_FULL, full_database_error())  # a new episode
    assert not watch.failed(StorageProblem.DISK_FULL, full_database_error())  # the same
    problem = watch.problem()
    assert problem is not None and problem[0] is StorageProblem.DISK_FULL
    assert "disk is full" in problem[1]
    now[0] += 5.0
    assert watch.problem() is None


def test_disk_watch_says_full_when_free_space_is_low(tmp_path):
    watch = DiskWatch(tmp_path, low_space=2**62)  # no disk has that much free
    problem = watch.problem()
    assert problem is not None and problem[0] is StorageProblem.DISK_FULL
    assert "KB free" in problem[1]


def test_an_io_error_on_a_full_disk_is_taken_for_no_room(tmp_path):
    io_error = OSError(errno.EIO, "I/O error")
    assert DiskWatch(tmp_path, low_space=0).classify(io_error) is StorageProblem.IO_ERROR
    full = DiskWatch(tmp_path, low_space=2**62)
    assert full.classify(io_error) is StorageProblem.DISK_FULL
    assert full.classify(ValueError("no")) is None
