"""Storage failures: which exceptions mean the data disk is full (or failing), and what a
service knows of its disk's room.

SQLite says SQLITE_FULL ("database or disk is full") when a write finds no space, and
SQLITE_IOERR_* when a write, a sync or the growth of its shared-memory file fails (which a
full disk causes too); plain file writes raise OSError ENOSPC (or EDQUOT past a quota).
None of these is a bug of the caller: the write can succeed later, once there is room.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

SQLITE_IOERR, SQLITE_FULL = 10, 13  # primary result codes (the low byte of extended ones)
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})
_IO = frozenset({errno.EIO, errno.EROFS})
# Less free space than this is "full": a database transaction needs a few pages of WAL,
# its checkpoint more, and a sliver that fits a write or two is not room to work in.
LOW_SPACE = 1024 * 1024
# Seconds a service keeps saying "disk full" after a write of its own failed for it (the
# free space it sees may say otherwise, e.g. past a quota).
FAILURE_WINDOW = 5.0


class StorageProblem(StrEnum):
    """Why a write failed, when it was the storage's fault (the API's error codes)."""

    DISK_FULL = "disk_full"  # no room: SQLITE_FULL, ENOSPC, EDQUOT
    IO_ERROR = "storage_error"  # the disk failed the write (SQLITE_IOERR, EIO, EROFS)


def storage_problem(exc: BaseException) -> StorageProblem | None:
    """What storage failure `exc` is (following its causes), or None if it is not one."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, sqlite3.Error):
            code = getattr(cur, "sqlite_errorcode", None)
            if code is not None:
                if code & 0xFF == SQLITE_FULL:
                    return StorageProblem.DISK_FULL
                if code & 0xFF == SQLITE_IOERR:
                    return StorageProblem.IO_ERROR
            elif "disk is full" in str(cur):
                return StorageProblem.DISK_FULL
            elif "disk I/O error" in str(cur):
                return StorageProblem.IO_ERROR
        elif (redis_problem := _redis_problem(cur)) is not None:
            return redis_problem
        elif isinstance(cur, OSError):
            if cur.errno in _NO_ROOM:
                return StorageProblem.DISK_FULL
            if cur.errno in _IO:
                return StorageProblem.IO_ERROR
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None


def _redis_problem(exc: BaseException) -> StorageProblem | None:
    """A Redis backend's failure as a storage problem: out of memory (`maxmemory`: no
    room, as a full disk) or the server unreachable (a failing storage: back off and
    retry). Looked up, not imported: a process on SQLite never loads redis-py."""
    errors = sys.modules.get("redis.exceptions")
    if errors is None or not isinstance(exc, errors.RedisError):
        return None
    if isinstance(exc, errors.ResponseError) and str(exc).startswith("OOM"):
        return StorageProblem.DISK_FULL
    if isinstance(exc, (errors.ConnectionError, errors.TimeoutError, errors.BusyLoadingError,
                        errors.ReadOnlyError)):  # fmt: skip
        return StorageProblem.IO_ERROR
    return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says a write found no room."""
    return storage_problem(exc) is StorageProblem.DISK_FULL


def free_bytes(path: Path | str) -> int | None:
    """Bytes this process may still write on the filesystem of `path` (None: unknown).
    Root may use the blocks a filesystem reserves for it; others may not."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


class DiskWatch:
    """What one service knows of its data disk's room: the last write that failed for
    lack of it, and the free space now.

    Args:
        root: a path on the disk (the data dir).
        low_space: fewer free bytes than this is full.
        window: seconds a failed write keeps the disk full, whatever the free space says.
    """

    def __init__(self, root: Path | str, *, low_space: int = LOW_SPACE,
                 window: float = FAILURE_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.root = Path(root)
        self.low_space = low_space
        self.window = window
        self._clock = clock
        self._failed_at: float | None = None
        self._problem: StorageProblem | None = None
        self._error = ""

    def classify(self, exc: BaseException) -> StorageProblem | None:
        """What storage failure `exc` is; an I/O error while the disk is (nearly) full is
        taken for what it most likely is: no room (SQLite reports a failed growth of its
        shared-memory file or a failed sync as I/O errors)."""
        problem = storage_problem(exc)
        if problem is StorageProblem.IO_ERROR:
            free = free_bytes(self.root)
            if free is not None and free < self.low_space:
                return StorageProblem.DISK_FULL
        return problem

    def failed(self, problem: StorageProblem, exc: BaseException) -> bool:
        """A write failed for this reason. Returns whether that starts a new episode (no
        failure within the window before): worth a line in the log."""
        now = self._clock()
        new = self._failed_at is None or now - self._failed_at >= self.window
        self._failed_at = now
        self._problem = problem
        self._error = str(exc)[:200]
        return new

    def problem(self) -> tuple[StorageProblem, str] | None:
        """The storage's problem now, with a sentence for people; None if it is fine."""
        free = free_bytes(self.root)
        if free is not None and free < self.low_space:
            return StorageProblem.DISK_FULL, (
                f"The data disk is full ({free // 1024} KB free): new tasks "
                "are refused and running ones wait to be recorded. Free some space: Herald "
                "resumes by itself.")  # fmt: skip
        if self._failed_at is not None and self._clock() - self._failed_at < self.window:
            assert self._problem is not None
            what = "found no room" if self._problem is StorageProblem.DISK_FULL else "failed"
            return self._problem, f"A write to the data dir {what}: {self._error}"
        return None
