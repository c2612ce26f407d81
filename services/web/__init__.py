"""The web service: Herald's HTTP API, an aiohttp shell around the ledger and the queue.

It validates a submit against the task catalog, records it in the ledger (which appends the
"queued" event), enqueues the task id and wakes the worker and the notifier; it answers
questions about a principal's own tasks, their events, the catalog and the services' health.

Boundaries:
- May import aiohttp, `services.core`, `services.store`, `services.auth`, `services.wake`,
  `services.runtime`, `services.config`, `services.layout`, `services.tasks` (the catalog, to
  validate arguments) and `services.queue` (to enqueue task ids); never `services.worker`.
- Never imports websockets, PySide6 or qasync, and never runs a task.
- Identity comes from the bearer token only (`services.auth`), never from a request body.

Modules: `app` (make_app, routes and handlers), `security` (Host/Origin/token guard),
`errors` (every failure as a JSON error body), `openapi` (the API document), `server`
(the process: `python -m services.web --data-dir D --port 0`).
"""
