"""The question asked when the user quits with tasks queued or running.

It is opened with `open()` (window-modal, never a nested event loop): the app's asyncio work
keeps running while it shows, and the answer comes as a signal.
"""

from __future__ import annotations

from enum import Enum

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QAbstractButton, QMessageBox, QWidget


class QuitChoice(Enum):
    """What the user chose to do with the tasks still queued or running."""

    LATER = "later"  # quit; they run again the next time Herald opens
    CANCEL = "cancel"  # cancel them, then quit
    STAY = "stay"  # keep Herald open


class QuitDialog(QMessageBox):
    """"Quit Herald?" with three answers.

    Signals:
        chosen(str): a QuitChoice value, once, when a button was clicked (or the dialog
            was dismissed with Escape or its close button: STAY).
    """

    chosen = Signal(str)

    def __init__(self, count: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("quit_dialog")
        self.setIcon(QMessageBox.Icon.Question)
        self.setWindowTitle("Quit Herald?")
        self.setText(f"{count} task(s) are queued or running.")
        self.setInformativeText("If you quit now they are not lost: they start again the next "
                                "time Herald opens. Or cancel them before quitting.")  # fmt: skip
        self._buttons: dict[QAbstractButton, QuitChoice] = {}
        later = self._add("Quit, run them next time", QMessageBox.ButtonRole.AcceptRole,
                          QuitChoice.LATER)  # fmt: skip
        self._add("Cancel them and quit", QMessageBox.ButtonRole.DestructiveRole,
                  QuitChoice.CANCEL)  # fmt: skip
        stay = self._add("Keep Herald open", QMessageBox.ButtonRole.RejectRole, QuitChoice.STAY)
        self.setDefaultButton(later)
        self.setEscapeButton(stay)
        self._answered = False
        self.finished.connect(self._on_finished)

    def _add(self, text: str, role: QMessageBox.ButtonRole, choice: QuitChoice) -> QAbstractButton:
        button = self.addButton(text, role)
        self._buttons[button] = choice
        return button

    def _on_finished(self, _result: int) -> None:
        if self._answered:
            return
        self._answered = True
        self.chosen.emit(self._buttons.get(self.clickedButton(), QuitChoice.STAY).value)
