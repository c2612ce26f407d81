"""The task catalog: the `@task` decorator that declares a task and its parameters.

Free of Huey, so the web service imports it to validate arguments and publish the catalog.
Built-in tasks live in `services.tasks.builtin`; users add their own from Python modules
named in the config file or through the `herald.tasks` entry point group:

    from services.tasks.catalog import Param, ParamType, task

    @task("text.shout", title="Shout", params=[Param("text", ParamType.STRING)])
    def shout(ctx, text):
        ctx.progress(1.0, "done")
        return text.upper()
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from services.core.errors import ValidationFailed
from services.core.params import REQUIRED, Param, ParamType, PathKind, validate_args

__all__ = ["Catalog", "Param", "ParamType", "PathKind", "REQUIRED", "TaskSpec", "task",
           "default_catalog", "load_catalog"]  # fmt: skip

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "herald.tasks"
BUILTIN_MODULES = (
    "services.tasks.builtin.demo",
    "services.tasks.builtin.files",
    "services.tasks.builtin.report",
    "services.tasks.builtin.process",
)


@dataclass(frozen=True)
class TaskSpec:
    """A task in the catalog: its name, what it is, its parameters and its function.

    The function is called as `func(ctx, **args)` and returns a JSON-serialisable result.
    """

    name: str
    func: Callable[..., Any]
    title: str
    description: str = ""
    params: tuple[Param, ...] = ()
    max_attempts: int = 3
    module: str = field(default="")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "params": [p.to_json() for p in self.params],
        }

    def validate(self, args: Any) -> dict[str, Any]:
        """Typed, complete arguments; paths must exist where the parameter says so.

        Raises:
            ValidationFailed: one message per offending field.
        """
        clean = validate_args(self.params, args)
        fields: dict[str, str] = {}
        for p in self.params:
            value = clean.get(p.name)
            if p.type is not ParamType.PATH or not isinstance(value, str):
                continue
            if not p.required and value == p.default:
                continue  # an optional path left out: the task picks its own
            path = os.path.expanduser(value)
            clean[p.name] = path
            kind = p.path_kind or PathKind.ANY
            if kind is PathKind.FILE and not os.path.isfile(path):
                fields[p.name] = "no such file"
            elif kind is PathKind.DIRECTORY and not os.path.isdir(path):
                fields[p.name] = "no such folder"
            elif kind is PathKind.ANY and not os.path.exists(path):
                fields[p.name] = "no such file or folder"
            elif kind is PathKind.NEW_FILE:
                parent = os.path.dirname(path.rstrip("/")) or "/"
                if os.path.isdir(path):
                    fields[p.name] = "is a folder; give a file name"
                elif not os.path.isdir(parent):
                    fields[p.name] = "its folder does not exist"
        if fields:
            raise ValidationFailed(fields)
        return clean


class Catalog:
    """The tasks Herald can run, by name."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def add(self, spec: TaskSpec) -> None:
        existing = self._specs.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            log.warning("task %s from %s replaces the one from %s",
                        spec.name, spec.module, existing.module)  # fmt: skip
        self._specs[spec.name] = spec

    def get(self, name: str) -> TaskSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)

    def task(
        self,
        name: str,
        *,
        title: str | None = None,
        description: str | None = None,
        params: Iterable[Param] = (),
        max_attempts: int = 3,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: declare `func(ctx, **args)` as the task `name` with its parameters."""

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            doc = (func.__doc__ or "").strip()
            self.add(
                TaskSpec(
                    name=name,
                    func=func,
                    title=title or doc.split("\n", 1)[0] or name,
                    description=description if description is not None else doc,
                    params=tuple(params),
                    max_attempts=max_attempts,
                    module=func.__module__,
                )
            )
            return func

        return register


default_catalog = Catalog()
task = default_catalog.task


def load_catalog(modules: Iterable[str] = (), *, entry_point_group: str = ENTRY_POINT_GROUP
                 ) -> Catalog:  # fmt: skip
    """Import the built-in tasks, the modules named in the config and the entry points.

    Each module registers its tasks with `@task` when imported. A module that fails to
    import is logged and skipped, so one broken plug-in does not take Herald down.
    """
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception:
            log.exception("could not load task module %s", mod)
    for ep in entry_points(group=entry_point_group):
        try:
            ep.load()
        except Exception:
            log.exception("could not load task entry point %s", ep.name)
    return default_catalog
