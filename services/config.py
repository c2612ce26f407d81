"""The optional config file, `config.toml` in the data dir.

    [tasks]
    modules = ["my_tasks"]      # Python modules whose @task functions join the catalog
    [worker]
    threads = 4                 # tasks run at once
    max_attempts = 3            # attempts before a task whose worker died fails
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from services.layout import DataLayout


@dataclass(frozen=True)
class Config:
    task_modules: tuple[str, ...] = ()
    worker_threads: int = 4
    max_attempts: int = 3


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
    tasks = raw.get("tasks", {})
    worker = raw.get("worker", {})
    modules = tasks.get("modules", [])
    threads = worker.get("threads", 4)
    attempts = worker.get("max_attempts", 3)
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ValueError(f"{layout.config_file}: tasks.modules must be a list of strings")
    if not isinstance(threads, int) or not 1 <= threads <= 256:
        raise ValueError(f"{layout.config_file}: worker.threads must be an integer 1-256")
    if not isinstance(attempts, int) or not 1 <= attempts <= 100:
        raise ValueError(f"{layout.config_file}: worker.max_attempts must be an integer 1-100")
    return Config(tuple(modules), threads, attempts)
