"""Who is asking, and may they ask: tokens, principals, capabilities, Host and Origin checks.

Shared by the web service, the notifier and the worker. Tokens are stored only as SHA-256
hashes in `auth.json` (owner-only); the install's own token is also kept in clear in `token`
(owner-only) so local clients can use it. A presented token is hashed and compared with
every known hash in constant time.

auth.json holds, per principal, its token hash and its capabilities:

    {"principals": {
        "local": {"token_sha256": "..."},
        "bob": {"token_sha256": "...", "allow": ["files.checksum"],
                "roots": ["/home/a/shared"], "read_roots": ["/srv/data"], "network": false}}}

The install's own principal ("local", the owner) may run every task over every folder
but Herald's own. Any other principal may run the tasks in "allow" (absent: every task but
those in `DEFAULT_DENIED`; "*": every task), read and write under "roots", only read under
"read_roots" (both absent: no folder at all), and open network connections only with
"network". Files written before capabilities existed (a hash only) read as those defaults.
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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.layout import DataLayout

DEFAULT_PRINCIPAL = "local"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# What a principal other than the owner may not run unless it is allowed by name: a program
# can do anything its user can.
DEFAULT_DENIED = frozenset({"process.run"})
ALL_TASKS = "*"


@dataclass(frozen=True)
class Capabilities:
    """What one principal may do.

    Attributes:
        principal: its name.
        owner: the install's own principal: every task, every folder but Herald's own.
        allow: the tasks it may run by name ("*": all); None: every task but
            `DEFAULT_DENIED`. Ignored for the owner.
        roots: folders (resolved, absolute) it may read and write under; the owner's is "/".
        read_roots: folders it may only read under.
        network: whether its tasks may open network connections.
    """

    principal: str
    owner: bool = False
    allow: frozenset[str] | None = None
    roots: tuple[str, ...] = ()
    read_roots: tuple[str, ...] = ()
    network: bool = False

    def may_run(self, task: str) -> bool:
        if self.owner:
            return True
        if self.allow is None:
            return task not in DEFAULT_DENIED
        return ALL_TASKS in self.allow or task in self.allow

    @property
    def write_roots(self) -> tuple[str, ...]:
        """The folders its tasks may write under (for the owner: "/", less Herald's own)."""
        return self.roots

    @property
    def readable_roots(self) -> tuple[str, ...]:
        """The folders its tasks may read under: its roots and its read roots."""
        return self.roots + self.read_roots

    def may_read(self, real_path: str) -> bool:
        """Whether a resolved path lies under one of its readable roots."""
        return any(is_under(real_path, root) for root in self.readable_roots)

    def may_write(self, real_path: str) -> bool:
        """Whether a resolved path lies under one of its write roots."""
        return any(is_under(real_path, root) for root in self.write_roots)

    def to_json(self) -> dict[str, Any]:
        """What auth.json stores (never the owner's: it has no choices)."""
        out: dict[str, Any] = {}
        if self.allow is not None:
            out["allow"] = sorted(self.allow)
        out["roots"] = list(self.roots)
        out["read_roots"] = list(self.read_roots)
        out["network"] = self.network
        return out


def is_under(path: str, folder: str) -> bool:
    """Whether `path` is `folder` or lies under it (both absolute and resolved)."""
    if folder == os.sep:
        return path.startswith(os.sep)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def owner_capabilities(principal: str = DEFAULT_PRINCIPAL) -> Capabilities:
    return Capabilities(principal, owner=True, roots=(os.sep,), network=True)


def _capabilities_from(name: str, entry: dict[str, Any]) -> Capabilities:
    """A principal's capabilities from its auth.json entry (missing members: defaults)."""
    if name == DEFAULT_PRINCIPAL:
        return owner_capabilities(name)
    allow = entry.get("allow")

    def folders(key: str) -> tuple[str, ...]:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and os.path.isabs(v)
                                                   for v in value):  # fmt: skip
            raise ValueError(f"principal {name!r}: {key} must be a list of absolute paths")
        return tuple(value)

    if allow is not None and not (isinstance(allow, list)
                                  and all(isinstance(a, str) for a in allow)):  # fmt: skip
        raise ValueError(f"principal {name!r}: allow must be a list of task names")
    network = entry.get("network", False)
    if not isinstance(network, bool):
        raise ValueError(f"principal {name!r}: network must be true or false")
    return Capabilities(name, allow=None if allow is None else frozenset(allow),
                        roots=folders("roots"), read_roots=folders("read_roots"),
                        network=network)  # fmt: skip


@dataclass(frozen=True)
class PrincipalEntry:
    """One principal of auth.json: its token's hash and what it may do."""

    token_sha256: str
    capabilities: Capabilities


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


def load_entries(layout: DataLayout) -> dict[str, PrincipalEntry]:
    """Every principal of auth.json with its token hash and capabilities (empty if missing).

    Raises:
        ValueError: auth.json is not what Herald writes (see `ensure_install_token`).
    """
    try:
        return parse_entries(layout.auth_file.read_bytes(), str(layout.auth_file))
    except FileNotFoundError:
        return {}


def parse_entries(raw: bytes | str, where: str) -> dict[str, PrincipalEntry]:
    """The principals of an auth.json document (`where` names it in the error).

    Raises:
        ValueError: it is not what Herald writes.
    """
    try:
        data = json.loads(raw)
        return {str(k): PrincipalEntry(str(v["token_sha256"]), _capabilities_from(str(k), v))
                for k, v in data.get("principals", {}).items()}  # fmt: skip
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{where} is not valid: {exc}") from None


def load_principals(layout: DataLayout) -> dict[str, str]:
    """Principal name -> token hash, from auth.json (empty if missing).

    Raises:
        ValueError: auth.json is not what Herald writes (see `ensure_install_token`).
    """
    return {name: e.token_sha256 for name, e in load_entries(layout).items()}


def capabilities(layout: DataLayout, principal: str) -> Capabilities | None:
    """What `principal` may do, read from auth.json now (None: no such principal).

    For the worker, when an attempt starts: the ledger names the principal.

    Raises:
        ValueError: auth.json is damaged.
    """
    entry = load_entries(layout).get(principal)
    return None if entry is None else entry.capabilities


def entries_json(entries: dict[str, PrincipalEntry]) -> str:
    """The auth.json document of these principals."""
    principals = {}
    for name, e in sorted(entries.items()):
        item: dict[str, Any] = {"token_sha256": e.token_sha256}
        if not e.capabilities.owner:
            item.update(e.capabilities.to_json())
        principals[name] = item
    return json.dumps({"principals": principals}, indent=2) + "\n"


def _save_entries(layout: DataLayout, entries: dict[str, PrincipalEntry]) -> None:
    write_private(layout.auth_file, entries_json(entries))


# ------------------------------------------------------------ principals on Redis
#
# On the Redis backend many hosts serve the same principals: their registry is the same
# document auth.json holds, kept in Redis (`REGISTRY_KEY`) with a counter of its changes
# (`REGISTRY_VERSION_KEY`), changed atomically (WATCH/MULTI). Only token hashes are stored,
# as in auth.json. A node's Authenticator looks at the counter at most every
# `REGISTRY_RECHECK` seconds (one small GET, not one per request), and at once when told
# a token was revoked. The install's own principal ("local") is the cluster's owner: the
# first node that joins registers its token; every other node must hold the same token in
# its data dir (docs/deploy.md: copy the first node's `token` file), else it refuses to
# start rather than take over the owner's name.

REGISTRY_KEY = "herald:auth"
REGISTRY_VERSION_KEY = "herald:auth:version"
REGISTRY_RECHECK = 0.5  # seconds a node may go on with principals it read before
REGISTRY_MISS_RECHECK = 0.05  # ... or, after an unknown token, at least this long


class PrincipalRegistry:
    """The principals of a Redis backend (see above). Thread-safe (redis-py's pool)."""

    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.url = url

    def version(self) -> int:
        raw = self._redis.get(REGISTRY_VERSION_KEY)
        return int(raw) if raw is not None else 0

    def load(self) -> tuple[int, dict[str, PrincipalEntry]]:
        """(version, principals) as one snapshot."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(REGISTRY_VERSION_KEY)
        pipe.get(REGISTRY_KEY)
        version, doc = pipe.execute()
        entries = {} if doc is None else parse_entries(doc, f"{REGISTRY_KEY} in Redis")
        return (int(version) if version is not None else 0), entries

    def update(self, change: Callable[[dict[str, PrincipalEntry]],
                                      dict[str, PrincipalEntry] | None]) -> bool:  # fmt: skip
        """Apply `change` to the principals atomically (retried if another node changed
        them meanwhile); `change` returns the new principals, or None for no change.
        Returns whether anything was written."""
        import redis

        while True:
            with self._redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(REGISTRY_KEY)
                    doc = pipe.get(REGISTRY_KEY)
                    entries = {} if doc is None else parse_entries(doc, REGISTRY_KEY)
                    new = change(dict(entries))
                    if new is None:
                        return False
                    pipe.multi()
                    pipe.set(REGISTRY_KEY, entries_json(new))
                    pipe.incr(REGISTRY_VERSION_KEY)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def join(self, layout: DataLayout) -> None:
        """Register this node's install principal, or check that it is the cluster's.

        The first node to join brings every principal of its auth.json; later nodes add
        nothing, but must hold the owner's token.

        Raises:
            ValueError: this node's token is not the cluster owner's.
        """
        token = ensure_install_token(layout)
        mine = load_entries(layout)

        def change(entries: dict[str, PrincipalEntry]) -> dict[str, PrincipalEntry] | None:
            own = entries.get(DEFAULT_PRINCIPAL)
            if own is None:
                return {**mine, **entries}
            if not hmac.compare_digest(own.token_sha256, hash_token(token)):
                raise ValueError(
                    f"this node's token ({layout.token_file}) is not the one the other "
                    f"nodes of {self.url} use: copy the first node's token file here "
                    "(owner-only) and start again")  # fmt: skip
            return None

        self.update(change)

    def create(self, name: str, entry: PrincipalEntry) -> None:
        self.update(lambda entries: {**entries, name: entry})

    def revoke(self, name: str) -> bool:
        found = []

        def change(entries: dict[str, PrincipalEntry]) -> dict[str, PrincipalEntry] | None:
            if entries.pop(name, None) is None:
                return None
            found.append(name)
            return entries

        self.update(change)
        return bool(found)

    def close(self) -> None:
        self._redis.close()


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
        principals = load_entries(layout)
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
    own = principals.get(DEFAULT_PRINCIPAL)
    if own is None or own.token_sha256 != hash_token(token):
        principals[DEFAULT_PRINCIPAL] = PrincipalEntry(hash_token(token), owner_capabilities())
        _save_entries(layout, principals)
    return token, notices


def ensure_install_token(layout: DataLayout) -> str:
    """The install's token, created on first use, with its principal registered (what had
    to be repaired is logged; `repair_install_token` returns it)."""
    token, notices = repair_install_token(layout)
    for notice in notices:
        logging.getLogger("herald.auth").warning("%s", notice)
    return token


def create_principal(
    layout: DataLayout,
    name: str,
    *,
    allow: Iterable[str] | None = None,
    roots: Iterable[str] = (),
    read_roots: Iterable[str] = (),
    network: bool = False,
    registry: PrincipalRegistry | None = None,
) -> str:
    """Register a new principal (or give an existing one a new token and these
    capabilities); returns the token. With `registry`, in a Redis backend's registry
    instead of the data dir's auth.json.

    Args:
        allow: the tasks it may run ("*": all); None: every task but `DEFAULT_DENIED`.
        roots, read_roots: folders it may read and write / only read under (resolved
            here, symbolic links followed).
        network: whether its tasks may open network connections.

    Raises:
        ValueError: the name is not 1-64 letters, digits, '.', '_' or '-', it is the
            install's own, or a root is not an existing folder.
    """
    if not _NAME.fullmatch(name):
        raise ValueError("a principal name is 1-64 letters, digits, '.', '_' or '-'")
    ensure_install_token(layout)
    if name == DEFAULT_PRINCIPAL:
        raise ValueError(f"{DEFAULT_PRINCIPAL!r} is the install's own principal")

    def resolved(folders: Iterable[str]) -> tuple[str, ...]:
        out = []
        for folder in folders:
            real = os.path.realpath(os.path.expanduser(folder))
            if not os.path.isdir(real):
                raise ValueError(f"{folder} is not a folder")
            if real not in out:
                out.append(real)
        return tuple(out)

    caps = Capabilities(name, allow=None if allow is None else frozenset(allow),
                        roots=resolved(roots), read_roots=resolved(read_roots),
                        network=network)  # fmt: skip
    token = new_token()
    if registry is not None:
        registry.create(name, PrincipalEntry(hash_token(token), caps))
        return token
    principals = load_entries(layout)
    principals[name] = PrincipalEntry(hash_token(token), caps)
    _save_entries(layout, principals)
    return token


def revoke_principal(layout: DataLayout, name: str) -> bool:
    """Remove a principal and its token; False if there was none of that name.

    Raises:
        ValueError: it is the install's own principal.
    """
    if name == DEFAULT_PRINCIPAL:
        raise ValueError(f"{DEFAULT_PRINCIPAL!r} is the install's own principal; its token "
                         "is renewed by deleting the token file while Herald is stopped")
    principals = load_entries(layout)
    if principals.pop(name, None) is None:
        return False
    _save_entries(layout, principals)
    return True


class Authenticator:
    """Maps a presented token to its principal and its capabilities; re-reads auth.json
    whenever it changed (one stat per look-up: a revoked token stops working at once)."""

    def __init__(self, layout: DataLayout, sessions: SessionStore | None = None, *,
                 registry: PrincipalRegistry | None = None) -> None:  # fmt: skip
        self._layout = layout
        # The principals of a Redis backend, shared by every node (else auth.json's).
        self._registry = registry
        self._next_check = 0.0
        self._read_failed = False
        # Browser sessions: the web service passes the store it writes; others read the
        # data dir's (opened when a session is first asked about).
        self._sessions = sessions
        self._stamp: tuple[int, int, int] | None = None
        self._hashes: list[tuple[str, str]] = []
        self._caps: dict[str, Capabilities] = {}
        self.reload()

    def reload(self, *, force: bool = False) -> bool:
        """Read auth.json again if it changed since the last read; whether it did. On a
        Redis backend, the registry, looked at no more often than every
        `REGISTRY_RECHECK` seconds unless `force`."""
        if self._registry is not None:
            return self._reload_registry(force)
        try:
            st = self._layout.auth_file.stat()
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp == self._stamp:
            return False
        try:
            entries = load_entries(self._layout)
        except (ValueError, OSError) as exc:  # being rewritten, or damaged: keep the last
            logging.getLogger("herald.auth").warning("%s; keeping the principals read "
                                                     "before", exc)  # fmt: skip
            return False
        self._stamp = stamp
        self._hashes = [(name, e.token_sha256) for name, e in entries.items()]
        self._caps = {name: e.capabilities for name, e in entries.items()}
        return True

    def _reload_registry(self, force: bool) -> bool:
        assert self._registry is not None
        now = time.monotonic()
        if not force and now < self._next_check:
            return False
        self._next_check = now + REGISTRY_RECHECK
        try:
            version = self._registry.version()
            if self._stamp == (version, 0, 0):
                return False
            version, entries = self._registry.load()
        except Exception as exc:  # Redis away, or a damaged document: keep the last
            if not self._read_failed:
                logging.getLogger("herald.auth").warning(
                    "cannot read the principals from Redis (%s); keeping those read "
                    "before", exc)  # fmt: skip
            self._read_failed = True
            return False
        if self._read_failed:
            logging.getLogger("herald.auth").info("the principals can be read again")
            self._read_failed = False
        self._stamp = (version, 0, 0)
        self._hashes = [(name, e.token_sha256) for name, e in entries.items()]
        self._caps = {name: e.capabilities for name, e in entries.items()}
        return True

    def principal_for(self, token: str | None) -> str | None:
        """The principal whose token this is, or None."""
        if not token:
            return None
        self.reload()
        found = self._match(hash_token(token))
        if found is None and self._registry is not None and self._miss_recheck():
            found = self._match(hash_token(token))  # a principal made on another node
        return found

    def _miss_recheck(self) -> bool:
        """After an unknown token on a Redis backend: look at the registry again if the
        last look is more than `REGISTRY_MISS_RECHECK` old (a principal just created on
        another node is known here at once; a client sending bad tokens costs at most a
        small GET every that often)."""
        now = time.monotonic()
        if now - (self._next_check - REGISTRY_RECHECK) < REGISTRY_MISS_RECHECK:
            return False
        return self.reload(force=True)

    def holds(self, principal: str, token_sha256: str) -> bool:
        """Whether `principal` still exists with this token (as last read; see `reload`).

        A browser session's credential (`Session.credential`) holds while the session has
        not ended (signed out, expired) and its principal still has the token it had when
        the session began."""
        if token_sha256.startswith(SESSION_PREFIX):
            session = self._session(token_sha256[len(SESSION_PREFIX):])
            return session is not None and session.principal == principal
        return self._match(token_sha256) == principal

    @property
    def sessions(self) -> SessionStore:
        if self._sessions is None:
            self._sessions = SessionStore.for_layout(self._layout, create=False)
        return self._sessions

    def session_for(self, cookie: str | None) -> Session | None:
        """The live session whose cookie this is, or None (none, ended, or its principal
        revoked or given a new token since). A store that cannot be read is no session."""
        if not cookie or not _TOKEN.fullmatch(cookie):
            return None
        self.reload()
        return self._session(hash_token(cookie))

    def _session(self, sha256: str) -> Session | None:
        import sqlite3

        try:
            session = self.sessions.get(sha256)
        except sqlite3.Error as exc:
            logging.getLogger("herald.auth").warning("cannot read the sessions: %s", exc)
            return None
        if session is None or not session.valid(time.time()):
            return None
        if self._match(session.token_sha256) != session.principal:
            return None
        return session

    def capabilities(self, principal: str) -> Capabilities | None:
        """What `principal` may do (None: it is not, or no longer, known)."""
        return self._caps.get(principal)

    def _match(self, presented: str) -> str | None:
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


def host_allowed(host: str | None, port: int, names: tuple[str, ...] = (),
                 loopback: bool = True) -> bool:  # fmt: skip
    """Whether a Host header names this server by one of its names and the right port.

    The names are the loopback ones (for a loopback bind, the default) and `names` (the
    `--allowed-host` names a non-loopback bind is reached by), exactly. Refusing other
    names defeats DNS rebinding: a page on evil.example whose name now resolves to this
    server still sends `Host: evil.example:PORT`.
    """
    if not host:
        return False
    return host.lower() in _server_names(port, names, loopback)


def _server_names(port: int, names: tuple[str, ...], loopback: bool) -> frozenset[str]:
    own = {f"{h}:{port}" for h in names}
    if loopback:
        own.update(f"{h}:{port}" for h in LOOPBACK_HOSTS)
    return frozenset(h.lower() for h in own)


def page_origins(web_port: int, names: tuple[str, ...] = (), scheme: str = "http",
                 loopback: bool = True) -> frozenset[str]:  # fmt: skip
    """The origins of Herald's own page: `scheme` (https when the web serves TLS) with
    each name it is reached by (both loopback spellings and [::1] for a loopback bind)."""
    hosts = (*names, *(("127.0.0.1", "localhost", "[::1]") if loopback else ()))
    return frozenset(f"{scheme}://{h}:{web_port}".lower() for h in hosts)


def origin_allowed(origin: str | None, web_port: int | None, names: tuple[str, ...] = (),
                   scheme: str = "http", loopback: bool = True,
                   also: tuple[str, ...] = ()) -> bool:  # fmt: skip
    """No Origin (a non-browser client) or Herald's own page's origin (or one of `also`,
    the page's origins when the web runs on another host); nothing else."""
    if origin is None:
        return True
    origin = origin.lower()
    if origin in (o.lower() for o in also):
        return True
    return web_port is not None and origin in page_origins(web_port, names, scheme, loopback)


@dataclass(frozen=True)
class Exposure:
    """How one service is reached: its port, the public names its Host check accepts
    (`--allowed-host`), whether it is bound to loopback (the loopback names are accepted
    too) and whether it serves TLS. The default, `Exposure.local(port)`, is today's:
    loopback names only, plain HTTP."""

    port: int
    names: tuple[str, ...] = ()
    loopback: bool = True
    tls: bool = False

    @classmethod
    def local(cls, port: int) -> Exposure:
        return cls(port)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def host_allowed(self, host: str | None) -> bool:
        return host_allowed(host, self.port, self.names, self.loopback)

    def page_origins(self) -> frozenset[str]:
        return page_origins(self.port, self.names, self.scheme, self.loopback)

    def browser_origins(self) -> frozenset[str]:
        return browser_origins(self.port, self.names, self.scheme, self.loopback)


# ------------------------------------------------------------------ browser sessions
#
# A browser signs in with a one-time ticket (services/web/browser.py) and then holds a
# session cookie. The web service writes sessions; the notifier checks them on its
# WebSocket handshake and on a "revoked" wake-up: both are separate processes, so the
# sessions live in a file of the data dir, `sessions.db` (SQLite, WAL: the notifier's reads
# never wait for the web's writes). Not the ledger: a session is not a task, the ledger's
# writer is busy with tasks, and a session's writes (sign-in, sign-out, the idle clock)
# would wait behind them for nothing. Only each cookie's SHA-256 is stored, as for tokens.
#
# A session is bound to its principal *and* to the hash of that principal's token when it
# signed in: revoking the principal, or giving it a new token, ends all of its sessions at
# once (`Authenticator.holds` fails for them), with nothing to delete.

SESSION_PREFIX = "session:"  # a credential that is a session's hash, not a token's
SESSION_TOUCH_EVERY = 60.0  # seconds: how stale a session's idle clock may get


def session_cookie_name(web_port: int | None) -> str:
    """The session cookie's name for the web service on `web_port`: cookies are not
    scoped by port, so two instances on one machine must not share one name."""
    return f"herald_session_{web_port}"


def browser_origins(web_port: int | None, names: tuple[str, ...] = (), scheme: str = "http",
                    loopback: bool = True) -> frozenset[str]:  # fmt: skip
    """The origins Herald's page can be served under, exactly: what a cookie-authenticated
    request must come from. For a loopback bind (the default) as 127.0.0.1 or as
    localhost; and as each public name it is reached by (`--allowed-host`, https with
    TLS)."""
    if web_port is None:
        return frozenset()
    hosts = (*names, *(("127.0.0.1", "localhost") if loopback else ()))
    return frozenset(f"{scheme}://{h}:{web_port}".lower() for h in hosts)


def cookie_value(headers: Iterable[str], name: str) -> str | None:
    """The value of cookie `name` in `Cookie` header values (None if absent or given twice
    with different values: which one a browser meant cannot be told)."""
    found = None
    for header in headers:
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                value = value.strip().strip('"')
                if found is not None and found != value:
                    return None
                found = value
    return found


@dataclass(frozen=True)
class Session:
    """One browser session.

    Attributes:
        sha256: the hash of its cookie (its id: the cookie itself is stored nowhere).
        principal: who it signed in as.
        token_sha256: that principal's token hash at sign-in (the session holds while
            the principal still has this token).
        created_at, expires_at: Unix times; it ends at `expires_at` whatever happens.
        idle_until: Unix time; it ends then unless used before (each use moves it on).
        idle: its idle lifetime in seconds.
    """

    sha256: str
    principal: str
    token_sha256: str
    created_at: float
    expires_at: float
    idle_until: float
    idle: float

    @property
    def credential(self) -> str:
        """What `Authenticator.holds` takes for it (as a token's hash for a token)."""
        return SESSION_PREFIX + self.sha256

    @property
    def ends_at(self) -> float:
        """When it ends if not used before."""
        return min(self.expires_at, self.idle_until)

    def valid(self, now: float) -> bool:
        return now < self.ends_at


class SessionStore:
    """The browser sessions of a data dir (`sessions.db`).

    Args:
        path: the database file.
        create: make the file and its table if missing (the web service). A reader
            (the notifier) passes False: with no file, there is no session.

    Raises:
        sqlite3.Error: the file cannot be made or is not a database (create=True).
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        import sqlite3

        self.path = path
        self._sqlite3 = sqlite3
        self._conn: Any = None
        if create:
            self._open()

    @classmethod
    def for_layout(cls, layout: DataLayout, *, create: bool = True) -> SessionStore:
        return cls(layout.root / "sessions.db", create=create)

    def _open(self) -> Any:
        if self._conn is None:
            sqlite3 = self._sqlite3
            if not self.path.exists():
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
            conn = sqlite3.connect(str(self.path), timeout=0.5, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS sessions (sha256 TEXT PRIMARY KEY, principal "
                    "TEXT NOT NULL, token_sha256 TEXT NOT NULL, created_at REAL NOT NULL, "
                    "expires_at REAL NOT NULL, idle_until REAL NOT NULL, idle REAL NOT NULL)"
                )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _reader(self) -> Any:
        if self._conn is None and not self.path.exists():
            return None
        return self._open()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def create(self, principal: str, token_sha256: str, *, idle: float, max_age: float,
               now: float | None = None) -> tuple[str, Session]:  # fmt: skip
        """A new session: its cookie (256 random bits, returned once, stored nowhere)
        and the session."""
        now = time.time() if now is None else now
        cookie = new_token()
        session = Session(hash_token(cookie), principal, token_sha256, now, now + max_age,
                          min(now + idle, now + max_age), idle)  # fmt: skip
        self._open().execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session.sha256, principal, token_sha256, now, session.expires_at,
             session.idle_until, idle),
        )  # fmt: skip
        return cookie, session

    def get(self, sha256: str) -> Session | None:
        """The session with this cookie hash, ended or not (None: there is none)."""
        conn = self._reader()
        if conn is None:
            return None
        row = conn.execute("SELECT * FROM sessions WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else Session(*row)

    def touch(self, session: Session, now: float | None = None) -> Session:
        """Move the session's idle clock on (a write at most every SESSION_TOUCH_EVERY)."""
        now = time.time() if now is None else now
        idle_until = min(now + session.idle, session.expires_at)
        if idle_until - session.idle_until < SESSION_TOUCH_EVERY:
            return session
        self._open().execute("UPDATE sessions SET idle_until = ? WHERE sha256 = ?",
                             (idle_until, session.sha256))  # fmt: skip
        return Session(session.sha256, session.principal, session.token_sha256,
                       session.created_at, session.expires_at, idle_until, session.idle)

    def delete(self, sha256: str) -> bool:
        """End a session (sign-out); whether there was one."""
        cur = self._open().execute("DELETE FROM sessions WHERE sha256 = ?", (sha256,))
        return bool(cur.rowcount)

    def purge(self, still_held: Callable[[str, str], bool],
              now: float | None = None) -> int:  # fmt: skip
        """Delete the sessions that ended, or whose principal's token changed
        (`still_held(principal, token_sha256)` is False); how many."""
        now = time.time() if now is None else now
        conn = self._open()
        gone = [sha for sha, p, t, ends in conn.execute(
            "SELECT sha256, principal, token_sha256, MIN(expires_at, idle_until) FROM "
            "sessions")
            if ends <= now or not still_held(p, t)]  # fmt: skip
        for i in range(0, len(gone), 500):
            chunk = gone[i:i + 500]
            conn.execute(f"DELETE FROM sessions WHERE sha256 IN ({','.join('?' * len(chunk))})",
                         chunk)  # fmt: skip
        return len(gone)
