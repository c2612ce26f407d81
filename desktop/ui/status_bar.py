"""The status bar's pieces: each service's state and the WebSocket's."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

# Colours by state; chosen to read on light and dark palettes alike.
_COLOURS = {
    "ready": "#2e9d4f",
    "connected": "#2e9d4f",
    "starting": "#c98a00",
    "restarting": "#c98a00",
    "connecting": "#c98a00",
    "reconnecting": "#c98a00",
    "stopping": "#808080",
    "stopped": "#808080",
    "closed": "#808080",
    "failed": "#d0342c",
    "stalled": "#d0342c",
}


class StateLight(QWidget):
    """A coloured dot and a label, e.g. "● worker: ready"."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self._dot = QLabel("●")
        self._text = QLabel()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 0, 6, 0)
        layout.setSpacing(4)
        layout.addWidget(self._dot)
        layout.addWidget(self._text)
        self.set_state("stopped")

    def set_state(self, state: str, detail: str = "", tooltip: str = "") -> None:
        self.state = state
        colour = QColor(_COLOURS.get(state, "#808080"))
        pal = self._dot.palette()
        pal.setColor(QPalette.ColorRole.WindowText, colour)
        self._dot.setPalette(pal)
        self._text.setText(f"{self.name}: {detail or state}")
        self.setToolTip(tooltip or f"{self.name} is {state}")
        self.setAccessibleName(f"{self.name} {detail or state}")

    def text(self) -> str:
        return self._text.text()


class ServiceLights(QWidget):
    """One light per service plus one for the live connection."""

    def __init__(self, services: tuple[str, ...], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.lights = {name: StateLight(name) for name in services}
        for light in self.lights.values():
            layout.addWidget(light)
        self.connection = StateLight("live")
        layout.addWidget(self.connection)
        layout.setAlignment(Qt.AlignmentFlag.AlignRight)

    def set_service(self, name: str, state: str, message: str = "") -> None:
        light = self.lights.get(name)
        if light is not None:
            light.set_state(state, tooltip=message or f"{name} is {state}")

    def set_connection(self, state: str, retry_in: float | None = None) -> None:
        """Show the live connection's state; "stalled" means connected, but the notifier
        answers nothing (not even a ping), so the table may be behind."""
        detail = state
        tooltip = "Live updates from the notifier: " + state
        if state == "reconnecting" and retry_in is not None and retry_in > 0:
            detail = f"reconnecting in {retry_in:.0f} s" if retry_in >= 1 else "reconnecting"
            tooltip = "Live updates from the notifier: " + detail
        elif state == "stalled":
            tooltip = ("Live updates have stalled: the notifier has not answered for a while, "
                       "so the table may be out of date. It recovers by itself when the "
                       "notifier answers again.")  # fmt: skip
        self.connection.set_state(state, detail, tooltip)
