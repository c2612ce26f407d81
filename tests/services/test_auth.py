"""Principals and their capabilities in auth.json: old files, new ones, revocation."""

from __future__ import annotations

import json
import os

import pytest

from services.auth import (
    DEFAULT_PRINCIPAL,
    Authenticator,
    Capabilities,
    capabilities,
    create_principal,
    ensure_install_token,
    is_under,
    revoke_principal,
)
from services.layout import DataLayout


@pytest.fixture
def layout(tmp_path) -> DataLayout:
    return DataLayout(tmp_path / "data")


def test_an_auth_file_of_hashes_only_reads_as_the_defaults(layout):
    layout.root.mkdir()
    layout.auth_file.write_text(json.dumps({"principals": {
        "local": {"token_sha256": "a" * 64}, "bob": {"token_sha256": "b" * 64}}}))
    owner = capabilities(layout, "local")
    bob = capabilities(layout, "bob")
    assert owner is not None and owner.owner and owner.may_run("process.run")
    assert owner.write_roots == ("/",)
    assert bob is not None and not bob.owner
    assert bob.may_run("files.checksum") and not bob.may_run("process.run")
    assert bob.readable_roots == () and not bob.may_read("/tmp") and not bob.network
    assert capabilities(layout, "nobody") is None


def test_capabilities_are_stored_next_to_the_hash_and_roots_resolved(layout, tmp_path):
    ensure_install_token(layout)
    real = tmp_path / "shared"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    create_principal(layout, "bob", allow=["files.checksum"], roots=[str(tmp_path / "alias")],
                     read_roots=[str(tmp_path)], network=True)  # fmt: skip
    entry = json.loads(layout.auth_file.read_text())["principals"]["bob"]
    assert entry["allow"] == ["files.checksum"] and entry["network"] is True
    assert entry["roots"] == [os.path.realpath(real)]
    assert set(json.loads(layout.auth_file.read_text())["principals"]["local"]) == {
        "token_sha256"}
    bob = capabilities(layout, "bob")
    assert bob == Capabilities("bob", allow=frozenset({"files.checksum"}),
                               roots=(os.path.realpath(real),),
                               read_roots=(os.path.realpath(tmp_path),), network=True)
    assert bob.may_write(os.path.realpath(real / "x")) and not bob.may_write(str(tmp_path))
    assert bob.may_read(os.path.realpath(tmp_path / "y"))
    with pytest.raises(ValueError):
        create_principal(layout, "eve", roots=[str(tmp_path / "missing")])


def test_allow_star_allows_every_task(layout):
    create_principal(layout, "ops", allow=["*"])
    assert capabilities(layout, "ops").may_run("process.run")


def test_is_under_compares_whole_components():
    assert is_under("/a/b", "/a/b") and is_under("/a/b/c", "/a/b") and is_under("/x", "/")
    assert not is_under("/a/bc", "/a/b") and not is_under("/a", "/a/b")


def test_a_revoked_token_stops_working_at_once(layout):
    ensure_install_token(layout)
    token = create_principal(layout, "bob")
    auth = Authenticator(layout)
    assert auth.principal_for(token) == "bob"
    assert revoke_principal(layout, "bob") is True
    assert auth.principal_for(token) is None
    assert auth.capabilities("bob") is None
    assert revoke_principal(layout, "bob") is False
    with pytest.raises(ValueError):
        revoke_principal(layout, DEFAULT_PRINCIPAL)


def test_a_renewed_token_replaces_the_old_one(layout):
    old = create_principal(layout, "bob")
    auth = Authenticator(layout)
    assert auth.principal_for(old) == "bob"
    new = create_principal(layout, "bob")
    assert auth.principal_for(old) is None and auth.principal_for(new) == "bob"
