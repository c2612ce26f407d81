"""Who is asking, and may they ask: tokens, principals, Host and Origin checks.

Shared by the web service and the notifier. Tokens are stored only as SHA-256 hashes in
`auth.json` (owner-only); the install's own token is also kept in clear in `token`
(owner-only) so local clients can use it. A presented token is hashed and compared with
every known hash in constant time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
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
    """Principal name -> token hash, from auth.json (empty if missing).

    Raises:
        ValueError: auth.json is not what Herald writes (see `ensure_install_token`).
    """
    try:
        data = json.loads(layout.auth_file.read_bytes())
        return {str(k): str(v["token_sha256"]) for k, v in data.get("principals", {}).items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{layout.auth_file} is not valid: {exc}") from None


def _save_principals(layout: DataLayout, principals: dict[str, str]) -> None:
    body = {"principals": {k: {"token_sha256": v} for k, v in sorted(principals.items())}}
    write_private(layout.auth_file, json.dumps(body, indent=2) + "\n")


_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,512}")


def _read_token(path: Path) -> tuple[str, str | None]:
    """The token in `path` ("" if there is none) and, if it cannot be used, why not."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return "", None
    except OSError as exc:
        return "", f"cannot be read: {exc.strerror or exc}"
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "", "is not text"
    if not _TOKEN.fullmatch(token):
        return "", "is empty" if not token else "does not hold a token"
    return token, None


def repair_install_token(layout: DataLayout) -> tuple[str, list[str]]:
    """The install's token, created on first use, with its principal registered, and what
    had to be repaired to get it, in words (empty when nothing was wrong).

    A token file that is not a token (not text, damaged) is replaced by a new token: the
    old one, if anyone still has it, no longer works, and the notice says so. An auth.json
    that cannot be read is set aside (auth.json.damaged) and started again with the
    install's principal only.
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.root, 0o700)
    notices: list[str] = []
    token, problem = _read_token(layout.token_file)
    try:
        principals = load_principals(layout)
    except (ValueError, OSError) as exc:
        aside = layout.auth_file.with_name(layout.auth_file.name + ".damaged")
        with contextlib.suppress(OSError):
            os.replace(layout.auth_file, aside)
        notices.append(f"{exc}; it was moved to {aside} and started again: principals "
                       "other than the install's own must be created again "
                       "(`herald token create NAME`)")  # fmt: skip
        principals = {}
    if not token:
        token = new_token()
        write_private(layout.token_file, token + "\n")
        if problem is not None:
            notices.append(f"the token file {layout.token_file} {problem}; a new token was "
                           "written there, and the old one no longer works: clients that "
                           "used it must read the new one")  # fmt: skip
    if principals.get(DEFAULT_PRINCIPAL) != hash_token(token):
        principals[DEFAULT_PRINCIPAL] = hash_token(token)
        _save_principals(layout, principals)
    return token, notices


def ensure_install_token(layout: DataLayout) -> str:
    """The install's token, created on first use, with its principal registered (what had
    to be repaired is logged; `repair_install_token` returns it)."""
    token, notices = repair_install_token(layout)
    for notice in notices:
        logging.getLogger("herald.auth").warning("%s", notice)
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
            try:
                self._hashes = list(load_principals(self._layout).items())
            except (ValueError, OSError) as exc:  # being rewritten, or damaged: keep the last
                logging.getLogger("herald.auth").warning("%s; keeping the principals read "
                                                         "before", exc)  # fmt: skip

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
