"""The import boundaries of the house (STYLE.md), checked by walking every module's imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QT = {"PySide6", "qasync"}


def imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def sources(*parts: str) -> list[Path]:
    return sorted(ROOT.joinpath(*parts).rglob("*.py"))


def test_core_is_standard_library_only():
    allowed = set(sys.stdlib_module_names) | {"services"}
    for path in sources("services", "core"):
        for name in imports(path):
            top = name.split(".")[0]
            assert top in allowed, f"{path.relative_to(ROOT)} imports {name}"
            if top == "services":
                assert name.startswith("services.core"), f"{path.relative_to(ROOT)}: {name}"


def test_qt_only_under_desktop():
    for path in sources("services") + sources("embedded") + sources("bench"):
        bad = {n for n in imports(path) if n.split(".")[0] in QT}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_services_do_not_reach_into_each_other():
    """No shell imports another: web and worker share the catalog (`services.tasks`) and
    the queue (`services.queue`), the notifier shares only the store, auth and core with
    them; tasks and the store import no shell and no framework; nothing imports `embedded`."""
    shells = ("services.web", "services.worker", "services.notifier")
    rules = {
        "notifier": (*shells[:2], "services.tasks", "services.queue", "aiohttp", "huey"),
        "worker": (shells[0], shells[2], "aiohttp", "websockets"),
        "web": shells[1:] + ("websockets",),
        "store": (*shells, "services.tasks", "aiohttp", "huey", "websockets"),
        "tasks": (*shells, "services.store", "services.queue", "aiohttp", "huey",
                  "websockets"),  # fmt: skip
    }
    for package, forbidden in rules.items():
        for path in sources("services", package):
            for name in imports(path):
                assert not name.startswith(forbidden), f"{path.relative_to(ROOT)}: {name}"
    for path in sources("services"):
        assert not any(n.startswith("embedded") for n in imports(path)), path


def test_desktop_ui_never_imports_a_service_shell():
    for path in sources("desktop", "ui"):
        for name in imports(path):
            assert not name.startswith(("services.web", "services.worker", "services.notifier",
                                        "embedded.supervisor")), path  # fmt: skip


def test_packaging_is_not_a_python_package():
    assert not (ROOT / "packaging" / "__init__.py").exists()
