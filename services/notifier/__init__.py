"""The notifier: a websockets server that pushes each principal's task events to its clients.

It authenticates a connection at the handshake (token, Host, Origin), replays what the
client missed from the event log, then forwards live events when it is woken up. It only
reads the store. The rules (who sees what, where a resume starts, what each connection is
sent) come from `services.core.delivery` and `services.core.session` (`ServerSession`); the
wire format from `services.core.envelope` (docs/protocol.md describes the protocol).

Boundaries: imports services.core, services.store, services.auth, services.wake,
services.runtime and websockets; never aiohttp, Huey, PySide6 or qasync, and no other
service shell.
"""
