"""Keeping OpenSSL out of a service process that never speaks TLS.

The web and the notifier serve plain HTTP and WebSocket on 127.0.0.1 and make no outbound
connection, yet importing their frameworks loads OpenSSL anyway: asyncio imports `ssl`,
hashlib and hmac import `_hashlib`, and aiohttp builds two TLS client contexts at import,
each loading the system's whole CA bundle. Measured here: 60-90 ms of the web's CPU on its
way to ready, and 7 MB of the web's resident memory and 4.7 MB of the notifier's
(libcrypto's and libssl's pages, the parsed certificates), for nothing.

Every one of those modules is written to work on a Python built without OpenSSL: they
catch the ImportError and go without TLS (asyncio, aiohttp, websockets) or use the
interpreter's own digests (hashlib, hmac: same results). A `None` in `sys.modules` is how
Python itself spells "this module cannot be imported", so hiding the modules while a
service's own code is imported gives exactly that build's behaviour.

Two strengths, because of what else runs in the process:
- `hide_openssl()` for the whole life of a process that runs none but Herald's code (the
  notifier).
- `import_without_openssl(name)` only while the service's own modules are imported (the
  web): the task modules its catalog imports afterwards can import `ssl` as usual (hashlib,
  imported by then, keeps the built-in digests).

Never for the worker: its executors run tasks, which may well speak TLS. Nor for a web or a
notifier told to serve TLS (`--tls-cert`, a non-loopback deployment): `wants_tls(argv)`.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

OPENSSL_MODULES = ("ssl", "_ssl", "_hashlib")


def hide_openssl() -> dict[str, ModuleType | None]:
    """Make the OpenSSL modules unimportable in this process from now on; returns what
    `sys.modules` held for them before (to give them back)."""
    before = {name: sys.modules.get(name) for name in OPENSSL_MODULES}
    for name in OPENSSL_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    return before


def restore_openssl(before: dict[str, ModuleType | None]) -> None:
    """Undo `hide_openssl`: what was loaded is back, the rest can be imported again."""
    for name, module in before.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def import_without_openssl(name: str) -> ModuleType:
    """Import the module `name` (and everything it imports) with OpenSSL hidden, then make
    OpenSSL importable again for whatever is imported later."""
    before = hide_openssl()
    try:
        return importlib.import_module(name)
    finally:
        restore_openssl(before)


def wants_tls(argv: list[str]) -> bool:
    """Whether a service's arguments need OpenSSL, which must then not be hidden: it is
    told to serve TLS (`--tls-cert`), or its storage is Redis (`--backend redis://...`:
    redis-py imports `ssl` with its client)."""
    for i, arg in enumerate(argv):
        if arg == "--tls-cert" or arg.startswith("--tls-cert="):
            return True
        value = argv[i + 1] if arg == "--backend" and i + 1 < len(argv) else (
            arg.partition("=")[2] if arg.startswith("--backend=") else "")
        if value.strip().lower().startswith(("redis:", "rediss:")):
            return True
    return False
