"""The folder of a worker's attempt temp dirs, in the system's temp dir, and the sweep of
those whose worker was killed.

A worker makes one `herald-attempts-*` folder for the temp dirs of its attempts and removes
it when it ends. A worker killed with SIGKILL (or by the OOM killer, or a power cut) cannot:
its folder, and whatever its tasks left in their temp dirs, would stay in /tmp for good.
So each folder holds a `.lock` file that its worker keeps locked (flock) for as long as it
lives; the kernel drops the lock with the process. A starting worker removes every such
folder of this user's whose lock it can take: its worker is gone, whoever it was (another
data dir's instance, or an older run of this one).

No race with a worker making its folder: the lock file is locked under another name and
only then renamed `.lock`, so a `.lock` that can be locked is always a dead worker's.
Folders without a `.lock` (made by an older Herald) are left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile

log = logging.getLogger("herald.worker")

PREFIX = "herald-attempts-"
LOCK = ".lock"


class TempRoot:
    """A worker's attempts folder: made on first use (and again if someone removed it),
    locked for the worker's life, removed by `close`."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._lock_fd: int | None = None
        self._swept = False

    def path(self) -> str:
        """The folder (made now if it does not exist).

        Raises:
            OSError: it cannot be made.
        """
        if self._path is not None and os.path.isdir(self._path):
            return self._path
        self._release()
        self.sweep_once()
        path = tempfile.mkdtemp(prefix=PREFIX)
        try:
            fd = os.open(os.path.join(path, LOCK + ".new"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)  # fmt: skip
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(os.path.join(path, LOCK + ".new"), os.path.join(path, LOCK))
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        self._path, self._lock_fd = path, fd
        return path

    def sweep_once(self) -> None:
        """`sweep()`, the first time only (a worker's start)."""
        if not self._swept:
            self._swept = True
            sweep()

    @property
    def current(self) -> str | None:
        """The folder if it was made (it may since have been removed by someone)."""
        return self._path

    def close(self) -> None:
        """Remove the folder and everything in it."""
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._path = self._lock_fd = None


def sweep(parent: str | None = None) -> int:
    """Remove the attempts folders in `parent` (the system's temp dir) whose worker is gone;
    how many it removed."""
    parent = parent or tempfile.gettempdir()
    removed = 0
    uid = os.getuid()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != uid:
                continue
            fd = os.open(os.path.join(entry.path, LOCK), os.O_RDONLY | os.O_CLOEXEC
                         | os.O_NOFOLLOW)  # fmt: skip
        except OSError:
            continue  # no lock file: an older Herald's, or not a folder of ours
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its worker lives
            shutil.rmtree(entry.path, ignore_errors=True)  # (holding the lock meanwhile)
            removed += 1
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d attempts folder(s) of workers that were killed", removed)
    return removed
