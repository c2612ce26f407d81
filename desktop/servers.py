"""Saved remote servers: which Herald the desktop app talks to, and checking one.

The app either runs its own services ("This computer", the default) or connects to a
Herald run elsewhere (`herald serve` on another machine or in another data dir): a saved
server, a name for a URL (http://host:port or https://host:port), optionally the CA
certificate of a self-signed server, and a token.

Where each part is kept:
- the names, URLs, CA files and the last choice in the app's QSettings (a plain ini file
  that other programs and backups read freely): nothing secret;
- the tokens in a file of their own under the app's config dir (`server-tokens.json`,
  written owner-only, 0600, in a 0700 folder, replaced atomically), never in the ini and
  never logged.

`check_server()` is what the connect dialog's "Test" and every connection run first: the
unauthenticated health says whether a Herald answers at all (unreachable, a TLS failure,
or something that is not Herald), then `/api/me` whether the token is good (401), and the
authenticated health where its notifier listens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import platformdirs
from PySide6.QtCore import QSettings

from embedded.client import (
    ApiError,
    AsyncHeraldClient,
    ServiceUnavailable,
    TlsFailure,
    tls_context,
)

log = logging.getLogger(__name__)

THIS_COMPUTER = ""  # the choice that runs the app's own services
TOKENS_FILE = "server-tokens.json"
CURRENT_KEY = "servers/current"  # QSettings: the last choice ("" for this computer)
SERVERS_GROUP = "servers/saved"  # QSettings: one group per saved server
SERVER_ENV = "HERALD_SERVER"  # the environment's choice, as `herald --server NAME`
CHECK_TIMEOUT = 10.0  # seconds each request of a check may take


def default_tokens_file() -> Path:
    """The owner-only file of saved servers' tokens, in the user's config dir for Herald
    (e.g. ~/.config/herald/server-tokens.json)."""
    return Path(platformdirs.user_config_dir("herald", appauthor=False)) / TOKENS_FILE


@dataclass(frozen=True)
class Server:
    """A saved remote Herald (its token is kept apart, see the module).

    Attributes:
        name: what the user calls it (the menus, the title, `--server NAME`).
        url: the web service's base URL, e.g. https://herald.example:8443.
        ca_file: a PEM file of the CA that signed a self-signed server's certificate, or
            "" for the system's trust store.
    """

    name: str
    url: str
    ca_file: str = ""

    @property
    def is_loopback(self) -> bool:
        """Whether it runs on this machine (a sign-in link for the browser works)."""
        host = (urlsplit(self.url).hostname or "").lower()
        return host in ("localhost", "::1") or host.startswith("127.")


class UrlProblem(ValueError):
    """A server URL that cannot be used (said in words for the dialog)."""


def normalize_url(text: str) -> str:
    """The base URL the user typed, checked: http or https, a host, no path beyond "/"
    (a trailing "/api" is dropped: it is what `herald serve` prints).

    Raises:
        UrlProblem: not such a URL.
    """
    text = text.strip()
    if "://" not in text:
        raise UrlProblem("Type the server's URL with its scheme: https://host:port "
                         "(or http:// on a trusted network)")  # fmt: skip
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise UrlProblem(f"The URL must start with https:// or http://, not {parts.scheme}://")
    try:
        port = parts.port
    except ValueError:
        raise UrlProblem("The URL's port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise UrlProblem("The URL has no host name")
    path = parts.path.rstrip("/")
    if path == "/api":
        path = ""
    if path or parts.query or parts.fragment:
        raise UrlProblem("Type only the server's address (https://host:port), no path")
    del port  # (checked above)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # never keep credentials typed into a URL
    return urlunsplit((parts.scheme, netloc, "", "", ""))


class ServerBook:
    """The saved servers and the last choice.

    Args:
        settings: the app's QSettings (names, URLs, CA files, the last choice).
        tokens_file: where tokens are kept (default: `default_tokens_file()`).
    """

    def __init__(self, settings: QSettings, tokens_file: Path | None = None) -> None:
        self.settings = settings
        self.tokens_file = tokens_file or default_tokens_file()

    # ------------------------------------------------------------------ servers

    def names(self) -> list[str]:
        self.settings.beginGroup(SERVERS_GROUP)
        try:
            groups = self.settings.childGroups()
        finally:
            self.settings.endGroup()
        servers = [s for g in groups if (s := self._read(g)) is not None]
        return sorted((s.name for s in servers), key=str.casefold)

    def servers(self) -> list[Server]:
        return [s for n in self.names() if (s := self.get(n)) is not None]

    def get(self, name: str) -> Server | None:
        """The saved server called `name` (None: there is none)."""
        return self._read(_group(name))

    def _read(self, group: str) -> Server | None:
        s = self.settings
        name = s.value(f"{SERVERS_GROUP}/{group}/name")
        url = s.value(f"{SERVERS_GROUP}/{group}/url")
        if not isinstance(name, str) or not isinstance(url, str) or _group(name) != group:
            return None
        ca_file = s.value(f"{SERVERS_GROUP}/{group}/ca_file", "")
        return Server(name, url, ca_file if isinstance(ca_file, str) else "")

    def save(self, server: Server, token: str) -> None:
        """Remember `server` and its token (replacing a server of the same name)."""
        tokens = self._tokens()
        tokens[server.name] = token
        self._write_tokens(tokens)  # first: a server whose token was not kept is not saved
        s, group = self.settings, f"{SERVERS_GROUP}/{_group(server.name)}"
        s.setValue(f"{group}/name", server.name)
        s.setValue(f"{group}/url", server.url)
        s.setValue(f"{group}/ca_file", server.ca_file)
        s.sync()

    def remove(self, name: str) -> None:
        """Forget a saved server and its token (a current choice of it falls back to this
        computer)."""
        self.settings.remove(f"{SERVERS_GROUP}/{_group(name)}")
        if self.current() == name:
            self.settings.setValue(CURRENT_KEY, THIS_COMPUTER)
        self.settings.sync()
        tokens = self._tokens()
        if tokens.pop(name, None) is not None:
            self._write_tokens(tokens)

    def token(self, name: str) -> str | None:
        """The saved token of the server `name`."""
        return self._tokens().get(name)

    # ------------------------------------------------------------------- choice

    def current(self) -> str:
        """The last choice: a saved server's name, or THIS_COMPUTER."""
        value = self.settings.value(CURRENT_KEY, THIS_COMPUTER)
        return value if isinstance(value, str) else THIS_COMPUTER

    def set_current(self, name: str) -> None:
        self.settings.setValue(CURRENT_KEY, name)
        self.settings.sync()

    def startup_choice(self, requested: str | None = None) -> str:
        """What to connect to at start: `requested` (`--server NAME`, else $HERALD_SERVER)
        when given, else the last choice. "local" (or "") names this computer.

        Raises:
            KeyError: `requested` names no saved server (the message lists those there are).
        """
        if requested is None:
            requested = os.environ.get(SERVER_ENV) or None
        if requested is None:
            name = self.current()
            return name if name == THIS_COMPUTER or self.get(name) is not None else THIS_COMPUTER
        if requested.strip().lower() in ("", "local", "this computer"):
            return THIS_COMPUTER
        if self.get(requested) is None:
            saved = ", ".join(self.names()) or "none yet (File → Connect to server…)"
            raise KeyError(f"no saved server is called {requested!r}; saved: {saved}")
        return requested

    # ------------------------------------------------------------------- tokens

    def _tokens(self) -> dict[str, str]:
        try:
            raw = self.tokens_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the saved servers' tokens (%s): %s",
                        self.tokens_file, exc.strerror)  # fmt: skip
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("%s is not JSON: its tokens are ignored", self.tokens_file)
            return {}
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, dict):
            return {}
        return {k: v for k, v in tokens.items() if isinstance(k, str) and isinstance(v, str)}

    def _write_tokens(self, tokens: dict[str, str]) -> None:
        """Replace the tokens file at once: created 0600 (never readable by others, not
        even for a moment), in a 0700 folder."""
        folder = self.tokens_file.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=folder)  # mkstemp: mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"tokens": tokens}, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.tokens_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _group(name: str) -> str:
    """A QSettings group key for a server's name (any text: keys may not hold / or \\)."""
    return name.encode("utf-8").hex()


# ---------------------------------------------------------------------- checking


class CheckFailure(Enum):
    """Why a server could not be used."""

    BAD_URL = "bad_url"
    BAD_CA_FILE = "bad_ca_file"
    UNREACHABLE = "unreachable"
    TLS = "tls"
    UNAUTHORIZED = "unauthorized"
    NOT_HERALD = "not_herald"


class ServerCheckError(Exception):
    """A server failed its check; `failure` says why, the message says it in words."""

    def __init__(self, failure: CheckFailure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


@dataclass(frozen=True)
class Endpoints:
    """How to talk to a checked server: its API, its notifier, the TLS context, and what
    it said of itself."""

    api: str
    ws: str
    token: str
    tls: Any  # ssl.SSLContext | None
    principal: str
    version: str
    health: dict[str, Any]


def notifier_url(api: str, health: dict[str, Any]) -> str:
    """The notifier's WebSocket URL for a client of `api`: the one the (authenticated)
    health gives as `ws` (the notifier's public URL, as clients reach it), else the
    notifier's port and path on the API's host, wss for an https API (a notifier that
    says where it bound on its own machine says 127.0.0.1: the host the user typed is the
    one that reaches it)."""
    public = health.get("ws")
    if isinstance(public, str) and public.startswith(("ws://", "wss://")):
        return public
    parts = urlsplit(api)
    notifier = (health.get("services") or {}).get("notifier") or {}
    given = urlsplit(str(notifier.get("url") or ""))
    port = notifier.get("port") or given.port
    if not isinstance(port, int):
        raise ServerCheckError(CheckFailure.NOT_HERALD,
                               "The server does not say where its notifier listens "
                               "(is its notifier running?)")  # fmt: skip
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, f"{host}:{port}", given.path or "/ws", "", ""))


async def check_server(url: str, token: str, ca_file: str = "", *,
                       timeout: float = CHECK_TIMEOUT) -> Endpoints:  # fmt: skip
    """Check that a Herald answers at `url` and takes `token`; where to talk to it.

    Raises:
        ServerCheckError: with the reason (see CheckFailure) in words.
    """
    try:
        api = normalize_url(url)
    except UrlProblem as exc:
        raise ServerCheckError(CheckFailure.BAD_URL, str(exc)) from None
    if not token.strip():
        raise ServerCheckError(CheckFailure.UNAUTHORIZED, "Type the server's token "
                               "(`herald token create NAME` on the server prints one)")  # fmt: skip
    try:
        tls = tls_context(ca_file) if ca_file and api.startswith("https:") else None
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ServerCheckError(CheckFailure.BAD_CA_FILE,
                               f"The CA certificate file cannot be used: {ca_file}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None  # fmt: skip
    client = AsyncHeraldClient(api, "", token.strip(), timeout=timeout, tls=tls)
    try:
        status, body = await client.request("GET", "/api/health")
        _looks_like_herald(api, status, body)
        status, me = await client.request("GET", "/api/me")
        if status == 401:
            raise ServerCheckError(CheckFailure.UNAUTHORIZED,
                                   f"The server refused the token (401): "
                                   f"{_message(me) or 'it is not one of its tokens'}")  # fmt: skip
        if status >= 400 or not isinstance(me, dict) or "principal" not in me:
            raise ServerCheckError(CheckFailure.NOT_HERALD,
                                   f"{api} answered /api/me with {status}: "
                                   f"{_message(me) or 'not a Herald answer'}")  # fmt: skip
        status, health = await client.request("GET", "/api/health")
        _looks_like_herald(api, status, health)
    except TlsFailure as exc:
        raise ServerCheckError(CheckFailure.TLS, _tls_words(api, exc, ca_file)) from None
    except ServiceUnavailable as exc:
        raise ServerCheckError(CheckFailure.UNREACHABLE, f"Cannot reach {api}: "
                               f"{_reason(exc)}") from None  # fmt: skip
    except ApiError as exc:  # (request() returns statuses; kept for safety)
        raise ServerCheckError(CheckFailure.NOT_HERALD, str(exc)) from None
    finally:
        await client.close()
    return Endpoints(api=api, ws=notifier_url(api, health), token=token.strip(), tls=tls,
                     principal=str(me["principal"]), version=str(health.get("version", "")),
                     health=health)  # fmt: skip


def _looks_like_herald(api: str, status: int, body: Any) -> None:
    services = body.get("services") if isinstance(body, dict) else None
    if status >= 500 and isinstance(services, dict):
        return  # a Herald whose services are not all well: health still says so
    if status != 200 or not isinstance(services, dict) or "status" not in body:
        raise ServerCheckError(CheckFailure.NOT_HERALD,
                               f"{api} does not answer as Herald does (GET /api/health "
                               f"gave {status}): is it the web service's address?")  # fmt: skip


def _message(body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("message", "")) if isinstance(err, dict) else ""


def _reason(exc: Exception) -> str:
    """The innermost reason of a failed connection, without the URL repeated."""
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("cannot reach Herald at ") else text


def _tls_words(api: str, exc: Exception, ca_file: str) -> str:
    import ssl

    # Down to OpenSSL's own error (aiohttp wraps it: certificate_error, os_error).
    seen: BaseException | None = exc
    for _ in range(8):
        inner = getattr(seen, "certificate_error", None) or getattr(seen, "os_error", None)
        if seen is None or (inner is None and isinstance(seen, ssl.SSLError)):
            break
        seen = inner or seen.__cause__ or seen.__context__
    if isinstance(seen, ssl.SSLCertVerificationError):
        hint = (" The CA file given did not sign it." if ca_file else
                " A self-signed server needs its CA certificate file.")  # fmt: skip
        return f"TLS failed with {api}: its certificate could not be verified " \
               f"({seen.verify_message or seen.reason}).{hint}"  # fmt: skip
    detail = getattr(seen, "reason", None) or str(seen or exc)
    return f"TLS failed with {api}: the handshake failed ({detail}); does the server " \
           "serve https on that port?"  # fmt: skip
