"""Removing finished tasks with an undo: `PendingRemoval` takes them out of the table at
once and has them deleted on the server only when the undo window has passed.

One removal is pending at a time: removing more while one waits commits the waiting one
first (the status bar offers to undo the latest). A removal still pending when the app
quits is not committed: the tasks are still in the ledger the next time (the safe side).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from desktop.task_model import TaskModel

UNDO_SECONDS = 6.0


class PendingRemoval(QObject):
    """Finished tasks removed from the table, deleted for good after `seconds`.

    Signals:
        committed(list): these ids' undo window passed: delete them on the server now.
        expired(): no removal is pending any more (committed or undone): hide the offer.
    """

    committed = Signal(list)
    expired = Signal()

    def __init__(self, model: TaskModel, parent: QObject | None = None, *,
                 seconds: float = UNDO_SECONDS) -> None:  # fmt: skip
        super().__init__(parent)
        self.model = model
        self._ids: list[str] = []
        self._timer = QTimer(self, singleShot=True, interval=int(seconds * 1000))
        self._timer.timeout.connect(self._on_timer_timeout)

    def remove(self, ids: list[str]) -> list[str]:
        """Take these tasks out of the table; returns those it took (known, not pending)."""
        self.commit()
        self._ids = self.model.park(ids)
        if self._ids:
            self._timer.start()
        return list(self._ids)

    def set_window(self, seconds: float) -> None:
        """How long a removal may be undone (from the next removal on)."""
        self._timer.setInterval(int(seconds * 1000))

    def pending(self) -> list[str]:
        return list(self._ids)

    def undo(self) -> list[str]:
        """Put the pending tasks back; returns their ids (none if nothing was pending)."""
        self._timer.stop()
        ids, self._ids = self._ids, []
        self.model.restore(ids)
        if ids:
            self.expired.emit()
        return ids

    def commit(self) -> None:
        """End the undo window now: the pending tasks are deleted (`committed`)."""
        self._timer.stop()
        ids, self._ids = self._ids, []
        if ids:
            self.model.forget_parked(ids)
            self.committed.emit(ids)
            self.expired.emit()

    @Slot()
    def _on_timer_timeout(self) -> None:
        self.commit()
