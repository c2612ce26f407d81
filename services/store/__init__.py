"""The durable task ledger and event log (SQLite backend, the embedded default).

Every event is recorded here, with its sequence number, before anyone is told about it.
"""

from services.store.sqlite import TaskRecord, TaskStore

__all__ = ["TaskRecord", "TaskStore"]
