"""The contract suite's fixtures: every test here runs once per backend in
tests/contract/backends.py, on a fresh, empty store of that backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.contract.backends import Backend, available


@pytest.fixture(params=available(), ids=lambda b: b.id)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def location(backend: Backend, request: pytest.FixtureRequest) -> str:
    """Where this test's store lives (a file path, a URL): fresh and empty."""
    return backend.location(request)


@pytest.fixture
def make_store(backend: Backend, location: str) -> Iterator[Callable[[], Any]]:
    """Opens another instance of this test's store (its own connection to the same data,
    as another service or host would); every one is closed after the test."""
    opened: list[Any] = []

    def make() -> Any:
        store = backend.open(location)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], Any]) -> Any:
    return make_store()
