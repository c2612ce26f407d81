"""Wake-ups between processes on many hosts: Redis pub/sub says "look now", at most one
per burst to each receiver, and "principal P is at seq N" for the notifier.

The drop-in for services.wake on the Redis backend, as far as the dispatcher and the
notifier use it: `RedisWakeSender.wake(payload)` (and `AsyncRedisWakeSender`, the same for a
service on an asyncio loop: `wake()` returns at once and a task of the loop sends), and a
`RedisWakeReceiver` with `fileno()` (for a selectors loop or `loop.add_reader`),
`drain(clear=...)`, `park()`, `wait(timeout)` and `close()`. Payloads are the same bytes
(LOOK, LOOK + task id, PRUNED_WAKE, ...). As there, a wake-up carries no data that matters
(the store is the truth): any message but a principal wake-up means "look at everything".

Principal wake-ups. `wake_principal(P, N)` publishes `@N:P` (the sequence in decimal, a
colon, the principal's name in UTF-8; the name may itself hold colons: the first one ends the
number). `parse_principal_wake(payload)` gives `(P, N)` back, None for any other payload, and
`principal_heads(messages)` the highest N per principal of a drained batch. They are
always sent, never coalesced into looks (each says which principal's stream to read; the
async sender only merges one principal's pending ones into the highest seq), and they leave
the idle set alone (below): a receiver that reads only P's stream for one must not have them
stand for plain looks.

Coalescing: one plain look per burst per receiver, with many receivers on many hosts. A
channel C has an *idle set* I (the Redis set `C + ":idle"`): the receivers that have read
everything and would sleep with nothing on its way to them. A receiver not in I is bound to
look again anyway.

    sender S (per write W):  commit W -> one script, atomic in Redis:
                                 I non-empty: delete I, publish the payload on C
                                 I empty:     nothing (a look: coalesced)
    receiver R:              take every message on its socket (or none) -> SADD I R
                             -> read the store, to its end, before it sleeps on the socket

Any payload other than a look (`PRUNED_WAKE`, "cancel", ...) is always published, and empties
I too (every message is a look to its receiver), so the looks behind it are coalesced into
it. R may stay out of I while it is awake (`drain(clear=False)`, as the worker does while it
works, so senders leave their looks out meanwhile) as long as it joins I and reads before it
sleeps (`park()`); R knows without a round trip whether it is still in I, because only a
publish takes it out: no message (other than principal ones) since its SADD, still in.

Why no write is ever left unseen. The invariant: **a receiver R that is not in I will, at a
later time, add itself to I and then read the store to its end** (or it dies, and owes
nothing). R leaves I only by a sender's script (a delete of I together with a publish, one
atomic step in Redis) or by never having joined. If R was subscribed at that step, the
message reaches it; R drains it, joins I and reads (or, awake with `clear=False`, joins and
reads in `park()` before it sleeps). If R's connection was down, R reconnects, subscribes,
joins I and reads everything (its next drain returns a LOOK: below). A receiver that is just
starting subscribes, then joins, then its owner reads everything at start. Now take a write
W and its sender S, whose script runs after W's commit (S waits for the commit's reply):
- I non-empty: S publishes. Every receiver subscribed then gets the message and, by the
  receiver's steps, joins I and reads after it, hence after W; every receiver not subscribed
  then (starting, reconnecting) subscribes, joins and reads after it too.
- I empty: no receiver is in I, so by the invariant each will join I and read after this
  moment, hence after W.
Either way every receiver reads after W's commit. Two senders that both find I non-empty
both publish: one message too many, harmless. What the proof needs of order: S's commit
completes before its script runs (one connection, or a reply awaited), and R's SADD
completes before its read (R awaits the reply); Redis runs commands one at a time, so "after"
is Redis's order of execution. The order on R's side is the one of services.wake: drain, then
join, then read. Joining before the drain would break it: a message published between the
join and the drain would be taken by the drain, leaving R out of I with nothing on its way
and asleep (a receiver that joins after every drain, as here, is at worst woken once too
often, by a message published before the join that arrives after it). A look must be sent
*after* its write is committed, never before (see services.wake).

Several receivers on one channel (every worker on the worker channel, every notifier on
the notifier channel): each joins and leaves I by itself, so a busy worker that stays out of
I never silences the wake-ups of an idle one (it is in I: senders publish). A receiver that
dies while in I stays there until the next publish empties I: one message too many, no leak.

Reconnection. A receiver whose Redis connection drops (a restart, a network cut seen by TCP
keepalive) may have missed messages and may have been taken out of I meanwhile: it
reconnects, subscribes, joins I, and its next drain (or park, or wait) returns a LOOK, so its
owner reads everything once. While Redis cannot be reached it retries with a capped back-off,
woken by a timer of its own (a timerfd in the same descriptor as the socket), so an owner that
sleeps on `fileno()` needs no timer for it. `fileno()` stays the same across reconnections
(an epoll descriptor that holds the connection's socket and that timer), so a loop registers
it once.

Costs (tests/services/test_wake_redis.py measures them): a sender pays one round trip per
wake-up, a script instead of a PUBLISH (`AsyncRedisWakeSender` none on its caller's time,
and one pipeline for all that is pending); a coalesced look costs no receiver anything. A
receiver pays one SADD per wake-up round in which a look took it out of the set: when
senders are slower than its looks, that is one per wake-up, and publishing every look would
cost it less (Redis's socket batches the messages of one round anyway); the set pays when
looks outnumber the receiver's rounds (a busy worker, many receivers). Sending never raises:
a sender that cannot reach Redis logs it and counts it (`failed`); its write most likely
failed with it, and if not, the receivers' fallback timers look.

The receiver's calls are synchronous: its SADD (one round trip, bounded by SOCKET_TIMEOUT)
and its reconnection attempts (bounded by CONNECT_TIMEOUT each, at most one per back-off
step) run on its caller's thread, the notifier's event loop included. Against a Redis host
that refuses connections (restarting) an attempt fails at once; against one that does not
answer at all, each attempt holds the caller up to CONNECT_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import os
import select
import socket
import time
import uuid
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.wake import LOOK, PRUNED_WAKE, REVOKED_WAKE

__all__ = [
    "LOOK",
    "AsyncRedisWakeSender",
    "PRINCIPAL_WAKE",
    "PRUNED_WAKE",
    "REVOKED_WAKE",
    "RedisWakeReceiver",
    "RedisWakeSender",
    "parse_principal_wake",
    "principal_heads",
    "principal_wake",
]

log = logging.getLogger(__name__)

# The first byte of "principal P is at seq N": `@N:P`.
PRINCIPAL_WAKE = b"@"

SOCKET_TIMEOUT = 2.0  # a reply Redis owes (a subscribe's, a SADD's, a script's)
CONNECT_TIMEOUT = 1.0
RETRY_FIRST, RETRY_MAX = 0.05, 2.0  # reconnection back-off, seconds
# TCP keepalive on the subscription: a connection cut without a FIN (a host gone, a
# partition) is noticed within KEEPIDLE + KEEPINTVL * KEEPCNT seconds, not never.
KEEPALIVE = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}

# KEYS[1]: the idle set; ARGV: channel, payload, "1" to publish whatever the set holds.
_WAKE_LUA = """
if ARGV[3] == '1' or redis.call('exists', KEYS[1]) == 1 then
    redis.call('del', KEYS[1])
    redis.call('publish', ARGV[1], ARGV[2])
    return 1
end
return 0
"""

_ERRORS = (redis.RedisError, OSError)


def idle_key(channel: str) -> str:
    """The Redis set of a channel's receivers that would sleep with nothing on its way."""
    return channel + ":idle"


def principal_wake(principal: str, seq: int) -> bytes:
    """The payload "principal `principal` is at seq `seq`": `@seq:principal`."""
    return b"%s%d:%s" % (PRINCIPAL_WAKE, int(seq), principal.encode())


def parse_principal_wake(payload: bytes) -> tuple[str, int] | None:
    """(principal, seq) of a principal wake-up, None for any other payload (or a bad one)."""
    if payload[:1] != PRINCIPAL_WAKE:
        return None
    number, sep, name = payload[1:].partition(b":")
    if not sep or not number.isdigit() or not name:
        return None
    try:
        return name.decode(), int(number)
    except UnicodeDecodeError:
        return None


def principal_heads(messages: list[bytes]) -> dict[str, int]:
    """The highest seq each principal was announced at in a batch of drained messages."""
    heads: dict[str, int] = {}
    for m in messages:
        parsed = parse_principal_wake(m)
        if parsed is not None and parsed[1] > heads.get(parsed[0], -1):
            heads[parsed[0]] = parsed[1]
    return heads


def _is_look(payload: bytes) -> bool:
    # A plain look, or a look that names what it is about: advice, coalesced.
    return payload[:1] == LOOK


def _client(url: str) -> redis.Redis:
    # One retry at once on a dropped connection (a pooled one that a Redis restart closed);
    # a timeout is not retried (it would double the wait).
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


class RedisWakeSender:
    """Sends wake-ups on one channel; never raises (see the module's docstring).

    `sent`, `coalesced` and `failed` count messages published, looks left out (every
    receiver was bound to look anyway) and wake-ups Redis could not be asked for."""

    def __init__(self, url: str, channel: str) -> None:
        self.channel = channel
        self._redis = _client(url)
        self._script = self._redis.register_script(_WAKE_LUA)
        self._idle = idle_key(channel)
        self.sent = 0
        self.coalesced = 0
        self.failed = 0

    def wake(self, payload: bytes = LOOK) -> None:
        """Wake the channel's receivers. A look (`LOOK`, or `LOOK` + a hint such as a task
        id) is published only when some receiver is idle; any other payload says something
        and is always published. Call it after the write it announces is committed."""
        always = b"0" if _is_look(payload) else b"1"
        try:
            published = self._script(keys=[self._idle], args=[self.channel, payload, always])
        except _ERRORS as exc:
            self._failed(exc)
            return
        if published:
            self.sent += 1
        else:
            self.coalesced += 1

    def wake_principal(self, principal: str, seq: int) -> None:
        """Tell the channel's receivers that `principal`'s events reached `seq` (always
        published; see the module's docstring)."""
        try:
            self._redis.publish(self.channel, principal_wake(principal, seq))
        except _ERRORS as exc:
            self._failed(exc)
            return
        self.sent += 1

    def _failed(self, exc: BaseException) -> None:
        self.failed += 1
        if self.failed == 1 or self.failed % 1000 == 0:
            log.warning("cannot send wake-ups on %s (%d so far): %s", self.channel,
                        self.failed, exc)  # fmt: skip

    def close(self) -> None:
        if self.sent or self.coalesced or self.failed:
            log.info("wake-ups on %s: %d sent, %d left out (none idle), %d failed",
                     self.channel, self.sent, self.coalesced, self.failed)  # fmt: skip
        self._redis.close()


class AsyncRedisWakeSender:
    """`RedisWakeSender` for a service on an asyncio loop (the web): `wake()` and
    `wake_principal()` return at once, and one task of the running loop sends what is
    pending, in one pipeline per round trip, so the loop never waits for Redis.

    What is pending while a round trip is out: at most one look (the first one's payload:
    later looks are merged into it, which is safe because the look is taken from the
    pending slot, and its script run, after every write they announce), every other payload
    in order, and each principal's highest seq. Call them on the loop's thread, after the
    write they announce is committed. `flush()` waits until nothing is pending."""

    def __init__(self, url: str, channel: str) -> None:
        import redis.asyncio

        self.channel = channel
        self._redis = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=redis.asyncio.retry.Retry(NoBackoff(), 1,
                                            supported_errors=(redis.ConnectionError,)),
        )  # fmt: skip
        self._idle = idle_key(channel)
        self._look: bytes | None = None
        self._others: list[bytes] = []
        self._principals: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.coalesced = 0
        self.failed = 0

    def wake(self, payload: bytes = LOOK) -> None:
        """As `RedisWakeSender.wake`, sent from the loop's task."""
        if _is_look(payload):
            if self._look is not None:
                self.coalesced += 1  # merged into the one not sent yet
            else:
                self._look = payload
        else:
            self._others.append(payload)
        self._kick()

    def wake_principal(self, principal: str, seq: int) -> None:
        """As `RedisWakeSender.wake_principal`; a principal's later seq covers its earlier."""
        if principal in self._principals:
            self.coalesced += 1
        self._principals[principal] = max(seq, self._principals.get(principal, seq))
        self._kick()

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._look is not None or self._others or self._principals:
            look, others, principals = self._look, self._others, self._principals
            self._look, self._others, self._principals = None, [], {}
            pipe = self._redis.pipeline(transaction=False)
            args = [(p, b"0" if _is_look(p) else b"1")
                    for p in ([look] if look is not None else []) + others]  # fmt: skip
            for payload, always in args:
                pipe.eval(_WAKE_LUA, 1, self._idle, self.channel, payload, always)
            for name, seq in principals.items():
                pipe.publish(self.channel, principal_wake(name, seq))
            try:
                replies = await pipe.execute()
            except _ERRORS as exc:
                self.failed += len(args) + len(principals)
                if self.failed == len(args) + len(principals) or self.failed % 1000 == 0:
                    log.warning("cannot send wake-ups on %s (%d so far): %s", self.channel,
                                self.failed, exc)  # fmt: skip
                continue
            published = sum(1 for r in replies[: len(args)] if r)
            self.sent += published + len(principals)
            self.coalesced += len(args) - published

    async def flush(self) -> None:
        """Wait until every wake-up asked for so far has been sent (or has failed)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def close(self) -> None:
        """Nothing to do off the loop: `aclose()` on it sends what is pending and closes
        the connection (the web's cleanup does)."""

    async def aclose(self) -> None:
        await self.flush()
        if self.sent or self.coalesced or self.failed:
            log.info("wake-ups on %s: %d sent, %d left out, %d failed", self.channel,
                     self.sent, self.coalesced, self.failed)  # fmt: skip
        await self._redis.aclose()


class _Timer:
    """A Linux timerfd (ctypes: `os.timerfd_create` is Python 3.13's): readable once due."""

    class _Spec(ctypes.Structure):
        _fields_ = [("interval_s", ctypes.c_long), ("interval_ns", ctypes.c_long),
                    ("value_s", ctypes.c_long), ("value_ns", ctypes.c_long)]  # fmt: skip

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        # CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC
        fd = self._libc.timerfd_create(1, os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self.fd: int = fd

    def arm(self, seconds: float) -> None:
        ns = max(1, int(seconds * 1e9))  # 0 would disarm it
        spec = self._Spec(0, 0, ns // 1_000_000_000, ns % 1_000_000_000)
        if self._libc.timerfd_settime(self.fd, 0, ctypes.byref(spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def disarm(self) -> None:
        self._libc.timerfd_settime(self.fd, 0, ctypes.byref(self._Spec(0, 0, 0, 0)), None)
        self.take()

    def take(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)

    def close(self) -> None:
        os.close(self.fd)


class RedisWakeReceiver:
    """Subscribes to one channel and takes its wake-ups; select/poll on `fileno()`.

    `drain()` joins the idle set once it has read the socket: whoever calls it must look at
    everything it watches (the store) after it, whatever the messages said. A drain, park or
    wait after a lost connection, once subscribed again, returns a LOOK among its messages.

    `reconnects` counts the subscriptions made again after a drop; `connected` says whether
    the subscription is up now."""

    def __init__(self, url: str, channel: str) -> None:
        self.channel = channel
        self.id = uuid.uuid4().hex.encode()
        self._idle = idle_key(channel)
        self._redis = _client(url)
        pool = redis.ConnectionPool.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # reconnecting is ours: see `_subscribe`
            protocol=2,  # messages as plain replies, not RESP3 pushes
        )
        if issubclass(pool.connection_class, redis.Connection):  # TCP (not a Unix socket)
            pool.connection_kwargs.update(socket_keepalive=True,
                                          socket_keepalive_options=KEEPALIVE)  # fmt: skip
        self._conn: Any = pool.make_connection()
        self._pool = pool
        self._epoll = select.epoll()
        self._timer: _Timer | None
        try:
            self._timer = _Timer()
            self._epoll.register(self._timer.fd, select.EPOLLIN)
        except (OSError, AttributeError):
            self._timer = None  # then the owner's own fallback timer drives the retries
        self._sock_fd = -1
        self._in_idle = False  # joined the idle set, and no message since
        self._missed = False  # messages may have been lost: the next drain says LOOK
        self._retry_delay = RETRY_FIRST
        self._retry_at = 0.0
        self.reconnects = 0
        self._subscribe(first=True)

    @property
    def connected(self) -> bool:
        return self._sock_fd >= 0

    def fileno(self) -> int:
        return self._epoll.fileno()

    # --------------------------------------------------------------- connection

    def _subscribe(self, *, first: bool = False) -> bool:
        """Connect, subscribe and join the idle set; on failure, schedule a retry."""
        try:
            self._conn.connect()
            self._conn.send_command("SUBSCRIBE", self.channel)
            reply = self._conn.read_response()
            if not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
                raise redis.ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}")
            sock = self._conn._sock
            assert sock is not None
            self._sock_fd = sock.fileno()
            self._epoll.register(self._sock_fd, select.EPOLLIN)
            # After the subscription is confirmed: what is published from now reaches us.
            self._redis.sadd(self._idle, self.id)
        except _ERRORS as exc:
            self._drop(exc, quiet=not first and self._retry_delay > RETRY_FIRST)
            return False
        self._in_idle = True
        self._retry_delay = RETRY_FIRST
        if self._timer is not None:
            self._timer.disarm()
        if not first:
            self.reconnects += 1
            log.info("wake-ups on %s: subscribed again", self.channel)
        return True

    def _drop(self, exc: BaseException | None, *, quiet: bool = False) -> None:
        """The subscription is gone (or never came): forget it, and retry after a back-off."""
        if exc is not None and not quiet:
            log.warning("wake-ups on %s: connection lost (%s); reconnecting", self.channel,
                        exc)  # fmt: skip
        if self._sock_fd >= 0:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(self._sock_fd)
            self._sock_fd = -1
        with contextlib.suppress(*_ERRORS):
            self._conn.disconnect()
        self._in_idle = False
        self._missed = True
        self._retry_at = time.monotonic() + self._retry_delay
        if self._timer is not None:
            with contextlib.suppress(OSError):
                self._timer.arm(self._retry_delay)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _read(self) -> list[bytes]:
        """Every message on the subscription now (the parser's buffer included)."""
        out: list[bytes] = []
        if self._sock_fd < 0:
            return out
        try:
            while self._conn.can_read(timeout=0):
                reply = self._conn.read_response()
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    out.append(bytes(reply[2]))
        except _ERRORS as exc:
            self._drop(exc)
        return out

    # ----------------------------------------------------------------- receiving

    def drain(self, *, clear: bool = True) -> list[bytes]:
        """Every message waiting now (possibly none); then joins the idle set.

        After the socket is empty, not before (see the module's docstring). With
        `clear=False` the receiver stays out of the idle set (if a message took it out), so
        senders keep leaving their looks out while it is awake anyway: it must `park()`
        before it sleeps. After a lost connection, once subscribed again, the messages end
        with a LOOK."""
        out = self._read()
        if any(parse_principal_wake(m) is None for m in out):
            self._in_idle = False  # a publish that emptied the idle set
        if self._sock_fd < 0:
            if self._timer is not None:
                self._timer.take()
            if time.monotonic() < self._retry_at or not self._subscribe():
                return out
        if self._missed:
            self._missed = False
            self._in_idle = False
            out.append(LOOK)
        if clear and not self._in_idle:
            self._join()
        return out

    def _join(self) -> None:
        try:
            self._redis.sadd(self._idle, self.id)
        except _ERRORS as exc:
            # Not in the set, and cannot say so: resubscribe (and read all) when Redis is back.
            self._drop(exc)
            return
        self._in_idle = True

    def park(self) -> list[bytes] | None:
        """Before sleeping on `fileno()`, for a receiver that drains with `clear=False`:
        None if it is still in the idle set (no round trip then); else the messages that
        came, with the receiver in the idle set again, and its owner must look at
        everything once more before it sleeps (what comes after is woken for)."""
        if self._in_idle and self._sock_fd >= 0 and not self._missed:
            return None
        return self.drain()

    def wait(self, timeout: float | None) -> list[bytes]:
        """Block up to `timeout` seconds for wake-ups; returns what arrived (maybe none)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            poller = select.poll()
            poller.register(self._epoll.fileno(), select.POLLIN)
            ms = None if left is None else max(0, math.ceil(left * 1000))
            try:
                ready = poller.poll(ms)
            except InterruptedError:  # only where PEP 475 does not retry
                continue
            if not ready:
                return []
            out = self.drain()
            if out or (deadline is not None and time.monotonic() >= deadline):
                return out
            # Only the reconnection timer (or a reply that was no message): wait on.

    def close(self) -> None:
        if self._sock_fd >= 0:
            with contextlib.suppress(*_ERRORS):
                self._redis.srem(self._idle, self.id)
        with contextlib.suppress(OSError, ValueError):
            if self._sock_fd >= 0:
                self._epoll.unregister(self._sock_fd)
        self._sock_fd = -1
        with contextlib.suppress(*_ERRORS):
            self._conn.disconnect()
        self._pool.disconnect()
        self._redis.close()
        if self._timer is not None:
            self._timer.close()
        self._epoll.close()
