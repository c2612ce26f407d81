"""The worker: the Huey transport, the task catalog, and the runner that executes attempts.

Boundaries: imports services.core, services.store and Huey; never aiohttp, websockets or Qt.
`catalog` and `context` are Huey-free so the web service can import them.
"""
