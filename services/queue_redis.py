"""The transport on Redis: Huey's RedisStorage carries "run attempt of task X" messages.

The same messages as services.queue (Huey's own, the task "herald.run" with one argument,
the task id: a Huey consumer on the same Redis reads them), in a Redis list (LPUSH to
enqueue, RPOP or BRPOP to take the oldest). `RedisTaskQueue` has the public methods of
services.queue.TaskQueue that are not SQLite's own, and `dequeue_blocking(timeout)` for a
worker that has nothing else to wait on.

No acknowledgement, on purpose. Huey's Redis storage pops a message and hands it out: a
consumer killed between the pop and the end of its task loses the message (huey#253, #844),
and Huey offers no ack to add. Herald does not need one: the ledger, not the queue, is the
truth. A task stays queued in the ledger until a worker claims it (a lease with heartbeats);
the worker re-enqueues the ledger's queued tasks that the queue no longer holds, and every
worker reaps expired leases (re-queued while attempts remain, else failed with the reason).
A lost message therefore delays a task until that recovery, and never loses it; a message
read twice (re-enqueued while the first one was still on its way) is a claim that fails.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from huey import RedisHuey

from services.queue import QUEUE_NAME, UNREADABLE, _run, huey_redis, next_task_id

log = logging.getLogger(__name__)

SOCKET_TIMEOUT = 5.0  # a reply owed by Redis for a non-blocking command
CONNECT_TIMEOUT = 2.0



class RedisTaskQueue:
    """Enqueue and dequeue task ids through Huey on Redis (`url`: redis://HOST:PORT/DB).

    `name` names the list (`huey.redis.<name>`): several Herald instances may share one
    Redis under different names."""

    def __init__(self, url: str, *, name: str = QUEUE_NAME) -> None:
        huey_redis()  # huey may have been imported without redis-py (services.queue)
        self.url = url
        pool = redis.ConnectionPool.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT
        )
        self.huey = RedisHuey(name, connection_pool=pool, blocking=False, results=False,
                              utc=True)  # fmt: skip
        self._run = self.huey.task(name="herald.run")(_run)
        # BRPOP holds its connection for as long as it waits: its own pool, with no socket
        # timeout (Redis answers when the wait ends; a timeout before that would drop a
        # reply that may carry a message already popped).
        blocking_pool = redis.ConnectionPool.from_url(
            url, socket_timeout=None, socket_connect_timeout=CONNECT_TIMEOUT
        )
        if issubclass(blocking_pool.connection_class, redis.Connection):  # TCP: a dead
            blocking_pool.connection_kwargs["socket_keepalive"] = True  # peer is noticed
        self._blocking = RedisHuey(name, connection_pool=blocking_pool, blocking=True,
                                   results=False, utc=True)  # fmt: skip
        self._blocking.task(name="herald.run")(_run)  # so that it reads the messages
        self._blocking_lock = threading.Lock()  # read_timeout is the storage's attribute
        self._key = self.huey.storage.queue_key

    def _message(self, task_id: str) -> bytes:
        return bytes(self.huey.serialize_task(self._run.s(task_id)))

    def enqueue(self, task_id: str) -> None:
        self.huey.enqueue(self._run.s(task_id))

    def enqueue_many(self, task_ids: list[str]) -> None:
        """Enqueue several task ids, in order, in one LPUSH (one round trip; all or none)."""
        if not task_ids:
            return
        self.huey.storage.conn.lpush(self._key, *[self._message(t) for t in task_ids])

    def try_enqueue(self, task_id: str) -> bool:
        """Enqueue a task id: there is no write lock to wait for on Redis, so always True
        (or the Redis error, as `enqueue`)."""
        self.enqueue(task_id)
        return True

    def dequeue(self) -> str | None:
        """The next task id, or None at once if the queue is empty; the message leaves the
        queue as it is handed out (no ack: see the module's docstring).

        A message that cannot be read is skipped (`services.queue.next_task_id`).
        """
        return next_task_id(self.huey.dequeue, log)

    def dequeue_blocking(self, timeout: float) -> str | None:
        """The next task id, waiting up to `timeout` seconds for one (Huey's blocking
        dequeue: BRPOP, woken by the enqueue itself); None when none came."""
        deadline = time.monotonic() + timeout
        storage = self._blocking.storage

        def take() -> Any:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.huey.dequeue()  # BRPOP's 0 would mean "for ever"
            storage.read_timeout = max(left, 0.001)
            return self._blocking.dequeue()

        with self._blocking_lock:
            return next_task_id(take, log)

    def wal_size(self) -> int:
        """0: Redis has no write-ahead log of Herald's to watch (services.queue has)."""
        return 0

    def pending_ids(self) -> set[str]:
        """Task ids waiting in the queue (those that can be read)."""
        out = set()
        for data in self.huey.storage.enqueued_items():
            try:
                out.add(str(self.huey.deserialize_task(data).args[0]))
            except (*UNREADABLE, IndexError):
                continue  # logged when `dequeue` meets it
        return out

    def __len__(self) -> int:
        return int(self.huey.pending_count())

    def close(self) -> None:
        """Close the connections (both pools)."""
        self.huey.storage.pool.disconnect()
        self._blocking.storage.pool.disconnect()
