"""How a task's outcome looks in the table: a colour and an icon per outcome, readable on
light and on dark palettes.

Failed, timed-out and cancelled tasks must not look like succeeded ones. Each outcome has
one hue; its shade is picked for the palette's base colour (dark text on a light base,
light text on a dark one) and then darkened or lightened until it has a contrast of at
least 4.5:1 against that base (WCAG AA for text), so a custom palette reads too.
The icons are drawn here (no theme is needed): a cross in a disc for failed, a clock for
timed out, a bar in a disc for cancelled, a tick for succeeded.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPalette, QPen, QPixmap

FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
SUCCEEDED = "succeeded"
FAILURES = frozenset({FAILED, TIMED_OUT, CANCELLED})

MIN_CONTRAST = 4.5

# (on a light base, on a dark base)
_HUES: dict[str, tuple[str, str]] = {
    FAILED: ("#c62828", "#ff6b6b"),
    TIMED_OUT: ("#a14a00", "#ffae57"),
    CANCELLED: ("#5f6368", "#b4b9bf"),
    SUCCEEDED: ("#2e7d32", "#7fd184"),
}

_ICON_SIZE = 16
_icons: dict[tuple[str, str], QIcon] = {}
_colors: dict[tuple[str, int], QColor] = {}


def outcome(task: dict[str, Any]) -> str | None:
    """The outcome a finished task shows (FAILED, TIMED_OUT, CANCELLED, SUCCEEDED), or
    None while it is not finished."""
    state = task.get("state")
    if state == "failed":
        error = task.get("error")
        return TIMED_OUT if isinstance(error, dict) and error.get("code") == "timeout" else FAILED
    if state in (CANCELLED, SUCCEEDED):
        return str(state)
    return None


def luminance(color: QColor) -> float:
    """Relative luminance (WCAG 2)."""
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(x) for x in color.getRgbF()[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: QColor, b: QColor) -> float:
    """The contrast ratio of two colours (1 to 21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Base).lightness() < 128


def outcome_color(kind: str | None, palette: QPalette) -> QColor | None:
    """The text colour of an outcome on `palette`'s base, or None (the palette's own)."""
    if kind not in _HUES:
        return None
    base = palette.color(QPalette.ColorRole.Base)
    key = (kind, base.rgba())
    cached = _colors.get(key)
    if cached is not None:
        return QColor(cached)
    dark = base.lightness() < 128
    color = QColor(_HUES[kind][1 if dark else 0])
    # Towards white on a dark base, towards black on a light one, until it reads.
    for _ in range(20):
        if contrast(color, base) >= MIN_CONTRAST:
            break
        color = color.lighter(112) if dark else color.darker(112)
    _colors[key] = QColor(color)  # asked for every cell painted: worked out once per base
    return color


def outcome_icon(kind: str | None, palette: QPalette) -> QIcon | None:
    """The icon of an outcome drawn in its colour for `palette`, or None."""
    color = outcome_color(kind, palette)
    if color is None or kind is None:
        return None
    key = (kind, color.name())
    icon = _icons.get(key)
    if icon is None:
        icon = _icons[key] = _draw(kind, color)
    return icon


def _draw(kind: str, color: QColor) -> QIcon:
    icon = QIcon()
    for scale in (1, 2):
        size = _ICON_SIZE * scale
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        p = QPainter(pixmap)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.scale(scale, scale)
        pen = QPen(color, 1.8, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                   Qt.PenJoinStyle.RoundJoin)  # fmt: skip
        disc = QRectF(1.5, 1.5, 13, 13)
        if kind == FAILED:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(color)
            p.drawEllipse(disc)
            p.setPen(QPen(_on(color), 1.8, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
            p.drawLine(QPointF(5.5, 5.5), QPointF(10.5, 10.5))
            p.drawLine(QPointF(10.5, 5.5), QPointF(5.5, 10.5))
        elif kind == TIMED_OUT:
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(disc)
            p.drawLine(QPointF(8, 8), QPointF(8, 4.5))
            p.drawLine(QPointF(8, 8), QPointF(10.8, 9.6))
        elif kind == CANCELLED:
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(disc)
            p.drawLine(QPointF(4.5, 11.5), QPointF(11.5, 4.5))
        else:  # succeeded: a tick
            path = QPainterPath(QPointF(3.5, 8.5))
            path.lineTo(QPointF(6.5, 11.5))
            path.lineTo(QPointF(12.5, 4.5))
            p.setPen(QPen(color, 2.0, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                          Qt.PenJoinStyle.RoundJoin))  # fmt: skip
            p.drawPath(path)
        p.end()
        pixmap.setDevicePixelRatio(scale)
        icon.addPixmap(pixmap)
    return icon


def _on(color: QColor) -> QColor:
    """Black or white, whichever reads better on `color`."""
    white, black = QColor("white"), QColor("black")
    return white if contrast(color, white) >= contrast(color, black) else black


__all__ = ["CANCELLED", "FAILED", "FAILURES", "SUCCEEDED", "TIMED_OUT", "contrast",
           "is_dark", "outcome", "outcome_color", "outcome_icon"]
