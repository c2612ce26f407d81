"""The guard in front of every route: Host, then Origin, then the bearer token.

- Host must name this server by a loopback name and its own port (DNS rebinding).
- A request with an Origin header must come from Herald's own page (cross-site requests);
  no CORS headers are ever sent, so no other page can read a response either.
- Every route except `GET /api/health` needs `Authorization: Bearer <token>`; a token in
  the query string is never looked at (it would end up in logs and browser history).
The principal found for the token is put on the request under `PRINCIPAL`.
"""

from __future__ import annotations

from functools import lru_cache

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.auth import Authenticator, bearer_token, host_allowed, origin_allowed
from services.core.errors import HeraldError
from services.web.errors import Handler, error_response

PRINCIPAL = web.RequestKey("principal", str)

# Routes anyone on this machine may call without a token (method, path).
PUBLIC_ROUTES = frozenset({("GET", "/api/health")})

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="herald"'}


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


def security_middleware(authenticator: Authenticator) -> Middleware:
    """The guard as an aiohttp middleware, resolving tokens with `authenticator`."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        port = own_port(request)
        # The raw header: request.host falls back to a DNS lookup of this machine's name.
        if port is None or not _host_ok(request.headers.get("Host"), port):
            return error_response(
                HeraldError("forbidden_host", "The Host header does not name this server.", 403)
            )
        origin = request.headers.get("Origin")
        if origin is not None and not _origin_ok(origin, port):
            return error_response(
                HeraldError("forbidden_origin", "Requests from this origin are refused.", 403)
            )
        if (request.method, request.path) not in PUBLIC_ROUTES:
            principal = authenticator.principal_for(
                bearer_token(request.headers.get("Authorization"))
            )
            if principal is None:
                return error_response(
                    HeraldError("unauthorized", "A valid bearer token is required.", 401),
                    _CHALLENGE,
                )
            request[PRINCIPAL] = principal
        return await handler(request)

    return guard
