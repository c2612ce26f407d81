"""The optional config file, `config.toml` in the data dir.

    [tasks]
    modules = ["my_tasks"]      # Python modules whose @task functions join the catalog
    [worker]
    concurrency = 4             # attempts run at once, each in its own executor process
                                # ("threads", its old name, is still read)
    max_attempts = 3            # attempts a task may lose with their process before it fails
    max_tasks_per_executor = 1000  # an executor is replaced after this many attempts (0: never)
    max_executor_memory = 1024  # MB; an executor above it is replaced after its attempt (0: never)
    [supervisor]
    restart_max_delay = 30      # seconds: the longest wait before a crashed service is
                                # started again (the wait doubles from 0.2 s up to this)
    [notifier]
    max_connections_per_principal = 64  # WebSockets one principal may hold open at once
    max_outbox_mib = 8          # events queued for a client that does not read them, before
                                # it is closed with 1013 (it resumes from its last seq)
    [retention]                 # finished tasks and their events; the worker prunes them
    max_age_days = 30           # finished longer ago than this (0: no age limit)
    max_tasks = 10000           # beyond this many finished tasks, the oldest (0: no limit)
    [browser]                   # sessions of `herald open`'s page
    session_idle_hours = 12     # a session unused this long ends
    session_max_days = 7        # ... and every session ends this long after sign-in
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

from services.layout import DataLayout


@dataclass(frozen=True)
class Config:
    task_modules: tuple[str, ...] = ()
    worker_threads: int = 4  # the worker's concurrency: executor processes
    max_attempts: int = 3
    max_tasks_per_executor: int = 1000
    max_executor_memory: int = 1024
    restart_max_delay: float = 30.0
    retention_days: float = 30.0  # 0: finished tasks are never pruned by age
    retention_tasks: int = 10_000  # 0: ... nor by count
    notifier_max_connections: int = 64  # per principal
    notifier_max_outbox: int = 8 * 1024 * 1024  # bytes
    session_idle: float = 12 * 3600.0  # seconds a browser session may go unused
    session_max_age: float = 7 * 86400.0  # seconds a browser session lasts at most

    @property
    def retention_seconds(self) -> float | None:
        """The age limit of finished tasks in seconds (None: none)."""
        return self.retention_days * 86400.0 if self.retention_days > 0 else None

    @property
    def retention_keep(self) -> int | None:
        """How many finished tasks are kept (None: no limit)."""
        return self.retention_tasks if self.retention_tasks > 0 else None


def _int(section: dict[str, Any], key: str, default: int, low: int, high: int,
         where: str, table: str = "worker") -> int:  # fmt: skip
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where}: {table}.{key} must be an integer {low}-{high}")
    return value


def _number(section: dict[str, Any], key: str, default: float, low: float, high: float,
            where: str, table: str) -> float:  # fmt: skip
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{where}: {table}.{key} must be a number {low:g}-{high:g}")
    return float(value)


def load_config(layout: DataLayout) -> Config:
    """The config from the data dir, defaults for what it does not say.

    Raises:
        ValueError: the file exists but is not valid TOML or has values of the wrong type.
    """
    try:
        raw = tomllib.loads(layout.config_file.read_text())
    except FileNotFoundError:
        return Config()
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{layout.config_file}: {exc}") from None
    where = str(layout.config_file)
    tasks = raw.get("tasks", {})
    worker = raw.get("worker", {})
    retention = raw.get("retention", {})
    if not isinstance(tasks, dict) or not isinstance(worker, dict) \
            or not isinstance(retention, dict):  # fmt: skip
        raise ValueError(f"{where}: [tasks], [worker] and [retention] must be tables")
    modules = tasks.get("modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ValueError(f"{where}: tasks.modules must be a list of strings")
    supervisor = raw.get("supervisor", {})
    if not isinstance(supervisor, dict):
        raise ValueError(f"{where}: [supervisor] must be a table")
    notifier = raw.get("notifier", {})
    if not isinstance(notifier, dict):
        raise ValueError(f"{where}: [notifier] must be a table")
    browser = raw.get("browser", {})
    if not isinstance(browser, dict):
        raise ValueError(f"{where}: [browser] must be a table")
    delay = supervisor.get("restart_max_delay", 30.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0.2 <= delay <= 3600:
        raise ValueError(f"{where}: supervisor.restart_max_delay must be a number of seconds "
                         "from 0.2 to 3600")  # fmt: skip
    key = "concurrency" if "concurrency" in worker else "threads"
    return Config(
        task_modules=tuple(modules),
        worker_threads=_int(worker, key, 4, 1, 256, where),
        max_attempts=_int(worker, "max_attempts", 3, 1, 100, where),
        max_tasks_per_executor=_int(worker, "max_tasks_per_executor", 1000, 0, 10**9, where),
        max_executor_memory=_int(worker, "max_executor_memory", 1024, 0, 10**7, where),
        restart_max_delay=float(delay),
        retention_days=_number(retention, "max_age_days", 30.0, 0, 10**6, where, "retention"),
        retention_tasks=_int(retention, "max_tasks", 10_000, 0, 10**9, where, "retention"),
        notifier_max_connections=_int(notifier, "max_connections_per_principal", 64, 1,
                                      100_000, where, "notifier"),  # fmt: skip
        notifier_max_outbox=_int(notifier, "max_outbox_mib", 8, 1, 4096, where,
                                 "notifier") * 1024 * 1024,  # fmt: skip
        session_idle=_number(browser, "session_idle_hours", 12.0, 0.01, 24 * 366, where,
                             "browser") * 3600,  # fmt: skip
        session_max_age=_number(browser, "session_max_days", 7.0, 0.001, 3660, where,
                                "browser") * 86400,  # fmt: skip
    )
