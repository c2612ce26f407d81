"""Running Herald's services on this machine: specs for each child, the one supervisor
(used by the desktop app and by `herald serve` alike), tokens, the data dir, the runtime
file, and the `herald` command line.

Boundaries: never imports PySide6 or qasync (the desktop app drives the supervisor through
its asyncio API and callbacks); never imports a service shell's internals, only starts them.
"""


def herald_version() -> str:
    """The installed version of Herald ("0+unknown" when run from a bare checkout)."""
    # Imported here: importlib.metadata and its scan of the installed distributions cost
    # `herald serve` 30-40 ms before it starts the services, for a line printed afterwards.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("herald")
    except PackageNotFoundError:
        return "0+unknown"
