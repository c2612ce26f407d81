"""The guard in front of every route: Host, then Origin, then the bearer token or the
browser's session cookie.

- `Host`, `Origin` and `Authorization` may each appear once: two of one are 400 (proxies
  and servers disagree on which one counts, the first or the last).
- Host must name this server by a loopback name (for a loopback bind) or one of its
  `--allowed-host` names, and its own port (DNS rebinding). A
  request target in absolute form (`GET http://evil.example:P/api/tasks`) must name it
  the same way, or it is 403.
- A request with an Origin header must come from Herald's own page (cross-site requests);
  no CORS headers are ever sent, so no other page can read a response either.
- Every route except `GET /api/health` needs `Authorization: Bearer <token>`; a token in
  the query string is never looked at (it would end up in logs and browser history).
  Health takes the token too, when given: with it, it shows everything; without it, or with
  a token that is not valid, only the overall status and each service's state.
- Without an Authorization header, the session cookie of `herald open`'s sign-in
  (services/web/browser.py) authenticates instead; a request with it that changes
  something (POST, PUT, PATCH, DELETE) must come from the page's own origin with the
  session's CSRF token (`X-Herald-CSRF`), else 403 `csrf_failed`. An Authorization header,
  when given, decides alone (a bad token is 401 whatever cookie comes with it).
The principal found for the token is put on the request under `PRINCIPAL`; what it was
found with under `browser.CREDENTIAL` (and a session under `browser.SESSION`).
"""

from __future__ import annotations

from functools import lru_cache

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.auth import (
    Authenticator,
    bearer_token,
    cookie_value,
    hash_token,
    host_allowed,
    origin_allowed,
    session_cookie_name,
)
from services.core.errors import HeraldError
from services.web.browser import (
    CREDENTIAL,
    EXPOSURE,
    LOGIN_PATH,
    SESSION,
    SESSION_COOKIE,
    BrowserAuth,
    csrf_problem,
)
from services.web.errors import Handler, error_response

PRINCIPAL = web.RequestKey("principal", str)

# Routes anyone on this machine may call without a token (method, path).
# `/` answers a browser without a session with how to sign in (services/web/page.py).
PUBLIC_ROUTES = frozenset({("GET", "/api/health"), ("GET", LOGIN_PATH), ("GET", "/")})

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="herald"'}
_SINGLE_HEADERS = ("Host", "Origin", "Authorization")


# The same few Host and Origin values arrive on every request: remember the verdicts
# (bounded, since the headers are the client's to choose).
_host_ok = lru_cache(maxsize=256)(host_allowed)
_origin_ok = lru_cache(maxsize=256)(origin_allowed)


def own_port(request: web.Request) -> int | None:
    """The local port the request arrived on."""
    transport = request.transport
    if transport is None:
        return None
    sockname = transport.get_extra_info("sockname")
    return sockname[1] if sockname else None


def repeated_header(request: web.Request) -> str | None:
    """The first of `Host`, `Origin`, `Authorization` that the request has more than once."""
    headers = request.headers
    for name in _SINGLE_HEADERS:
        if len(headers.getall(name, ())) > 1:
            return name
    return None


def foreign_target(request: web.Request, port: int, names: tuple[str, ...] = (),
                   loopback: bool = True, scheme: str = "http") -> bool:  # fmt: skip
    """Whether the request target is in absolute form and names another server than this
    one (the origin form `/api/...` names none)."""
    target = request.raw_path  # the request line's target, as sent
    if target.startswith("/"):
        return False
    given, sep, rest = target.partition("://")
    if not sep or given.lower() != scheme:
        return True  # "*", "evil.example:80" (authority form) or another scheme
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    return "@" in authority or not _host_ok(authority, port, names, loopback)


def security_middleware(authenticator: Authenticator,
                        browser: BrowserAuth | None = None) -> Middleware:  # fmt: skip
    """The guard as an aiohttp middleware, resolving tokens with `authenticator` (and
    session cookies with `browser`'s sessions; None: no cookie is looked at)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        port = own_port(request)
        repeated = repeated_header(request)
        if repeated is not None:
            return error_response(
                HeraldError("bad_request", f"The {repeated} header is given more than once.",
                            400)  # fmt: skip
            )
        exposure = request.app.get(EXPOSURE)  # None: loopback names, plain HTTP
        names = exposure.names if exposure is not None else ()
        loopback = exposure.loopback if exposure is not None else True
        scheme = exposure.scheme if exposure is not None else "http"
        if port is not None and foreign_target(request, port, names, loopback, scheme):
            return error_response(
                HeraldError("forbidden_host", "The request target names another server.", 403)
            )
        # The raw header: request.host falls back to a DNS lookup of this machine's name.
        if port is None or not _host_ok(request.headers.get("Host"), port, names, loopback):
            return error_response(
                HeraldError("forbidden_host", "The Host header does not name this server.", 403)
            )
        origin = request.headers.get("Origin")
        if origin is not None and not _origin_ok(origin, port, names, scheme, loopback):
            return error_response(
                HeraldError("forbidden_origin", "Requests from this origin are refused.", 403)
            )
        authorization = request.headers.get("Authorization")
        principal = None
        if authorization is not None:
            token = bearer_token(authorization)
            principal = authenticator.principal_for(token)
            if principal is not None:
                request[CREDENTIAL] = hash_token(token or "")
        elif browser is not None and "Cookie" in request.headers:
            cookie = cookie_value(request.headers.getall("Cookie"), session_cookie_name(port))
            session = authenticator.session_for(cookie)
            if session is not None and cookie is not None:
                problem = csrf_problem(request, cookie, port)
                if problem is not None:
                    return error_response(HeraldError("csrf_failed", f"Refused: {problem}.", 403))
                principal = session.principal
                request[SESSION] = browser.use(session)
                request[SESSION_COOKIE] = cookie
                request[CREDENTIAL] = session.credential
        if principal is not None:
            request[PRINCIPAL] = principal
        elif (request.method, request.path) not in PUBLIC_ROUTES:
            return error_response(
                HeraldError("unauthorized", "A valid bearer token is required.", 401),
                _CHALLENGE,
            )
        return await handler(request)

    return guard
