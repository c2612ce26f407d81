"""The principals of a Redis backend: one registry that every node reads, on a real
redis-server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from services.auth import (
    DEFAULT_PRINCIPAL,
    REGISTRY_RECHECK,
    Authenticator,
    Capabilities,
    PrincipalEntry,
    PrincipalRegistry,
    ensure_install_token,
    hash_token,
    new_token,
)
from services.layout import DataLayout


def node(tmp_path: Path, name: str) -> DataLayout:
    return DataLayout(tmp_path / name)


def test_the_first_node_brings_its_principals_and_others_must_share_the_owner(
        tmp_path, redis_url):  # fmt: skip
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    token = ensure_install_token(a)
    registry = PrincipalRegistry(redis_url)
    registry.join(a)
    version, entries = registry.load()
    assert version == 1 and entries[DEFAULT_PRINCIPAL].token_sha256 == hash_token(token)
    registry.join(a)  # again: nothing to change
    assert registry.version() == 1

    ensure_install_token(b)  # a token of its own: not the cluster's
    with pytest.raises(ValueError, match="copy the first node's token file"):
        registry.join(b)
    assert registry.load()[1][DEFAULT_PRINCIPAL].token_sha256 == hash_token(token)

    b.token_file.write_text(token + "\n")  # as docs/deploy.md says
    registry.join(b)
    assert registry.version() == 1


def test_every_node_authenticates_a_principal_created_on_any(tmp_path, redis_url):
    a, b = node(tmp_path, "a"), node(tmp_path, "b")
    ensure_install_token(a)
    PrincipalRegistry(redis_url).join(a)
    on_a = Authenticator(a, registry=PrincipalRegistry(redis_url))
    on_b = Authenticator(b, registry=PrincipalRegistry(redis_url))
    token = new_token()
    assert on_b.principal_for(token) is None
    PrincipalRegistry(redis_url).create(
        "bob", PrincipalEntry(hash_token(token), Capabilities("bob", roots=("/srv",))))
    # Seen after at most REGISTRY_RECHECK seconds, or at once when asked to look.
    assert on_a.reload(force=True) and on_a.principal_for(token) == "bob"
    on_b.reload(force=True)
    assert on_b.principal_for(token) == "bob"
    assert on_b.capabilities("bob").roots == ("/srv",)
    assert b.auth_file.exists() is False  # nothing of it is written on the node

    assert PrincipalRegistry(redis_url).revoke("bob")
    assert not PrincipalRegistry(redis_url).revoke("bob")
    on_a.reload(force=True)
    assert on_a.principal_for(token) is None
    assert REGISTRY_RECHECK <= 1.0


def test_concurrent_changes_are_all_kept(tmp_path, redis_url):
    """WATCH/MULTI: ten nodes creating a principal each at once lose none."""
    tokens = {f"p{i}": new_token() for i in range(10)}

    def create(name: str) -> None:
        PrincipalRegistry(redis_url).create(
            name, PrincipalEntry(hash_token(tokens[name]), Capabilities(name)))

    threads = [threading.Thread(target=create, args=(n,)) for n in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    version, entries = PrincipalRegistry(redis_url).load()
    assert set(entries) == set(tokens) and version == len(tokens)


def test_a_node_keeps_its_principals_while_redis_is_away(tmp_path, redis_server):
    a = node(tmp_path, "a")
    token = ensure_install_token(a)
    PrincipalRegistry(redis_server.url).join(a)
    auth = Authenticator(a, registry=PrincipalRegistry(redis_server.url))
    assert auth.principal_for(token) == DEFAULT_PRINCIPAL
    redis_server.kill()
    assert not auth.reload(force=True)  # logged once; the last principals stand
    assert auth.principal_for(token) == DEFAULT_PRINCIPAL
