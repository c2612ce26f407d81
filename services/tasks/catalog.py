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
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from services.core.errors import TaskCancelled, TaskFailure, ValidationFailed
from services.core.params import (
    REQUIRED,
    Param,
    ParamType,
    PathAccess,
    PathKind,
    overwrite_param,
    parent_folder,
    path_problem,
    validate_args,
)
from services.core.resultview import validate_display
from services.core.retry import DEFAULT_CANCEL_GRACE, MAX_TIMEOUT, Backoff

__all__ = ["Backoff", "Catalog", "Param", "ParamType", "PathAccess", "PathKind", "REQUIRED",
           "TaskSpec",
           "task", "default_catalog", "load_catalog"]  # fmt: skip

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
    """A task in the catalog: its name, what it is, its parameters, its function and how
    it is run (see `Catalog.task` for the meaning of each limit).

    The function is called as `func(ctx, **args)` and returns a JSON-serialisable result.
    """

    name: str
    func: Callable[..., Any]
    title: str
    description: str = ""
    params: tuple[Param, ...] = ()
    max_lost: int = 3
    retries: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float | None = None
    max_timeout: float = MAX_TIMEOUT
    cancel_grace: float = DEFAULT_CANCEL_GRACE
    memory_limit: int | None = None
    concurrency: int | None = None
    module: str = field(default="")
    path_defaults: tuple[tuple[str, Callable[[dict[str, Any]], str | None]], ...] = ()
    display: dict[str, Any] | None = None  # how its result reads (services.core.resultview)

    def __post_init__(self) -> None:
        def bad(what: str) -> ValueError:
            return ValueError(f"task {self.name}: {what}")

        if not (isinstance(self.max_lost, int) and 1 <= self.max_lost <= 100):
            raise bad("max_lost must be an integer from 1 to 100")
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 100):
            raise bad("retries must be an integer from 0 to 100")
        if not (isinstance(self.retry_on, tuple)
                and all(isinstance(t, type) and issubclass(t, BaseException)
                        for t in self.retry_on)):  # fmt: skip
            raise bad("retry_on must be a tuple of exception classes")
        if not 0 < self.max_timeout <= MAX_TIMEOUT:
            raise bad(f"max_timeout must be more than 0 and at most {MAX_TIMEOUT:g} s")
        if self.timeout is not None and not 0 < self.timeout <= self.max_timeout:
            raise bad("timeout must be more than 0 and at most max_timeout")
        if not 0 <= self.cancel_grace <= 3600:
            raise bad("cancel_grace must be from 0 to 3600 s")
        if self.memory_limit is not None and not (
                isinstance(self.memory_limit, int) and self.memory_limit >= 16):  # fmt: skip
            raise bad("memory_limit must be a whole number of MB, at least 16")
        if self.concurrency is not None and not (
                isinstance(self.concurrency, int) and self.concurrency >= 1):  # fmt: skip
            raise bad("concurrency must be an integer of at least 1")
        if self.display is not None:
            try:
                object.__setattr__(self, "display", validate_display(self.display))
            except ValueError as exc:
                raise bad(str(exc)) from None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "params": [p.to_json() for p in self.params],
            "timeout": self.timeout,
            "max_timeout": self.max_timeout,
            "retries": self.retries,
            "cancel_grace": self.cancel_grace,
            "memory_limit": self.memory_limit,
            "concurrency": self.concurrency,
            "display": self.display,
        }

    def path_args(self, args: dict[str, Any]) -> list[tuple[str, str, PathAccess]]:
        """Every path validated `args` make the task touch: (parameter, path, access).

        A path parameter left out counts with the path the task then picks itself
        (`path_defaults`), so that it is checked like a given one.
        """
        defaults = dict(self.path_defaults)
        out = []
        for p in self.params:
            access = p.path_access
            if access is None:
                continue
            value = args.get(p.name)
            if value is None and p.name in defaults:
                value = defaults[p.name](args)
            if not isinstance(value, str) or not value:
                continue
            if p.type is not ParamType.PATH and not (os.sep in value or (
                    os.altsep and os.altsep in value)):  # fmt: skip
                continue  # a program's name, looked up in PATH
            out.append((p.name, value, access))
        return out

    def check_timeout(self, value: Any) -> float | None:
        """The time limit of a submit: `value` (seconds) if given, else the task's default.

        Raises:
            ValidationFailed: not a number, not positive, or above the task's maximum.
        """
        if value is None:
            return self.timeout
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationFailed({"timeout": "must be a number of seconds"})
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValidationFailed({"timeout": "must be a positive number of seconds"})
        if seconds > self.max_timeout:
            raise ValidationFailed({"timeout": f"must be at most {self.max_timeout:g} s "
                                               "for this task"})  # fmt: skip
        return seconds

    def should_retry(self, exc: BaseException) -> bool:
        """Whether a failure with `exc` may be retried (if retries remain).

        A TaskFailure is deliberate: retried when it asks (`retry`, `retry_after`) or when
        its own class (not a catch-all such as Exception) is named in `retry_on`.
        """
        if isinstance(exc, TaskCancelled):
            return False
        if isinstance(exc, TaskFailure):
            return exc.retry or any(
                isinstance(exc, t) and t not in (Exception, BaseException) for t in self.retry_on
            )
        return isinstance(exc, self.retry_on)

    def validate(self, args: Any) -> dict[str, Any]:
        """Typed, complete arguments; paths must exist where the parameter says so.

        Raises:
            ValidationFailed: one message per offending field.
        """
        clean = validate_args(self.params, args)
        fields: dict[str, str] = {}
        switch = overwrite_param(self.params)
        overwrite = bool(clean.get(switch.name)) if switch is not None else None
        for p in self.params:
            value = clean.get(p.name)
            if p.type is not ParamType.PATH or not isinstance(value, str):
                continue
            if not p.required and value == p.default:
                continue  # an optional path left out: the task picks its own
            path = os.path.expanduser(value)
            clean[p.name] = path
            problem = path_problem(
                p.path_kind, exists=os.path.lexists(path), is_dir=os.path.isdir(path),
                parent_is_dir=os.path.isdir(parent_folder(path) or "/"),
                overwrite=overwrite)  # fmt: skip
            if problem:
                fields[p.name] = problem
        if fields:
            raise ValidationFailed(fields)
        return clean


class Catalog:
    """The tasks Herald can run, by name."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}
        self.problems: list[str] = []  # plug-ins that could not be loaded, in words

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
        retries: int = 0,
        retry_on: Iterable[type[BaseException]] = (Exception,),
        backoff: Backoff | None = None,
        timeout: float | None = None,
        max_timeout: float = MAX_TIMEOUT,
        cancel_grace: float = DEFAULT_CANCEL_GRACE,
        memory_limit: int | None = None,
        concurrency: int | None = None,
        max_lost: int = 3,
        path_defaults: dict[str, Callable[[dict[str, Any]], str | None]] | None = None,
        display: dict[str, Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: declare `func(ctx, **args)` as the task `name` with its parameters.

        Args:
            name, title, description, params: what the catalog shows (title and
                description default to the function's docstring).
            retries: how many times a failed attempt is tried again (0: never).
            retry_on: which exceptions are retried (see `TaskSpec.should_retry`).
            backoff: the wait before each retry (default: 1 s doubling up to 5 min,
                with jitter); a task may name its own with `TaskFailure(retry_after=...)`.
            timeout: the default time limit of an attempt in seconds (None: none); a submit
                may set its own, up to `max_timeout`.
            cancel_grace: seconds a cancelled attempt has to stop at a checkpoint before
                its process (and everything it started) is killed.
            memory_limit: MB the attempt's process may use; above it the attempt fails
                with `memory_limit`.
            concurrency: at most this many attempts of this task run at once.
            max_lost: attempts lost because their process died before the task fails
                with `worker_lost` (also capped by the config's worker.max_attempts).
            path_defaults: for a path parameter whose default is None, the path the task
                picks itself from the other arguments (checked at submit like a given one).
            display: how the result reads in every client: a one-line summary template
                and typed fields (paths, digests, tables, sizes...); see
                `services.core.resultview`. Without one a result shows as its JSON.
        """

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            doc = (func.__doc__ or "").strip()
            self.add(
                TaskSpec(
                    name=name,
                    func=func,
                    title=title or doc.split("\n", 1)[0] or name,
                    description=description if description is not None else doc,
                    params=tuple(params),
                    max_lost=max_lost,
                    retries=retries,
                    retry_on=tuple(retry_on),
                    backoff=backoff or Backoff(),
                    timeout=None if timeout is None else float(timeout),
                    max_timeout=float(max_timeout),
                    cancel_grace=float(cancel_grace),
                    memory_limit=memory_limit,
                    concurrency=concurrency,
                    module=func.__module__,
                    path_defaults=tuple((path_defaults or {}).items()),
                    display=display,
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
    import is skipped, so one broken plug-in does not take Herald down, but not silently:
    it is logged and kept in `problems` (shown by /api/health and the desktop app).
    """
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    problems: list[str] = []
    for mod in modules:
        try:
            importlib.import_module(mod)
        except Exception as exc:
            log.exception("could not load task module %s", mod)
            problems.append(f"task module {mod!r} failed to import: {_one_line(exc)}")
    for ep in entry_points(group=entry_point_group):
        try:
            ep.load()
        except Exception as exc:
            log.exception("could not load task entry point %s", ep.name)
            problems.append(f"task plug-in {ep.name!r} ({ep.value}) failed to load: "
                            f"{_one_line(exc)}")  # fmt: skip
    default_catalog.problems = problems
    return default_catalog


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
