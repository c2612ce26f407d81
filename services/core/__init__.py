"""Herald's pure core: task states, event types, the wire envelope, delivery rules, the live
protocol's two ends (`session`), errors.

Standard library only, no I/O: every shell (web, worker, notifier, the command line and the
desktop bridge) uses these same definitions, so they are tested without sockets.
"""
