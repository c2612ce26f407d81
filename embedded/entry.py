"""The `herald` command's entry point (the console script, `python -m embedded` and the
bundle's): a Ctrl-C while the command line is still being imported (~0.1 s of modules)
ends it as a Ctrl-C ends it once it runs, with status 130 and no traceback. Nothing has
been done yet at that point, so there is nothing to undo or to say.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

INTERRUPTED = 130  # as embedded.cli.ExitCode.INTERRUPTED (not imported: that is the point)


def _quietly(signum: int, frame: Any) -> None:
    os.write(2, b"\n")
    os._exit(INTERRUPTED)


def main() -> int:
    """Import the command line with Ctrl-C ending the process quietly, then run it (with
    Python's own Ctrl-C handling back, which the command line handles)."""
    try:
        previous = signal.signal(signal.SIGINT, _quietly)
    except ValueError:  # not the main thread: nothing to change
        previous = None
    try:
        from embedded.cli import main as command_line
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return command_line()


if __name__ == "__main__":
    sys.exit(main())
