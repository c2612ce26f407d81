"""The frames between the dispatcher and its executor processes: JSON lines on Unix sockets.

Each executor has two stream sockets to the dispatcher. On the *run* socket the dispatcher
sends `run` and `exit`, and the executor sends everything it reports (`progress`, `output`,
`cleanup`, `done`); the executor's main thread reads it, so a `run` reaches the task's
thread with no hand-over. On the *control* socket the dispatcher sends `cancel`, read by a
thread of the executor while the task runs.

Dispatcher to executor:
    {"t": "run", "id": ID, "attempt": N, "name": NAME, "args": {...}, "memory_limit": MB|null,
     "timeout": S|null, "sandbox"?: POLICY, "temp_parent"?: PATH}
                            (POLICY: services.worker.sandbox.Policy.to_json(); confined
                             attempts only, run in a child of the executor; PATH: the
                             executor's folder for its attempts' temp dirs)
    {"t": "cancel", "id": ID, "attempt": N}           (control socket) stop at a checkpoint
    {"t": "exit"}                                       finish nothing more, exit
Executor to dispatcher:
    {"t": "progress", "fraction": F|null, "message": TEXT|null}
    {"t": "output", "lines": [TEXT, ...]}
    {"t": "cleanup", "add": PATH} / {"t": "cleanup", "drop": PATH}
    {"t": "done", "outcome": "succeeded", "result": ANY, "rss": BYTES}
    {"t": "done", "outcome": "failed", "error": {"code", "message", "traceback"?},
     "retry": null | {"after": S|null}, "rss": BYTES}
    {"t": "done", "outcome": "cancelled", "rss": BYTES}
    {"t": "ended", "id": ID, "attempt": N, "status": WAITSTATUS}
                            a confined attempt's process ended (lost if no done came)

JSON, never pickle: the dispatcher runs unconfined and must not run code a task sent it. Its
reader treats every byte from an executor as untrusted: bad UTF-8 becomes U+FFFD, lone
surrogates are replaced, a frame must be a JSON object and may not exceed MAX_FRAME.
"""

from __future__ import annotations

import json
import re
from typing import Any

from services.core.jsontext import compact

MAX_FRAME = 64 * 1024 * 1024  # a result or a burst of output may be large, not unbounded

_LONE_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]", re.ASCII)


class FrameError(ValueError):
    """A peer sent something that is not a frame: the connection cannot be trusted."""


def encode(message: dict[str, Any]) -> bytes:
    """One frame: the message as compact JSON and a newline (JSON text never has one)."""
    text = compact(message)
    # A task's text may hold lone surrogates (undecodable file names, say): they travel as
    # their raw bytes and come out as U+FFFD on the other side.
    return text.encode("utf-8", "surrogatepass") + b"\n"


def _clean(value: Any) -> Any:
    """`value` with lone surrogates in its strings replaced (they cannot be stored)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode(line: bytes) -> dict[str, Any]:
    """The message of one frame (without its newline).

    Raises:
        FrameError: not a JSON object.
    """
    text = line.decode("utf-8", "replace")
    try:
        message = _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise FrameError("not a message")
    if "\\u" in text and _LONE_SURROGATE_ESCAPE.search(text):
        message = _clean(message)
    return message


class FrameReader:
    """Splits bytes received from a stream socket into messages."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The complete messages that `data` ends.

        Raises:
            FrameError: a frame is not a message, or too long.
        """
        return [decode(line) for line in self._lines(data)]

    def feed_frames(self, data: bytes) -> list[tuple[dict[str, Any], bytes]]:
        """The complete messages that `data` ends, each with its frame as received (to pass
        on unchanged, without encoding it again).

        Raises:
            FrameError: a frame is not a message, or too long.
        """
        return [(decode(line), line + b"\n") for line in self._lines(data)]

    def _lines(self, data: bytes) -> list[bytes]:
        self._buf += data
        if b"\n" not in data:
            if len(self._buf) > self._max:
                raise FrameError("frame too long")
            return []
        *lines, rest = self._buf.split(b"\n")
        self._buf = bytearray(rest)
        if len(rest) > self._max:
            raise FrameError("frame too long")
        return [bytes(line) for line in lines]

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet."""
        return len(self._buf)
