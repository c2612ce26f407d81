"""Every failure leaves the web service as a JSON error body, never as a bare 500 page.

The body is always `{"error": {"code", "message", "fields"?}}` (see
`services.core.errors.HeraldError`), with the matching HTTP status. A write that the data
disk refuses (full, or failing) is 507 `disk_full` / `storage_error`, not a 500: it can
succeed later, and health says so meanwhile.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from services.core.errors import HeraldError, StorageFull
from services.core.jsontext import compact
from services.store.failures import DiskWatch, storage_problem

log = logging.getLogger(__name__)

JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}

# Codes for the HTTP errors aiohttp raises itself (routing, body size).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    408: "request_timeout",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "header_too_large",
}


_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"))  # (made once, as COMPACT)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, the one encoding of every response body.

    Text that UTF-8 cannot encode (a lone surrogate, echoed from a client's JSON escape)
    is sent as JSON's own `\\udXXX` escape instead, so that no answer fails to encode.
    """
    text = compact(obj)
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(obj).encode()


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response of `obj`."""
    hdrs = JSON_HEADERS if headers is None else {**JSON_HEADERS, **headers}
    return web.Response(body=dumps(obj), status=status, headers=hdrs)


def error_response(
    error: HeraldError, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """The JSON error body of `error`; `extra` adds top-level members (e.g. the task)."""
    body = error.to_body()
    body.update(extra)
    return json_response(body, error.status, headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_middleware(disk: DiskWatch | None = None) -> Middleware:
    """The middleware that turns HeraldError, aiohttp's HTTP errors, storage failures and
    anything unexpected into JSON bodies; storage failures are told to `disk`."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HeraldError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
            message = exc.reason if exc.status != 413 else "The request body is too large."
            headers = {}
            if exc.status == 405 and "Allow" in exc.headers:
                headers["Allow"] = exc.headers["Allow"]
            return error_response(HeraldError(code, message, exc.status), headers)
        except Exception as exc:
            problem = storage_problem(exc) if disk is None else disk.classify(exc)
            if problem is None:
                log.exception("unexpected error in %s %s", request.method, request.path)
                return error_response(HeraldError("internal", "Internal server error.", 500))
            if disk is None or disk.failed(problem, exc):
                log.warning("%s %s: the data disk refused a write (%s): answering 507 until "
                            "it has room", request.method, request.path, exc)  # fmt: skip
            return error_response(StorageFull(problem.value))

    return errors
