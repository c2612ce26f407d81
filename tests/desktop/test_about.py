"""The About box's "Signed in as" line, from `GET /api/me`."""

from __future__ import annotations

from desktop.ui.about import about_text, identity_text


def test_a_principal_that_is_not_the_owner_is_shown_with_its_capabilities():
    text = identity_text({"principal": "bob", "owner": False, "tasks": ["files.checksum"],
                          "roots": ["/srv/b"], "read_roots": [], "network": False})  # fmt: skip
    assert text == ("Signed in as bob: may run files.checksum; read and write under /srv/b; "
                    "only read under none; network: no.")  # fmt: skip


def test_the_owner_and_nobody_yet():
    assert "the owner" in identity_text({"principal": "local", "owner": True})
    assert identity_text(None) == "Not signed in yet."
    assert "&lt;b&gt;" in about_text({"principal": "<b>", "owner": False})
