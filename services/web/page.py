"""`GET /` and `GET /static/{name}`: the browser page and its files (services/web/static).

- `/` is the page for a signed-in browser (its session cookie, from `herald open`), and a
  short page saying to run `herald open` for anyone else. Its Content-Security-Policy is
  strict: scripts, styles, images and fetches only from this origin (no inline script or
  style), WebSockets only to the notifier's port under the two loopback names, no framing
  (`frame-ancestors 'none'`), no plug-ins, forms posting only here.
- `/static/{name}` serves the folder's files (read once, at start: they ship with the
  package and never change while the service runs), with their content type, an ETag
  (`If-None-Match` answers 304) and `Cache-Control: no-cache` (revalidated each time, so an
  upgraded Herald is never mixed with a cached older module). Only a name the folder had
  at start is served: no path is ever joined from the request. They need the session like
  every route but `/` (the page's own modules are no secret, but nothing needs them
  without a session).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from services.core.errors import HeraldError
from services.layout import DataLayout
from services.web.browser import SESSION

STATIC_DIR = Path(__file__).with_name("static")
INDEX = "index.html"

# What each file is; anything else is not served (a stray editor backup, say).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# The page for a browser without a session: no script, no style (the browser's own,
# in its light or dark scheme).
SIGNED_OUT = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Herald: sign in</title>
</head>
<body>
<main>
<h1>Herald</h1>
<p>This browser is not signed in to Herald (or its session ended).</p>
<p>Run <code>herald open</code> on this computer: it opens this page through a one-time
sign-in link. (<code>herald open --print</code> prints the link instead; it works once,
within a minute.) In the desktop app, use <em>Open in browser</em>.</p>
</main>
</body>
</html>
"""


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_static(folder: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every file of the folder that has a known content type, by name."""
    files = {}
    for path in sorted(folder.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None or not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[path.name] = StaticFile(body, content_type, etag)
    return files


def content_security_policy(notifier_port: int | None, notifier_url: str | None = None) -> str:
    """The page's policy: this origin only, and the notifier's WebSocket (when known: on
    loopback by its port, and at its public URL, wss with TLS or on another host)."""
    connect = ["'self'"]
    if notifier_port is not None:
        connect += [f"ws://127.0.0.1:{notifier_port}", f"ws://localhost:{notifier_port}"]
    if notifier_url:
        public = notifier_url.split("/ws", 1)[0]
        if public not in connect:
            connect.append(public)
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src " + " ".join(connect),
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])  # fmt: skip


class Page:
    """The page's routes, serving `files` (by default the static folder's)."""

    def __init__(self, layout: DataLayout, files: dict[str, StaticFile] | None = None) -> None:
        self.layout = layout
        self.files = load_static() if files is None else files
        if INDEX not in self.files:
            raise RuntimeError(f"the page's {INDEX} is missing from {STATIC_DIR}")

    def _notifier_port(self) -> int | None:
        try:
            services = json.loads(self.layout.status_file.read_bytes())["services"]
            return int(services["notifier"]["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _headers(self, cache: str, request: web.Request) -> dict[str, str]:
        from services.web.browser import notifier_url

        return {
            **_COMMON,
            "Cache-Control": cache,
            "Content-Security-Policy": content_security_policy(
                self._notifier_port(), notifier_url(self.layout, request)),
        }

    async def index(self, request: web.Request) -> web.Response:
        """GET /: the page (signed in), or how to sign in."""
        headers = self._headers("no-store", request)
        headers["Vary"] = "Cookie"
        if SESSION not in request:
            return web.Response(body=SIGNED_OUT.encode(), headers={
                **headers, "Content-Type": "text/html; charset=utf-8"})  # fmt: skip
        index = self.files[INDEX]
        return web.Response(body=index.body,
                            headers={**headers, "Content-Type": index.content_type})  # fmt: skip

    async def static(self, request: web.Request) -> web.Response:
        """GET /static/{name}: one of the page's files."""
        found = self.files.get(request.match_info["name"])
        if found is None:
            raise HeraldError("not_found", "No such file.", 404)
        headers = {**self._headers("no-cache", request), "ETag": found.etag}
        if found.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.body,
                            headers={**headers, "Content-Type": found.content_type})  # fmt: skip

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index, allow_head=False),
            web.get("/static/{name}", self.static, allow_head=False),
        ]
