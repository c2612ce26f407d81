"""The client side of the delivery rules: which received events are new, where to resume
after a reconnect, and how long to wait between attempts.

Pure: `services.core.session.ClientSession` (which every Python client of the stream goes
through, and which the browser's JavaScript client mirrors) builds on them. The server
side (who is sent what) is `services.core.delivery`.

A "reset" message (see `services.core.envelope`) does not move the cursor: the replay that
follows it still brings every event that is left, each once. It tells the client that some
events it was owed are gone (pruned with their finished tasks), so whatever it shows must
be reloaded from the HTTP API.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from enum import Enum


class StreamState(Enum):
    """Where a client's event stream is in its life.

    CONNECTING: a connection attempt is under way.
    CONNECTED: the welcome arrived; events flow.
    RECONNECTING: the connection dropped or an attempt failed; the next attempt is due in
        `retry_in` seconds (reported with the state).
    CLOSED: closed by its owner, or it gave up reconnecting.
    """

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class StreamCursor:
    """What a client has seen of its principal's event log: the last seq.

    Events arrive in seq order on one connection; after a reconnect the server replays
    from the seq the client gives, so an event may arrive twice. The cursor keeps each
    one to exactly once.

    Args:
        since: the last seq already seen (e.g. saved by a previous run); None for live
            events only, from whatever the log's head is at the first welcome.
    """

    __slots__ = ("last_seq",)

    def __init__(self, since: int | None = None) -> None:
        if since is not None and since < 0:
            raise ValueError("since must be a non-negative integer")
        self.last_seq = since

    @property
    def since(self) -> int | None:
        """The resume point to send when connecting (None: live events only)."""
        return self.last_seq

    def welcome(self, head: int, reset: bool) -> bool:
        """Take a welcome saying the log's `head`; True when the log was recreated.

        On a reset the server replays the new log from its start: every seq in it is new
        to this client, whatever it saw before. A head behind what the client saw means the
        same, even if the server did not say so. Without a resume point, the stream starts
        at the head (the server sends only later events).
        """
        if reset or (self.last_seq is not None and head < self.last_seq):
            self.last_seq = 0
            return True
        if self.last_seq is None:
            self.last_seq = head
        return False

    def accept(self, seq: int) -> bool:
        """Whether the event `seq` is new (and remember it); False for a duplicate."""
        if self.last_seq is not None and seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True


def reconnect_delays(
    first: float = 0.1,
    cap: float = 5.0,
    factor: float = 2.0,
    jitter: float = 0.2,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Seconds to wait before each reconnection attempt: `first`, growing by `factor` up to
    `cap`, each cut by up to `jitter` (a fraction) at random so that clients dropped
    together do not all come back in the same instant.

    Endless: the caller decides when to give up. Start a new schedule after a successful
    connection, so the next drop is retried quickly again.
    """
    if not (0 < first <= cap and factor >= 1 and 0 <= jitter < 1):
        raise ValueError("need 0 < first <= cap, factor >= 1 and 0 <= jitter < 1")
    delay = first
    while True:
        yield delay * (1 - jitter * rand())
        delay = min(delay * factor, cap)
