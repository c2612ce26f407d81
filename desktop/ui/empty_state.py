"""A hint over an empty table: what is going on when there is nothing to show.

"Loading your tasks…" while the history loads, "No tasks yet: pick one on the left and
press Run" for a new user, "No task matches" when a filter hides every task.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractItemView, QLabel

LOADING_TEXT = "Loading your tasks…"
EMPTY_TEXT = "No tasks yet: pick one on the left and press Run"
NO_MATCH_TEXT = "No task matches"
NO_MATCH_HINT = "Change the filter to see the others."


def hint_text(*, shown: int, total: int, loading: bool) -> str:
    """The hint for a table showing `shown` of `total` rows; "" when rows are shown."""
    if shown:
        return ""
    if loading and not total:
        return LOADING_TEXT
    if total:
        return f"{NO_MATCH_TEXT}\n{NO_MATCH_HINT}"
    return EMPTY_TEXT


class EmptyState(QLabel):
    """A muted, centred label over `view`'s viewport, sized with it."""

    def __init__(self, view: QAbstractItemView) -> None:
        super().__init__(view.viewport())
        self.setObjectName("empty_state")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setWordWrap(True)
        self.setEnabled(False)  # drawn in the palette's muted text colour
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        view.viewport().installEventFilter(self)
        self.setGeometry(view.viewport().rect())
        self.hide()

    def set_hint(self, text: str) -> None:
        self.setText(text)
        self.setAccessibleName(text)
        self.setVisible(bool(text))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Resize and watched is self.parent():
            self.setGeometry(self.parentWidget().rect())
        return False
