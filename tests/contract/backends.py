"""The backends the contract suite runs on: one line each in BACKENDS.

A backend names the module and class of its store and how to find a fresh place for one
(a file, a database URL). It is listed only once its module exists in the tree, so the
suite runs on a branch that does not have it yet; once the module is there it must import
(an import error fails the suite, it is never skipped).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class Backend:
    """One store implementation under the contract.

    Attributes:
        id: the test id ("sqlite", "redis").
        module, cls: where its store class lives; it is called with the location.
        location: a fresh, empty place for this test's store, from the test's fixtures
            (`request.getfixturevalue`): a file path or a URL, as a string that a child
            process can open again (the commit-order test's writers and reader).
    """

    id: str
    module: str
    cls: str
    location: Callable[[pytest.FixtureRequest], str]

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def open(self, location: str) -> Any:
        """A new store instance (its own connection) on `location`."""
        return getattr(importlib.import_module(self.module), self.cls)(location)


def _sqlite_file(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("tmp_path") / "herald.db")


def _redis_database(request: pytest.FixtureRequest) -> str:
    # The session's redis-server, emptied before each test (tests/redis_server.py).
    return str(request.getfixturevalue("redis_url"))


BACKENDS = [
    Backend("sqlite", "services.store.sqlite", "TaskStore", _sqlite_file),
    Backend("redis", "services.store.redisstore", "RedisTaskStore", _redis_database),
]


def available() -> list[Backend]:
    return [b for b in BACKENDS if b.available()]
