"""The live event protocol, both ends, without I/O: text in, messages and text out.

In the style of websockets' `protocol.py`: a session holds one connection's state and
rules; its owner moves text between it and a socket. Nothing here opens a socket, awaits or
reads a clock, so every rule is tested with plain calls (and the JSON test vectors under
tests/vectors/protocol, which the browser's JavaScript client passes too). The wire format
and its codec are `services.core.envelope`; the server's delivery rules are
`services.core.delivery`; the client's cursor and backoff are `services.core.stream`.
docs/protocol.md describes the whole protocol for a client written in another language.

`ServerSession` is what the notifier says to one connection: the welcome, the replay it
plans with `plan_resume` (read by the notifier, page by page, at the client's pace),
"reset" when events the client was owed are gone, "caught_up", and the answers to the
client's ping, resume and subscribe. Live events do not pass through it: the notifier's
fan-out encodes and frames each event once for every connection (`Router` groups them by
the `Subscription` a session goes live with).

`ClientSession` is what a client does: it is fed each received text and returns the
messages to hand to its owner (each event once, in seq order, across reconnects), keeps
the resume cursor, says what to send (`data_to_send()`: subscribe, resume, ping) and how
long to wait before reconnecting after a drop (`connection_lost`), or that it must not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from services.core.delivery import ResumePlan, Subscription, plan_resume
from services.core.envelope import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_POLICY_VIOLATION,
    CLOSE_REVOKED,
    RESET_PRUNED,
    RESET_RECREATED,
    ClientMessage,
    ProtocolError,
    ServerMessage,
    decode_client_message,
    decode_server_message,
    encode_caught_up,
    encode_event,
    encode_ping,
    encode_pong,
    encode_reset,
    encode_resume,
    encode_subscribe,
    encode_welcome,
)
from services.core.events import Event
from services.core.stream import StreamCursor, reconnect_delays

log = logging.getLogger("herald.session")

# Close codes after which a client must not reconnect: its token is no longer valid.
FINAL_CLOSE_CODES = frozenset({CLOSE_REVOKED})
MAX_SUBSCRIBED = 10_000  # task ids one connection may be subscribed to at once
TOO_MANY_TASKS = "a connection may be subscribed to at most {} unfinished tasks"


# ---------------------------------------------------------------------------- server


class ServerSession:
    """One connection's protocol, on the notifier's side.

    The owner (the notifier) reads the log and writes to the socket; the session decides
    what the client is sent. After each call, `data_to_send()` holds the texts to send, in
    order.

    A (re)start of the stream (at the handshake, or on "resume"):

        session.open(since, head, pruned_through)        # welcome, maybe a reset
        while (after := session.replay_after()) is not None:
            session.replay_page(read(after, limit, max_bytes))   # the events it misses
            ... send data_to_send(), wait for the client to read it ...
        session.replay_done(pruned_through_now)          # a reset if pruned meanwhile
        sub = session.go_live()                          # caught_up; route `sub`

    Args:
        principal: whose connection it is (it is sent that principal's events only).
        page, page_bytes: the most events, and about the most bytes of their data, that
            one read of the replay returns (a page cut short by either is read on).
        max_subscribed: unfinished tasks one connection may be subscribed to.
    """

    def __init__(self, principal: str, *, page: int = 1000, page_bytes: int = 4 << 20,
                 max_subscribed: int = MAX_SUBSCRIBED) -> None:  # fmt: skip
        self.principal = principal
        self.page = page
        self.page_bytes = page_bytes
        self.max_subscribed = max_subscribed
        self.sub: Subscription | None = None  # live (routed) once the replay is done
        self.tasks: set[str] | None = None  # subscribed to these tasks only (None: all)
        self.reset_through = 0  # the watermark its last "reset" message was sent for
        self._out: list[str] = []
        # The replay under way: its plan, the subscription filtering it, where it is.
        self._since: int | None = None
        self._plan: ResumePlan | None = None
        self._replay: Subscription | None = None
        self._head = 0
        self._cursor = 0
        self._done = True

    def data_to_send(self) -> list[str]:
        """The texts to send now, in order (each returned once)."""
        out, self._out = self._out, []
        return out

    # ---------------------------------------------------------------- the stream

    def open(self, since: int | None, head: int, pruned_through: int = 0) -> ResumePlan:
        """Start (or restart) the stream for a client that last saw `since`, when the
        principal's head is `head` and pruning deleted its events up to `pruned_through`.

        Queues the welcome, and a reset when the replay will be incomplete. The session is
        not live until `go_live()`: its owner stops routing it live events now.
        """
        self.sub = None
        plan = plan_resume(since, head, pruned_through)
        self._out.append(encode_welcome(self.principal, head, plan.reset))
        if plan.reload:
            reason = RESET_RECREATED if plan.reset else RESET_PRUNED
            self._out.append(encode_reset(reason, pruned_through + 1))
            self.reset_through = pruned_through
        # The subscription filters the replay as it will filter live events (its tasks,
        # if any, are the client's own set: a finished task is forgotten for good).
        self._replay = Subscription(self.principal, plan.after, self.tasks)
        self._since, self._plan, self._head = since, plan, head
        self._cursor, self._done = plan.after, False
        return plan

    def replay_after(self) -> int | None:
        """The seq after which to read the next page of the replay; None when it is done."""
        sub = self._replay
        if self._done or sub is None:
            return None
        if sub.tasks is not None and not sub.tasks:
            # Subscribed to nothing (yet): nothing to replay.
            self._cursor = sub.cursor = max(self._cursor, self._head)
            self._done = True
            return None
        return self._cursor

    def replay_page(self, page: list[Event]) -> int:
        """Take one page read after `replay_after()`; queues the events the client is
        owed and returns how many."""
        sub = self._replay
        assert sub is not None and not self._done, "replay_page() outside a replay"
        if not page:
            self._done = True
            return 0
        self._cursor = page[-1].seq
        texts = [encode_event(ev) for ev in sub.accept(page)]
        self._out += texts
        # A page cut short by its bytes is bigger than that in text: read on. So is a
        # filtered one (what was left out may have been big). An extra read finds the
        # rest, or nothing: harmless.
        if (len(page) < self.page and len(texts) == len(page)
                and sum(map(len, texts)) <= self.page_bytes):  # fmt: skip
            self._done = True
        return len(texts)

    def replay_done(self, pruned_through: int) -> None:
        """The replay is over; `pruned_through` is the principal's pruning watermark now.
        Queues a reset if pruning deleted events after `since` while it went on."""
        plan = self._plan
        if self._since and plan is not None and not plan.reload:  # (0: saw nothing)
            if pruned_through > self._since:
                self._out.append(encode_reset(RESET_PRUNED, pruned_through + 1))
                self.reset_through = pruned_through

    def needs_pruned_check(self) -> bool:
        """Whether `replay_done` needs the watermark (else pass anything)."""
        plan = self._plan
        return bool(self._since) and plan is not None and not plan.reload

    def go_live(self) -> Subscription:
        """Queue caught_up; the returned subscription gets live events from its cursor on
        (the owner routes it: every event after the last one replayed, none twice)."""
        sub = self._replay
        assert sub is not None, "go_live() before open()"
        sub.cursor = self._cursor
        self._replay, self._plan, self._done = None, None, True
        self.sub = sub
        self._out.append(encode_caught_up(self._cursor))
        return sub

    def pruned(self, through: int) -> None:
        """Pruning raised the principal's watermark to `through` while the session is
        live: a reset if it lost events it had not been sent yet."""
        sub = self.sub
        if sub is not None and through > max(sub.cursor, self.reset_through):
            self.reset_through = through
            self._out.append(encode_reset(RESET_PRUNED, through + 1))

    # --------------------------------------------------------- client messages

    def receive_text(self, data: str | bytes) -> ClientMessage:
        """Decode one client message; answers a ping (a pong is queued).

        The owner then acts on "resume" (`open` with its `since`) and "subscribe"
        (`subscribe`).

        Raises:
            ProtocolError: close the connection with its `code` and `reason`.
        """
        request = decode_client_message(data)
        if request.type == "ping":
            self._out.append(encode_pong())
        return request

    def subscribe(self, tasks: Iterable[str], since: int | None, head: int,
                  read: Callable[[int, str], list[Event]]) -> None:  # fmt: skip
        """Narrow the live stream to some tasks (or add tasks to those it has).

        Queues a welcome, the events (after `since`, if given) of the tasks it adds, up to
        where the stream is, then caught_up; later ones come live. A stream of every task
        adds none (it was sent them all). The other subscribed tasks' events go on as they
        were, none repeated. `read(after, task_id)` returns up to `page` of the task's
        events after seq `after` (one indexed read per added task: none of the principal's
        other events). Ignored before the stream is live.

        Raises:
            ProtocolError: subscribed to more unfinished tasks than `max_subscribed`.
        """
        sub = self.sub
        if sub is None:
            return
        if sub.tasks is None:
            sub.tasks = self.tasks = set(tasks)
            added: list[str] = []
        else:
            added = [t for t in dict.fromkeys(tasks) if t not in sub.tasks]
            sub.tasks.update(added)
        self._out.append(encode_welcome(self.principal, head, False))
        after = 0 if since is None else since
        replay: list[Event] = []
        for task_id in added:
            cursor = after
            while True:
                page = read(cursor, task_id)
                replay += (ev for ev in page if ev.seq <= sub.cursor)
                if len(page) < self.page or page[-1].seq > sub.cursor:
                    break
                cursor = page[-1].seq
        replay.sort(key=lambda ev: ev.seq)
        for ev in replay:
            if ev.terminal:
                sub.tasks.discard(ev.task_id)
        self._out += [encode_event(ev) for ev in replay]
        self._out.append(encode_caught_up(sub.cursor))
        if len(sub.tasks) > self.max_subscribed:
            raise ProtocolError(CLOSE_POLICY_VIOLATION, TOO_MANY_TASKS.format(self.max_subscribed))


# ---------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class _Request:
    """A client request the server has not answered yet (its answer starts with a
    welcome): a resume, or a subscribe with its `since` and the tasks it added."""

    type: str
    since: int = 0
    tasks: frozenset[str] = frozenset()


class ClientSession:
    """One client's side of the event stream, across its connections.

    For each connection: `connection_made()` (the handshake sends `since` as the resume
    point), then `receive_text()` for every text received, sending `data_to_send()` after
    each call, then `connection_lost(code)`, which says how long to wait before the next
    attempt, or None: do not reconnect. `attempt_failed()` after an attempt that did not
    get as far as a welcome.

    Each event is returned once, in seq order, across reconnects: the server replays from
    the cursor, and what was already returned is dropped (as is any seq not above the
    cursor). "welcome" (each connection's), "caught_up", "reset" and "pong" messages are
    returned too; the welcome and caught_up that answer a subscribe are the session's
    own and are not.

    Args:
        since: the last seq already seen (e.g. saved by a previous run); None for live
            events only.
        delays: makes the schedule of waits between attempts (`reconnect_delays`); a
            fresh one after each welcome, so the next drop is retried quickly again.
    """

    def __init__(self, since: int | None = None, *,
                 delays: Callable[[], Iterator[float]] = reconnect_delays) -> None:  # fmt: skip
        self._cursor = StreamCursor(since)
        self._make_delays = delays
        self._delays = delays()
        self._out: list[str] = []
        self._welcomed = False
        self.resets = 0  # "reset" messages received: reloads the owner was asked for
        self.ignored = 0  # messages dropped because they could not be decoded
        self.close_code: int | None = None  # of the last connection lost
        self._tasks: set[str] | None = None  # subscribed to these tasks only (None: all)
        # The requests not answered yet, in order; then the subscribe whose replay is
        # coming (its since and added tasks, until its caught_up).
        self._pending: list[_Request] = []
        self._replaying: tuple[int, frozenset[str]] | None = None
        self._narrowed_at = 0  # the last seq when it first subscribed: all seen up to it
        self._seen_pending: set[int] = set()  # seqs returned while a subscribe was pending
        self._unanswered: set[str] = set()  # tasks a lost connection did not confirm

    # ------------------------------------------------------------------ state

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event returned (or the head at the first welcome)."""
        return self._cursor.last_seq

    @property
    def since(self) -> int | None:
        """The resume point to give at the handshake (None: live events only)."""
        return self._cursor.since

    @property
    def tasks(self) -> frozenset[str] | None:
        """The tasks subscribed to (None: every task of the principal)."""
        return None if self._tasks is None else frozenset(self._tasks)

    @property
    def welcomed(self) -> bool:
        """A connection is up and its welcome arrived: requests can be sent."""
        return self._welcomed

    def data_to_send(self) -> list[str]:
        """The texts to send now, in order (each returned once)."""
        out, self._out = self._out, []
        return out

    # ------------------------------------------------------------- connection

    def connection_made(self) -> None:
        """A new connection's handshake succeeded (it gave `since`); its welcome is next."""
        self._unanswered |= set().union(*(r.tasks for r in self._pending))
        self._pending, self._replaying = [], None
        self._seen_pending.clear()
        self._out.clear()
        self._welcomed = False

    def connection_lost(self, code: int | None = None) -> float | None:
        """The connection closed (`code`: its close code; None or 1006 when it just
        dropped): seconds to wait before connecting again, or None when the client must
        not (its token was revoked: another attempt would be refused)."""
        self._welcomed = False
        self.close_code = code
        self._out.clear()
        if code in FINAL_CLOSE_CODES:
            return None
        return next(self._delays)

    def attempt_failed(self) -> float:
        """An attempt failed before its welcome: seconds to wait before the next one."""
        self._welcomed = False
        return next(self._delays)

    # -------------------------------------------------------------- receiving

    def receive_text(self, text: str | bytes) -> ServerMessage | None:
        """Take one received text: the message to hand to the owner, or None (a
        duplicate, an event of a task not subscribed to, the session's own answers, or
        a message that cannot be decoded, which is dropped).

        Raises:
            ProtocolError: the connection's first message is not a valid welcome: close
                it (with the error's code) and reconnect (`connection_lost`).
        """
        try:
            msg = decode_server_message(text)
        except ProtocolError as exc:
            if not self._welcomed:
                raise
            self.ignored += 1
            log.warning("ignoring a message the client cannot decode: %s", exc)
            return None
        if not self._welcomed:
            if msg.type != "welcome":
                raise ProtocolError(CLOSE_INVALID_PAYLOAD, f"no welcome but {msg.type!r}")
            self._on_first_welcome(msg)
            return msg
        replaying = self._replaying
        if msg.event is not None:
            ev = msg.event
            if replaying is not None and ev.task_id in replaying[1] and ev.seq > replaying[0]:
                # A task just added: its events before the stream's last seq come now.
                if ev.seq in self._seen_pending:
                    return None
                self._cursor.last_seq = max(self._cursor.last_seq or 0, ev.seq)
            elif not self._cursor.accept(ev.seq):
                return None  # already returned (before a reconnect), or out of order
            if self._tasks is not None:
                if ev.task_id not in self._tasks:
                    return None  # e.g. replayed after a reconnect, before the subscribe
                if ev.terminal:
                    self._tasks.discard(ev.task_id)
            if self._pending:
                self._seen_pending.add(ev.seq)
            elif replaying is None and self._seen_pending:
                self._seen_pending.clear()
            return msg
        if msg.type == "welcome" and self._pending:
            request = self._pending.pop(0)
            if request.type == "subscribe":
                # Its tasks count from here: what came before it was sent without them.
                if self._tasks is None:  # narrowed: everything so far was returned
                    self._tasks = set(request.tasks)
                    self._narrowed_at = self._cursor.last_seq or 0
                    self._replaying = (request.since, frozenset())
                else:
                    self._tasks |= request.tasks
                    self._replaying = (request.since, request.tasks)
                return None
            self._take_welcome(msg)  # a resume's: the replay from the cursor follows
        elif msg.type == "caught_up" and replaying is not None:
            self._replaying = None
            return None
        elif msg.type == "welcome":
            self._take_welcome(msg)
        elif msg.type == "reset":
            self.resets += 1
            log.warning("events after seq %s are gone (%s): reload the tasks from the API",
                        self._cursor.last_seq, msg.body.get("reason"))  # fmt: skip
        return msg

    # ---------------------------------------------------------------- sending

    def subscribe(self, task_ids: Iterable[str]) -> None:
        """From now on return only these tasks' events (added to those subscribed before;
        a task is dropped after its terminal event), reconnections included. The server
        answers with the events it had of them, so none is missed. Subscribing to no task
        returns no event until a first task is added."""
        new = set(task_ids)
        if self._welcomed:
            self._send_subscribe(new)
        elif self._tasks is None:
            self._tasks, self._narrowed_at = new, self._cursor.last_seq or 0
        else:
            self._tasks |= new

    def resume(self) -> bool:
        """Ask the server to replay from the cursor on this connection (a welcome, the
        events after it, caught_up follow); False when not connected."""
        if not self._welcomed:
            return False
        self._pending.append(_Request("resume"))
        self._out.append(encode_resume(self._cursor.last_seq or 0))
        return True

    def ping(self) -> bool:
        """Queue a ping (answered by a "pong" message); False when not connected."""
        if not self._welcomed:
            return False
        self._out.append(encode_ping())
        return True

    # --------------------------------------------------------------- internals

    def _on_first_welcome(self, welcome: ServerMessage) -> None:
        self._welcomed = True
        self._delays = self._make_delays()  # connected: the next drop is retried quickly
        self._take_welcome(welcome)
        unanswered, self._unanswered = self._unanswered, set()
        if self._tasks is not None:
            # Narrow the new connection (its replay from the cursor is filtered here
            # meanwhile), then add again what was not answered on the old one.
            self._send_subscribe(set(self._tasks))
            if unanswered - self._tasks:
                self._send_subscribe(unanswered - self._tasks)
        elif unanswered:
            self._send_subscribe(unanswered)

    def _take_welcome(self, welcome: ServerMessage) -> None:
        head = welcome.body.get("head", 0)
        reset = bool(welcome.body.get("reset", False))
        if self._cursor.welcome(head if isinstance(head, int) else 0, reset):
            log.warning("the event log was recreated: replaying it from the start")

    def _send_subscribe(self, tasks: set[str]) -> None:
        # The server answers with the added tasks' events after `since`, however far the
        # stream has gone meanwhile: every event up to the first subscribe was returned,
        # and none of these tasks' since then (they were filtered out).
        since = self._narrowed_at if self._tasks is not None else self._cursor.last_seq or 0
        self._pending.append(_Request("subscribe", since, frozenset(tasks)))
        self._out.append(encode_subscribe(tasks, since))
