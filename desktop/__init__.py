"""Herald's desktop app: Qt wiring on a qasync loop, the client bridge (HTTP + WebSocket to
Qt signals), the service monitor (the embedded supervisor to Qt signals) and the task model.

Boundaries: the only package that imports PySide6 and qasync. It runs the services through
`embedded.supervisor` (the same supervisor as `herald serve`) and talks to them like any
client, through `embedded.client`. Widgets live in `desktop.ui`.
"""
