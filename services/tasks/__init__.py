"""Tasks: how one is declared (the catalog), what it is handed (its context), the built-ins.

Shared by the web service (which validates submits against the catalog and publishes it)
and the worker (whose executor processes run the tasks). Task authors import from here:

    from services.tasks import Param, ParamType, task

Boundaries: imports `services.core` and the standard library only; never a service shell,
Huey, aiohttp, websockets or Qt. `builtin` holds Herald's own tasks.
"""

from services.core.errors import TaskCancelled, TaskFailure
from services.core.params import REQUIRED, Param, ParamType, PathKind
from services.core.retry import Backoff
from services.tasks.catalog import Catalog, TaskSpec, default_catalog, load_catalog, task
from services.tasks.context import TaskContext

__all__ = ["Backoff", "Catalog", "Param", "ParamType", "PathKind", "REQUIRED", "TaskCancelled",
           "TaskContext", "TaskFailure", "TaskSpec", "default_catalog", "load_catalog",
           "task"]  # fmt: skip
