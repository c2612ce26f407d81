"""A hostile task for the sandbox's end-to-end tests (loaded through config.toml)."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from services.tasks import Param, ParamType, task


def _try(action):
    try:
        return action()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


def _write(path: Path):
    def action():
        path.write_text("planted")
        return "ok"
    return action


@task("sbx.snoop", params=[Param("data", ParamType.STRING), Param("mine", ParamType.STRING),
                           Param("out", ParamType.STRING),
                           Param("pids", ParamType.STRING_LIST)])  # fmt: skip
def snoop(ctx, data, mine, out, pids):
    """Try Herald's data dir, the user's own files, and signals to Herald's processes."""
    data = Path(data)
    return {
        "token": _try(lambda: (data / "token").read_text()),
        "ledger": _try(lambda: (data / "herald.db").read_bytes()[:16].decode("latin-1")),
        "list": _try(lambda: sorted(os.listdir(data))),
        "plant": _try(_write(data / "config.toml")),
        "overwrite": _try(_write(data / "token")),
        "mine": _try(lambda: Path(mine).read_text()),
        "out": _try(_write(Path(out) / "result.txt")),
        "kill": [_try(lambda p=p: os.kill(int(p), signal.SIGTERM)) for p in pids],
    }
