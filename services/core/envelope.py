"""The one JSON envelope every side uses on the WebSocket, and its codec.

The rules of each end are `services.core.session`; docs/protocol.md describes the whole
protocol (and tests/vectors/protocol holds its test vectors).

Server to client (every message carries "v" and "type"):
    {"v": 1, "type": "welcome", "principal": P, "head": N, "reset": bool}
    {"v": 1, "type": "event", "seq": N, "task": ID, "event": TYPE, "ts": T,
     "attempt": A, "data": {...}}
    {"v": 1, "type": "reset", "reason": R, "oldest": N}
                                                events of this principal that the client
                                                was owed are gone, so what it is sent is
                                                incomplete: reload the tasks from the HTTP
                                                API. Right after a welcome (before the
                                                replay) when the resume point is below what
                                                was pruned; after the replay (before
                                                caught_up) when pruning ran during it; at
                                                any time on a live connection when pruning
                                                deleted events not sent yet.
                                                R is "pruned" (retention deleted finished
                                                tasks' events) or "recreated" (the log is
                                                new; the welcome says reset too). From seq N
                                                on, nothing of this principal's was deleted:
                                                a later resume from N - 1 or beyond is
                                                complete. Events that remain still follow.
    {"v": 1, "type": "caught_up", "seq": N}     after the replay of missed events
    {"v": 1, "type": "pong"}
Client to server:
    {"v": 1, "type": "ping"}
    {"v": 1, "type": "resume", "since": N}      replay every later event, then live ones
    {"v": 1, "type": "subscribe", "tasks": [ID, ...], "since": N}
                                                from now on, only these tasks' events (added
                                                to the ones subscribed before; a task is
                                                dropped after its terminal event). Answered
                                                by a welcome, the events (after N, if given)
                                                of the tasks it adds, up to where the
                                                stream is, and caught_up; later ones come
                                                live, the other tasks' events go on, none
                                                repeated. The first subscribe of a
                                                connection that was sent every task adds
                                                none: it was sent them all.

The resume point may also be given at the handshake (`?since=N` or a `Herald-Since` header).

Sequence numbers are the principal's own (since schema 4): an event's "seq", the welcome's
"head", "caught_up", "oldest", "since" and the HTTP API's `after` cursors all count this
principal's events alone (1, 2, 3, ...), so nothing another principal does moves them.
Events recorded before the upgrade keep the number they had (their position in the shared
log then), so a principal's seqs may have gaps there and a cursor saved before the upgrade
still resumes exactly; clients only ever rely on seqs increasing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from services.core.events import Event, EventType
from services.core.jsontext import compact

VERSION = 1

# WebSocket close codes. Each close carries a reason in words.
CLOSE_GOING_AWAY = 1001  # the notifier is stopping: reconnect (it is restarted)
CLOSE_UNSUPPORTED_DATA = 1003  # binary frame
CLOSE_INVALID_PAYLOAD = 1007  # not JSON, not an object, wrong version or fields
# Try again later: the client fell more than the outbox limit (8 MiB) behind because it
# does not read, or the log cannot be read right now. Reconnecting with the last seq seen
# loses nothing.
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_POLICY_VIOLATION = 1008  # e.g. subscribed to more tasks than a connection may
CLOSE_UNKNOWN_TYPE = 4400  # a message type the server does not know
CLOSE_REVOKED = 4401  # the connection's token was revoked (or renewed): do not reconnect with it
# The principal already holds as many connections as the notifier allows (64 by default,
# `[notifier] max_connections_per_principal`): closed right after the handshake, before
# the welcome. Retry later, or close another connection first.
CLOSE_TOO_MANY_CONNECTIONS = 4429


class ProtocolError(Exception):
    """A client message that breaks the protocol; closes the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def encode_event(event: Event) -> str:
    """The wire text of one event."""
    return compact(
        {
            "v": VERSION,
            "type": "event",
            "seq": event.seq,
            "task": event.task_id,
            "event": event.type.value,
            "ts": event.ts,
            "attempt": event.attempt,
            "data": event.data,
        }
    )


def encode_welcome(principal: str, head: int, reset: bool) -> str:
    return compact(
        {"v": VERSION, "type": "welcome", "principal": principal, "head": head, "reset": reset}
    )


RESET_PRUNED = "pruned"
RESET_RECREATED = "recreated"


def encode_reset(reason: str, oldest: int) -> str:
    """The wire text of a reset: reload from the API; complete from seq `oldest` on."""
    return compact({"v": VERSION, "type": "reset", "reason": reason, "oldest": oldest})


def encode_caught_up(seq: int) -> str:
    return compact({"v": VERSION, "type": "caught_up", "seq": seq})


def encode_pong() -> str:
    return compact({"v": VERSION, "type": "pong"})


def encode_ping() -> str:
    return compact({"v": VERSION, "type": "ping"})


def encode_resume(since: int) -> str:
    return compact({"v": VERSION, "type": "resume", "since": since})


def encode_subscribe(tasks: Iterable[str], since: int | None) -> str:
    body: dict[str, Any] = {"v": VERSION, "type": "subscribe", "tasks": sorted(tasks)}
    if since is not None:
        body["since"] = since
    return compact(body)


MAX_TASK_ID = 64  # characters of one task id in a subscribe message


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """A decoded server message. `event` is set when type == "event"."""

    type: str
    body: dict[str, Any]
    event: Event | None = None


def decode_server_message(text: str | bytes) -> ServerMessage:
    """Decode a message from the notifier (used by every client).

    Raises:
        ProtocolError: the text is not a valid server message.
    """
    obj = _load_object(text)
    mtype = obj.get("type")
    if mtype == "event":
        try:
            event = Event(
                seq=int(obj["seq"]),
                task_id=str(obj["task"]),
                principal="",
                type=EventType(obj["event"]),
                ts=float(obj["ts"]),
                attempt=int(obj.get("attempt", 0)),
                data=dict(obj.get("data") or {}),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ProtocolError(CLOSE_INVALID_PAYLOAD, f"malformed event: {exc}") from None
        return ServerMessage("event", obj, event)
    if mtype in ("welcome", "reset", "caught_up", "pong", "ping"):
        return ServerMessage(str(mtype), obj)
    raise ProtocolError(CLOSE_UNKNOWN_TYPE, f"unknown message type {mtype!r}")


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A decoded client message: "ping", "resume" (with `since`) or "subscribe" (with
    `tasks` and an optional `since`)."""

    type: str
    since: int | None = None
    tasks: tuple[str, ...] = ()


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Decode a message from a client.

    Raises:
        ProtocolError: binary frame, not JSON, wrong shape or an unknown type.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported")
    obj = _load_object(data)
    mtype = obj.get("type")
    if mtype == "ping":
        return ClientMessage("ping")
    if mtype == "resume":
        return ClientMessage("resume", parse_since(obj.get("since")))
    if mtype == "subscribe":
        tasks = obj.get("tasks")
        if not isinstance(tasks, list) or not all(
                isinstance(t, str) and 0 < len(t) <= MAX_TASK_ID for t in tasks):  # fmt: skip
            raise ProtocolError(CLOSE_INVALID_PAYLOAD,
                                "'tasks' must be a list of task ids")  # fmt: skip
        since = obj.get("since")
        return ClientMessage("subscribe", None if since is None else parse_since(since),
                             tuple(tasks))  # fmt: skip
    if not isinstance(mtype, str):
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "message has no string 'type'")
    raise ProtocolError(CLOSE_UNKNOWN_TYPE, f"unknown message type {mtype[:40]!r}")


def parse_since(value: Any) -> int:
    """A resume point: a non-negative integer (or its decimal text)."""
    if isinstance(value, bool):
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "'since' must be a non-negative integer")
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "'since' must be a non-negative integer")
    return value


def _load_object(text: str | bytes) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, "message must be a JSON object")
    if obj.get("v", VERSION) != VERSION:
        raise ProtocolError(CLOSE_INVALID_PAYLOAD, f"unsupported protocol version {obj.get('v')!r}")
    return obj
