"""May this principal's task touch these paths? The checks made when a task is submitted.

Every path argument is resolved (symbolic links followed) and then:
1. refused for everyone, the owner included (422, a field error), when it lies in one of
   Herald's own folders (`protected_dirs`: the data dir with its config file, the runtime
   dir), or, for a folder that another principal's task would walk, when it contains one;
2. refused with 403 `forbidden`, naming the missing capability, when the principal may not
   read it (not under its roots or read roots) or write it (not under its roots).

Which parameters are read and which are written is declared by the catalog (`Param.access`,
`TaskSpec.path_defaults` for a path the task picks itself when it is left out). Checks at
submit can be raced (a link changed later): the kernel confinement of each attempt is the
backstop; these make the common case a clear answer instead of a failed task.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.auth import Capabilities, is_under
from services.core.errors import HeraldError, ValidationFailed
from services.core.params import PathAccess
from services.layout import DataLayout
from services.own_dirs import own_dirs
from services.tasks.catalog import TaskSpec

PROTECTED = "lies in Herald's own files, which no task may touch"
CONTAINS_PROTECTED = "contains Herald's own files, which no task of yours may read"


def protected_dirs(layout: DataLayout, runtime_dir: Path | str | None = None) -> tuple[str, ...]:
    """Herald's own folders, resolved: the data dir (its config file is in it), the runtime
    dir (its runtime files; `runtime_dir` when known) and the config dirs: the same folders
    the worker's sandbox keeps every attempt out of (services.own_dirs)."""
    dirs = [os.path.realpath(p) for p in own_dirs(layout)]
    if runtime_dir is not None:
        dirs.append(os.path.realpath(runtime_dir))
    return tuple(dict.fromkeys(dirs))


def check_paths(spec: TaskSpec, args: dict[str, Any], caps: Capabilities,
                protected: Iterable[str]) -> None:  # fmt: skip
    """Refuse a submit whose path arguments reach Herald's files or beyond the principal's
    folders.

    Raises:
        ValidationFailed: a path lies in (or, for another principal, contains) a
            protected folder (422).
        HeraldError: forbidden (403), naming the capability that is missing.
    """
    protected = tuple(protected)
    bad: dict[str, str] = {}
    denied: dict[str, str] = {}
    needs: list[str] = []
    for name, path, access in spec.path_args(args):
        real = os.path.realpath(os.path.expanduser(path))
        if any(is_under(real, d) for d in protected):
            bad[name] = PROTECTED
            continue
        if not caps.owner and access is PathAccess.READ and os.path.isdir(real) and any(
                is_under(d, real) for d in protected):  # fmt: skip
            bad[name] = CONTAINS_PROTECTED
            continue
        if access is PathAccess.EXECUTE:
            continue  # a program: the system's are fine; the kernel confines what it does
        if access is PathAccess.WRITE and not caps.may_write(real):
            denied[name] = f"needs write:{real} (not under a folder you may write to)"
            needs.append(f"write:{real}")
        elif access is PathAccess.READ and not caps.may_read(real):
            denied[name] = f"needs read:{real} (not under a folder you may read)"
            needs.append(f"read:{real}")
    if bad:
        raise ValidationFailed(bad)
    if denied:
        raise HeraldError("forbidden", f"Principal {caps.principal!r} lacks the capability "
                          + ", ".join(needs) + ".", 403, denied)  # fmt: skip


def check_task(spec: TaskSpec, caps: Capabilities) -> None:
    """Refuse a task the principal may not run.

    Raises:
        HeraldError: forbidden (403), naming the capability task:NAME.
    """
    if not caps.may_run(spec.name):
        raise HeraldError("forbidden", f"Principal {caps.principal!r} lacks the capability "
                          f"task:{spec.name}.", 403)  # fmt: skip
