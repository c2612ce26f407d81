"""Helpers for end-to-end tests: a real `herald serve` in a temp data dir."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedded.client import EventStream, HeraldClient
from embedded.instance import read_instance
from services.core.events import Event


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists": check its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Instance:
    proc: subprocess.Popen[str]
    data_dir: Path
    env: dict[str, str]
    lines: queue.Queue[str]
    pumper: threading.Thread

    clients: list[HeraldClient] = field(default_factory=list)
    started_output: str = ""  # what `herald serve` printed up to "Press Ctrl-C to stop."

    @property
    def client(self) -> HeraldClient:
        """A client of this instance (closed when the instance stops)."""
        with os_environ(self.env):
            client = HeraldClient.for_data_dir(self.data_dir)
        self.clients.append(client)
        return client

    def status(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "run" / "services.json").read_text())["services"]

    def service_pid(self, name: str) -> int:
        return wait_for(lambda: self.status()[name].get("pid")
                        if self.status()[name]["state"] == "ready" else None)  # fmt: skip

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "embedded", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        for client in self.clients:
            client.close()
        code = self.proc.wait(30)
        self.pumper.join(10)
        return code


class os_environ:
    """Temporarily point XDG_RUNTIME_DIR (where runtime files live) at the test's."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __enter__(self) -> None:
        self.saved = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = self.env["XDG_RUNTIME_DIR"]

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = self.saved


def start_serve(data_dir: Path, runtime: Path, *extra: str) -> Instance:
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HERALD_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedded", "serve", *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                lines.put(line)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    seen = []
    deadline = time.monotonic() + 30
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            raise AssertionError("herald serve did not start: " + "".join(seen)) from None
        seen.append(line)
        if "Press Ctrl-C to stop" in line:
            break
    inst = Instance(proc, data_dir, env, lines, pumper, started_output="".join(seen))
    with os_environ(env):
        assert read_instance(data_dir) is not None
    return inst


def collect_until_terminal(stream: EventStream, task_id: str, timeout: float = 30) -> list[Event]:
    """Every event of `task_id` from the stream until its terminal one."""
    return collect_all_until_terminal(stream, [task_id], timeout)[task_id]


def collect_all_until_terminal(
    stream: EventStream, task_ids: list[str], timeout: float = 30
) -> dict[str, list[Event]]:
    """Every event of each task from the stream until each one's terminal event."""
    events: dict[str, list[Event]] = {t: [] for t in task_ids}
    open_ids = set(task_ids)
    deadline = time.monotonic() + timeout
    for msg in stream.messages(timeout=0.2):
        if time.monotonic() > deadline:
            got = {t: [e.type.value for e in evs] for t, evs in events.items()}
            raise AssertionError(f"no terminal event; got {got}")
        if msg is None or msg.event is None or msg.event.task_id not in events:
            continue
        events[msg.event.task_id].append(msg.event)
        if msg.event.terminal:
            open_ids.discard(msg.event.task_id)
            if not open_ids:
                return events
    raise AssertionError("stream ended")
