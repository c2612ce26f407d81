"""Herald's services: the pure core and the web, worker and notifier shells around it.

Boundaries: `services.core` is pure (standard library only); `services.store` is the
durable ledger and event log; each shell (`web`, `worker`, `notifier`) talks to the others
only through the store and wake-ups. No service imports PySide6 or qasync.
"""
