"""The frozen app's entry point: `herald` as PyInstaller runs it (embedded.entry:main).

Not a package module: PyInstaller runs this file as the bundle's main script.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys


def _own_executable(pid: int) -> bool:
    """Whether process `pid` runs the same executable file as we do."""
    try:
        return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(sys.executable)
    except OSError:
        return False


def guard_bootloader() -> None:
    """Die with the parent when the parent is this very bundle (Linux, frozen only).

    In a onefile build Python runs in a child of the bootloader; when the bootloader is
    SIGKILLed it cannot forward anything, so without this the app and its services would
    keep running. The same holds for a service started by the bundle: its parent is the
    app. The app's own services then die with it (their PDEATHSIG and stdin pipe).
    """
    if not (getattr(sys, "frozen", False) and sys.platform.startswith("linux")):
        return
    parent = os.getppid()
    if not _own_executable(parent):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the kernel could watch it
        os._exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    guard_bootloader()
    from embedded.entry import main

    sys.exit(main())
