"""The storage seam: `--backend` values, what each backend hands the services, and that
the SQLite default never loads redis-py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.core.events import Event, EventType
from services.layout import DataLayout
from services.store.backend import (
    Backend,
    EventWaker,
    RedisBackend,
    open_backend,
    parse_backend,
)
from services.store.sqlite import TaskStore
from services.wake import WakeReceiver


@pytest.mark.parametrize("text", [None, "", "sqlite", "sqlite:", " sqlite "])
def test_the_default_is_the_data_dirs_sqlite(text):
    assert parse_backend(text).kind == "sqlite"


@pytest.mark.parametrize("text", ["redis://127.0.0.1:6379/0", "redis://h", "rediss://h:1/2",
                                  "redis://user:pw@h:6380/3"])  # fmt: skip
def test_redis_urls_are_accepted(text):
    spec = parse_backend(text)
    assert spec.kind == "redis" and spec.url == text


@pytest.mark.parametrize(("text", "says"), [
    ("postgres://h/db", "unknown backend"),
    ("redis://", "names no host"),
    ("redis://h:99999/0", "port"),
    ("redis://h:0/0", "port"),
    ("redis://h:1/x", "database is a number"),
    ("redis://h:1/0?x=1", "no query"),
])  # fmt: skip
def test_bad_backends_say_what_is_wrong(text, says):
    with pytest.raises(ValueError, match=says):
        parse_backend(text)


def test_sqlite_backend_opens_the_data_dirs_files(tmp_path: Path):
    layout = DataLayout(tmp_path)
    backend = open_backend(None, layout)
    assert type(backend) is Backend and backend.global_log and backend.local_files
    store = backend.store()
    try:
        assert isinstance(store, TaskStore) and store.path == layout.ledger_db
    finally:
        store.close()
    assert len(backend.queue()) == 0 and layout.queue_db.exists()


def test_redis_backend_is_chosen_by_its_url(tmp_path: Path):
    backend = open_backend("redis://127.0.0.1:1/0", DataLayout(tmp_path))
    assert isinstance(backend, RedisBackend)
    assert not backend.global_log and not backend.local_files
    import redis

    assert backend.errors == (redis.RedisError,)


def _event(principal: str, seq: int) -> Event:
    return Event(seq, "t" + str(seq), principal, EventType.PROGRESS, 0.0, 1, {})


def test_event_waker_tells_each_principals_head_once_per_burst():
    told: list[tuple[str, int]] = []
    plain: list[bytes] = []

    class Plain:
        def wake(self, payload: bytes = b"!") -> None:
            plain.append(payload)

        def close(self) -> None:
            pass

    waker = EventWaker(Plain(), per_principal=lambda p, seq: told.append((p, seq)))
    waker.recorded([_event("a", 3), None, _event("b", 1), _event("a", 5), _event("a", 4)])
    assert sorted(told) == [("a", 5), ("b", 1)] and plain == []


def test_event_waker_on_sqlite_sends_one_plain_wake_up(tmp_path: Path):
    layout = DataLayout(tmp_path)
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    receiver = WakeReceiver(layout.wake_address("notifier"))
    waker = open_backend(None, layout).event_waker()
    try:
        waker.recorded([None])
        assert receiver.wait(0.05) == []  # no event: nothing to say
        waker.recorded([_event("a", 1), _event("b", 2)])
        assert receiver.wait(2.0) == [b"!"]
    finally:
        waker.close()
        receiver.close()


@pytest.mark.parametrize("module", ["services.queue", "services.web.server",
                                    "services.worker.server", "services.notifier.server"])
def test_the_sqlite_services_never_import_redis(module):
    """huey imports redis-py whenever it is installed (~140 ms of a service's start, and
    `ssl` with it): a service on SQLite must not pay for it."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}, sys; print('redis' in sys.modules)"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert out.stdout.strip() == "False"
