"""Browser sign-in: one-time login tickets, session cookies, and what guards them (CSRF).

How a browser gets in, with no secret in any URL but a ticket that is spent on arrival:

1. A holder of a principal's token (`herald open`, the desktop app's "Open in browser")
   asks `POST /api/login-tickets` (bearer token only) for a ticket: 256 random bits,
   valid `TICKET_SECONDS` and once. Tickets live in this process's memory only (hashed):
   a ticket is spent where it was made, within a minute, and a restart of the web service
   simply voids the ones outstanding (run `herald open` again).
2. The browser opens `GET /login?ticket=T`: the ticket is spent (a second use, or a late
   one, is 403 `invalid_ticket`), a session begins (`services.auth.SessionStore`), and the
   answer is a 303 to `/` with the session cookie: HttpOnly (no script reads it),
   SameSite=Strict (no other site's page or link sends it), Path=/, and a name of the web
   service's port (cookies are not scoped by port). The ticket leaves the address bar and
   the history with the redirect.
3. With the cookie, every `/api/*` route answers as it does to the bearer token. A request
   that changes something (POST, PUT, PATCH, DELETE) made with the cookie must also carry
   an Origin header naming the page's own origin and the session's CSRF token in the
   `X-Herald-CSRF` header, which the page reads from `GET /api/session` (a page of another
   origin cannot read that answer, nor send that header cross-site without a CORS
   preflight, which is never granted): else 403 `csrf_failed` and nothing is done. A
   cross-site form POST carries neither.
4. `POST /api/logout` ends the session (and its live connections: the notifier is woken to
   look again). Sessions also end when unused for `[browser] session_idle_hours` (12) and
   `session_max_days` (7) after sign-in, and when their principal is revoked or given a new
   token (a session is bound to the token its ticket was made with).

The CSRF token is an HMAC of the cookie: it needs no storage, and nothing that is stored
(the cookie's hash) gives it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import html
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.auth import (
    Authenticator,
    Exposure,
    Session,
    SessionStore,
    hash_token,
    session_cookie_name,
)
from services.core.errors import HeraldError
from services.core.taskview import iso
from services.layout import DataLayout
from services.wake import REVOKED_WAKE
from services.web.errors import JSON_HEADERS, dumps, error_response

log = logging.getLogger(__name__)

TICKET_SECONDS = 60.0  # a login ticket's life
MAX_TICKETS = 100  # outstanding at once (each is a minute's): more is 429
CSRF_HEADER = "X-Herald-CSRF"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/login"

# What the request was authenticated with: the bearer token's hash, or the session.
CREDENTIAL = web.RequestKey("credential", str)
SESSION = web.RequestKey("session", Session)
SESSION_COOKIE = web.RequestKey("session_cookie", str)
# How the web service is reached (set by services/web/server.py before it serves; absent:
# loopback names on the port a request arrived on, plain HTTP), and the notifier's public
# URL when it runs on another host (`--notifier-url`).
EXPOSURE = web.AppKey("exposure", Exposure)
NOTIFIER_URL = web.AppKey("notifier_url", str)


def exposure_of(request: web.Request, port: int | None) -> Exposure:
    """How the service that got `request` (on `port`) is reached."""
    exposure = request.app.get(EXPOSURE)
    if exposure is None:
        return Exposure.local(port or 0)
    if not exposure.port and port:  # listening on any free port: the one it got
        return dataclasses.replace(exposure, port=port)
    return exposure


def csrf_token(cookie: str) -> str:
    """The CSRF token of the session whose cookie this is."""
    return hmac.new(cookie.encode(), b"herald-csrf", hashlib.sha256).hexdigest()


def csrf_problem(request: web.Request, cookie: str, port: int) -> str | None:
    """Why a state-changing request made with the session cookie is refused (None: it
    is not): it must come from the page's own origin and carry the session's CSRF token."""
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin is None or origin.lower() not in exposure_of(request, port).browser_origins():
        return "a request made with the session cookie must come from Herald's own page " \
               "(its Origin header)"  # fmt: skip
    given = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"),
                               csrf_token(cookie).encode()):  # fmt: skip
        return f"a request made with the session cookie needs its {CSRF_HEADER} header " \
               "(from GET /api/session)"  # fmt: skip
    return None


@dataclass
class _Ticket:
    principal: str
    token_sha256: str
    expires: float  # monotonic


class BrowserAuth:
    """Login tickets and sessions of one web service, and their routes.

    Args:
        layout: the data dir (its status file says where the notifier listens).
        authenticator: resolves tokens; its session store is where sessions are written.
        notifier_wake: woken with `REVOKED_WAKE` after a sign-out, so that the session's
            live connections close at once.
        idle, max_age: a session's idle and whole lifetimes, in seconds.
    """

    def __init__(self, layout: DataLayout, authenticator: Authenticator, notifier_wake: Any,
                 *, idle: float, max_age: float) -> None:  # fmt: skip
        self.layout = layout
        self.auth = authenticator
        self.sessions: SessionStore = authenticator.sessions
        self.notifier_wake = notifier_wake
        self.idle, self.max_age = idle, max_age
        self._tickets: dict[str, _Ticket] = {}
        self.signed_out: list[Callable[[], None]] = []  # called after each sign-out
        self.clock: Callable[[], float] = time.monotonic  # what tickets expire by

    # ------------------------------------------------------------------ tickets

    def mint(self, principal: str, token_sha256: str) -> str:
        """A new one-time ticket for `principal` (holding the token with this hash).

        Raises:
            HeraldError: 429 when `MAX_TICKETS` are outstanding.
        """
        now = self.clock()
        for key in [k for k, t in self._tickets.items() if t.expires <= now]:
            del self._tickets[key]
        if len(self._tickets) >= MAX_TICKETS:
            raise HeraldError("too_many_tickets", f"{MAX_TICKETS} sign-in links are "
                              "outstanding; use one, or wait a minute.", 429)  # fmt: skip
        ticket = secrets.token_urlsafe(32)
        self._tickets[hash_token(ticket)] = _Ticket(principal, token_sha256,
                                                    now + TICKET_SECONDS)  # fmt: skip
        return ticket

    def spend(self, ticket: str) -> _Ticket | None:
        """The ticket's grant, once: it is gone after this (None: unknown, used, expired,
        or its principal's token changed since)."""
        grant = self._tickets.pop(hash_token(ticket), None)
        if grant is None or grant.expires <= self.clock():
            return None
        self.auth.reload()
        if not self.auth.holds(grant.principal, grant.token_sha256):
            return None
        return grant

    # ------------------------------------------------------------------- routes

    async def create_ticket(self, request: web.Request) -> web.Response:
        """POST /api/login-tickets: a one-time sign-in link for the caller's principal
        (with its bearer token only: a browser session cannot make more of itself)."""
        from services.web.security import PRINCIPAL, own_port

        if SESSION in request:
            raise HeraldError("forbidden", "A sign-in link is made with the principal's "
                              "token, not with a browser session.", 403)  # fmt: skip
        self.purge()
        ticket = self.mint(request[PRINCIPAL], request[CREDENTIAL])
        exposure = exposure_of(request, own_port(request))
        host = exposure.names[0] if exposure.names and not exposure.loopback else "127.0.0.1"
        url = f"{exposure.scheme}://{host}:{exposure.port}{LOGIN_PATH}?ticket={ticket}"
        body = {"ticket": ticket, "url": url, "expires_in": TICKET_SECONDS}
        return web.Response(
            body=dumps(body), status=201, headers={**JSON_HEADERS, "Cache-Control": "no-store"}
        )

    async def login(self, request: web.Request) -> web.StreamResponse:
        """GET /login?ticket=T: spend the ticket, begin a session, 303 to the page."""
        from services.web.security import own_port

        tickets = request.query.getall("ticket", ())
        grant = self.spend(tickets[0]) if len(tickets) == 1 and tickets[0] else None
        if grant is None:
            return _ticket_refused(request)
        cookie, session = self.sessions.create(grant.principal, grant.token_sha256,
                                               idle=self.idle, max_age=self.max_age)  # fmt: skip
        log.info("%s signed in from a browser", grant.principal)
        resp = web.Response(
            status=303,
            headers={
                "Location": "/",
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
            },
        )
        # Secure over TLS: the browser then never sends it over plain HTTP.
        resp.set_cookie(session_cookie_name(own_port(request)), cookie, httponly=True,
                        samesite="Strict", path="/", max_age=int(self.max_age),
                        secure=exposure_of(request, own_port(request)).tls)  # fmt: skip
        return resp

    async def session_info(self, request: web.Request) -> web.Response:
        """GET /api/session: who the browser is signed in as, its CSRF token, when the
        session ends if unused, and where the live channel is."""
        from services.web.security import PRINCIPAL

        session = request.get(SESSION)
        body = {
            "principal": request[PRINCIPAL],
            "csrf": None if session is None else csrf_token(request[SESSION_COOKIE]),
            "expires": None if session is None else iso(session.ends_at),
            "ws": self._notifier_url(request),
        }
        return web.Response(body=dumps(body), headers={**JSON_HEADERS, "Cache-Control": "no-store"})

    async def logout(self, request: web.Request) -> web.Response:
        """POST /api/logout: end the browser's session (its live connections too)."""
        from services.web.security import own_port

        session = request.get(SESSION)
        if session is None:
            raise HeraldError("no_session", "This request was not made with a browser "
                              "session: there is nothing to sign out of.", 403)  # fmt: skip
        self.sessions.delete(session.sha256)
        self.notifier_wake.wake(REVOKED_WAKE)
        for callback in self.signed_out:
            callback()
        log.info("%s signed out of a browser session", session.principal)
        resp = web.Response(status=204, headers={"Cache-Control": "no-store"})
        resp.del_cookie(session_cookie_name(own_port(request)), path="/")
        return resp

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            web.post("/api/login-tickets", self.create_ticket),
            web.get(LOGIN_PATH, self.login, allow_head=False),
            web.get("/api/session", self.session_info, allow_head=False),
            web.post("/api/logout", self.logout),
        ]

    # ------------------------------------------------------------------ helpers

    def use(self, session: Session) -> Session:
        """Note that `session` was used now (its idle clock; a write a minute at most).
        A write the disk refuses is no reason to refuse the request: the clock stays."""
        try:
            return self.sessions.touch(session)
        except sqlite3.Error as exc:
            log.warning("cannot note the use of a session of %s: %s", session.principal, exc)
            return session

    def purge(self) -> int:
        """Forget the sessions that ended (run at each sign-in's ticket)."""
        return self.sessions.purge(self.auth.holds)

    def _notifier_url(self, request: web.Request) -> str | None:
        """The notifier's WebSocket URL as clients reach it: `--notifier-url` when it runs
        on another host, else its port (the supervisor's status file) under the host name
        the page was opened as (the cookie is the host's: 127.0.0.1 and localhost do not
        share it), wss when the notifier serves TLS."""
        return notifier_url(self.layout, request)


def notifier_url(layout: DataLayout, request: web.Request) -> str | None:
    """Where clients of `request`'s web service find the notifier (None: nowhere known)."""
    public = request.app.get(NOTIFIER_URL)
    if public:
        return public
    try:
        services = json.loads(layout.status_file.read_bytes())["services"]
        notifier = services["notifier"]
        port = int(notifier["port"])
        scheme = "wss" if str(notifier.get("url") or "").startswith("wss:") else "ws"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    host = (request.headers.get("Host") or "127.0.0.1").rsplit(":", 1)[0]
    return f"{scheme}://{host}:{port}/ws"


def _ticket_refused(request: web.Request) -> web.Response:
    error = HeraldError("invalid_ticket", "This sign-in link has expired or was already "
                        "used (each works once, within a minute): run `herald open` "
                        "again.", 403)  # fmt: skip
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    if "text/html" in request.headers.get("Accept", ""):
        page = ("<!doctype html><html lang=en><meta charset=utf-8><title>Herald: sign-in "
                f"link refused</title><h1>Sign-in link refused</h1><p>{html.escape(error.message)}"
                "</p></html>")  # fmt: skip
        return web.Response(text=page, status=403, content_type="text/html", headers=headers)
    return error_response(error, headers)
