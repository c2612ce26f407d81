"""Submit-time path checks: Herald's own folders for everyone, roots for the others."""

from __future__ import annotations

import os
from typing import Any

import pytest

from services.access import check_paths, check_task, protected_dirs
from services.auth import Capabilities, owner_capabilities
from services.core.errors import HeraldError, ValidationFailed
from services.core.params import PathAccess
from services.layout import DataLayout
from services.tasks.catalog import Catalog, Param, ParamType, PathKind


def spec_of() -> Any:
    catalog = Catalog()

    @catalog.task("t.copy", title="Copy", params=[
        Param("source", ParamType.PATH, path_kind=PathKind.FILE),
        Param("destination", ParamType.PATH, path_kind=PathKind.NEW_FILE, default=None),
        Param("program", ParamType.STRING, access=PathAccess.EXECUTE, default="true"),
    ], path_defaults={"destination": lambda a: a["source"] + ".out"})  # fmt: skip
    def copy(ctx: Any, **kw: Any) -> None:
        return None

    spec = catalog.get("t.copy")
    assert spec is not None
    return spec


@pytest.fixture
def world(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "token").write_text("secret\n")
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "a.csv").write_text("x\n")
    protected = protected_dirs(DataLayout(data), runtime)
    bob = Capabilities("bob", roots=(os.path.realpath(rw),), read_roots=(os.path.realpath(ro),))
    return tmp_path, protected, bob


def test_declared_access_of_the_builtin_tasks():
    from services.tasks.catalog import load_catalog

    catalog = load_catalog()
    access = {(s.name, p.name): p.path_access for s in catalog for p in s.params
              if p.path_access is not None}  # fmt: skip
    assert access == {
        ("files.archive", "source"): PathAccess.READ,
        ("files.archive", "destination"): PathAccess.WRITE,
        ("files.checksum", "path"): PathAccess.READ,
        ("report.csv", "source"): PathAccess.READ,
        ("report.csv", "destination"): PathAccess.WRITE,
        ("process.run", "cwd"): PathAccess.READ,
        ("process.run", "program"): PathAccess.EXECUTE,
    }


def test_herald_dirs_are_refused_to_the_owner_too(world):
    tmp, protected, _ = world
    spec = spec_of()
    for path in (tmp / "data" / "token", tmp / "runtime", tmp / "data" / "new.db",
                 tmp / "data" / ".." / "data" / "token"):  # fmt: skip
        with pytest.raises(ValidationFailed) as info:
            check_paths(spec, {"source": str(path)}, owner_capabilities(), protected)
        assert set(info.value.fields or {}) >= {"source"}
    with pytest.raises(ValidationFailed) as info:
        check_paths(spec, {"source": str(tmp / "ro" / "a.csv"),
                           "destination": str(tmp / "data" / "herald.db")},
                    owner_capabilities(), protected)  # fmt: skip
    assert list(info.value.fields or {}) == ["destination"]
    with pytest.raises(ValidationFailed):
        check_paths(spec, {"source": str(tmp / "ro" / "a.csv"),
                           "program": str(tmp / "data" / "evil")},
                    owner_capabilities(), protected)  # fmt: skip
    check_paths(spec, {"source": str(tmp / "ro" / "a.csv")}, owner_capabilities(), protected)


def test_a_link_into_the_data_dir_is_followed_and_refused(world):
    tmp, protected, bob = world
    (tmp / "rw" / "link").symlink_to(tmp / "data")
    with pytest.raises(ValidationFailed):
        check_paths(spec_of(), {"source": str(tmp / "rw" / "link" / "token"),
                                "destination": str(tmp / "rw" / "o")}, bob, protected)


def test_reads_and_writes_need_their_roots(world):
    tmp, protected, bob = world
    spec = spec_of()
    # Read from the read-only root, write to the read+write one: fine.
    check_paths(spec, {"source": str(tmp / "ro" / "a.csv"),
                       "destination": str(tmp / "rw" / "a.out")}, bob, protected)  # fmt: skip
    # The default destination is next to the source, in a read-only root: forbidden.
    with pytest.raises(HeraldError) as info:
        check_paths(spec, {"source": str(tmp / "ro" / "a.csv")}, bob, protected)
    assert info.value.status == 403 and info.value.code == "forbidden"
    assert "write:" in info.value.message and list(info.value.fields or {}) == ["destination"]
    with pytest.raises(HeraldError) as info:
        check_paths(spec, {"source": str(tmp / "elsewhere.csv"),
                           "destination": str(tmp / "rw" / "x")}, bob, protected)  # fmt: skip
    assert info.value.status == 403 and "read:" in info.value.message


def test_a_folder_holding_herald_dirs_is_refused_to_other_principals(world):
    tmp, protected, _ = world
    wide = Capabilities("wide", roots=(os.path.realpath(tmp),))
    with pytest.raises(ValidationFailed):
        check_paths(spec_of(), {"source": str(tmp), "destination": str(tmp / "x")}, wide,
                    protected)  # fmt: skip


def test_tasks_not_allowed_are_forbidden_by_name():
    spec = spec_of()
    with pytest.raises(HeraldError) as info:
        check_task(spec, Capabilities("bob", allow=frozenset({"other"})))
    assert info.value.status == 403 and "task:t.copy" in info.value.message
    check_task(spec, Capabilities("bob"))
    check_task(spec, owner_capabilities())
