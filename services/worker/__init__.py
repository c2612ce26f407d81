"""The worker: a dispatcher that takes task ids from the queue and runs each attempt in a
pool of executor processes, recording every event in the store.

Boundaries: imports `services.core`, `services.store`, `services.tasks`, `services.queue`
and the standard library; never aiohttp, websockets or Qt. Nothing imports it but
`embedded` (to start the process).

Modules: `dispatcher` (the loop: leases, timers, retries, cancels, kills), `pool` (the
executor processes seen from the dispatcher), `executor` (the child side: runs one attempt
at a time), `protocol` (the frames between them), `server` (the process).
"""
