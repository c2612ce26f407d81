"""Who is asking, and may they ask: tokens, principals, Host and Origin checks.

Shared by the web service and the notifier. Tokens are stored only as SHA-256 hashes in
`auth.json` (owner-only); the install's own token is also kept in clear in `token`
(owner-only) so local clients can use it. A presented token is hashed and compared with
every known hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from pathlib import Path

from services.layout import DataLayout

DEFAULT_PRINCIPAL = "local"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    """A random token of 256 bits."""
    return secrets.token_urlsafe(32)


def write_private(path: Path, text: str) -> None:
    """Write a file atomically with owner-only permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_principals(layout: DataLayout) -> dict[str, str]:
    """Principal name -> token hash, from auth.json (empty if missing)."""
    try:
        data = json.loads(layout.auth_file.read_text())
    except FileNotFoundError:
        return {}
    return {str(k): str(v["token_sha256"]) for k, v in data.get("principals", {}).items()}


def _save_principals(layout: DataLayout, principals: dict[str, str]) -> None:
    body = {"principals": {k: {"token_sha256": v} for k, v in sorted(principals.items())}}
    write_private(layout.auth_file, json.dumps(body, indent=2) + "\n")


def ensure_install_token(layout: DataLayout) -> str:
    """The install's token, created on first use, with its principal registered."""
    layout.root.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.root, 0o700)
    try:
        token = layout.token_file.read_text().strip()
    except FileNotFoundError:
        token = ""
    principals = load_principals(layout)
    if not token:
        token = new_token()
        write_private(layout.token_file, token + "\n")
    if principals.get(DEFAULT_PRINCIPAL) != hash_token(token):
        principals[DEFAULT_PRINCIPAL] = hash_token(token)
        _save_principals(layout, principals)
    return token


def create_principal(layout: DataLayout, name: str) -> str:
    """Register a new principal (or give an existing one a new token); returns the token.

    Raises:
        ValueError: the name is not 1-64 letters, digits, '.', '_' or '-'.
    """
    if not _NAME.fullmatch(name):
        raise ValueError("a principal name is 1-64 letters, digits, '.', '_' or '-'")
    ensure_install_token(layout)
    if name == DEFAULT_PRINCIPAL:
        raise ValueError(f"{DEFAULT_PRINCIPAL!r} is the install's own principal")
    principals = load_principals(layout)
    token = new_token()
    principals[name] = hash_token(token)
    _save_principals(layout, principals)
    return token


class Authenticator:
    """Maps a presented token to its principal; re-reads auth.json when it changes."""

    def __init__(self, layout: DataLayout) -> None:
        self._layout = layout
        self._mtime = -1.0
        self._hashes: list[tuple[str, str]] = []
        self._reload()

    def _reload(self) -> None:
        try:
            mtime = self._layout.auth_file.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime != self._mtime:
            self._mtime = mtime
            self._hashes = list(load_principals(self._layout).items())

    def principal_for(self, token: str | None) -> str | None:
        """The principal whose token this is, or None."""
        if not token:
            return None
        found = self._match(token)
        if found is None:
            self._reload()  # a principal may have been created since
            found = self._match(token)
        return found

    def _match(self, token: str) -> str | None:
        presented = hash_token(token)
        found = None
        for principal, expected in self._hashes:  # no early exit: constant time
            if hmac.compare_digest(presented, expected):
                found = principal
        return found


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def host_allowed(host: str | None, port: int) -> bool:
    """Whether a Host header names this server by a loopback name and the right port.

    Refusing other names defeats DNS rebinding: a page on evil.example whose name now
    resolves to 127.0.0.1 still sends `Host: evil.example:PORT`.
    """
    if not host:
        return False
    return host.lower() in {f"{h}:{port}" for h in LOOPBACK_HOSTS}


def page_origins(web_port: int) -> frozenset[str]:
    """The origins of Herald's own page (both loopback spellings)."""
    return frozenset({f"http://127.0.0.1:{web_port}", f"http://localhost:{web_port}",
                      f"http://[::1]:{web_port}"})  # fmt: skip


def origin_allowed(origin: str | None, web_port: int | None) -> bool:
    """No Origin (a non-browser client) or Herald's own page's origin; nothing else."""
    if origin is None:
        return True
    return web_port is not None and origin.lower() in page_origins(web_port)
