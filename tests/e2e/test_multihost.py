"""Herald on Redis across hosts: hosts made with network namespaces (tests/e2e/netns.py;
when the test cannot make them, the same processes on loopback, with the reason printed).

    host R: redis-server (AOF, appendfsync always)
    host A: herald serve --services web,worker,notifier          (web 1, worker 1, notifier 1)
    host B: herald serve --services web,worker,notifier --workers 2  (web 2, workers 2-3,
                                                                      notifier 2)

Two principals each have a client on both web nodes, 500 tasks in all. Mid-run one worker
and one notifier are SIGKILLed, and then Redis is restarted. Afterwards: every accepted task
is terminal, every client's events are complete and in order after its resumes, and no task
ran twice except after a lost attempt (counted and printed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from embedded.client import HeraldClient
from services.core.events import EventType
from services.store.redisstore import RedisTaskStore
from tests.e2e import netns
from tests.e2e.harness import wait_for
from tests.redis_server import RedisServer, require_redis_server

TASKS = 500
PRINCIPALS = ("alice", "bob")
WEB_PORT, NOTIFIER_PORT, REDIS_PORT = 18080, 18081, 16379


@dataclass
class Node:
    """One host's `herald serve`."""

    name: str
    address: str
    prefix: list[str]
    data: Path
    runtime: Path
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    web_port: int = WEB_PORT
    notifier_port: int = NOTIFIER_PORT

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "HERALD_DATA_DIR": str(self.data),
                "XDG_RUNTIME_DIR": str(self.runtime), "HERALD_LOG_LEVEL": "INFO"}  # fmt: skip

    def start(self, backend: str, *extra: str) -> None:
        args = [*self.prefix, sys.executable, "-m", "embedded", "serve", "--backend", backend,
                "--listen", f"{self.address}:{self.web_port}",
                "--notifier-listen", f"{self.address}:{self.notifier_port}", *extra]
        if self.address != "127.0.0.1":
            args += ["--allowed-host", self.address, "--insecure-http"]
        self.proc = subprocess.Popen(args, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        else:
            raise AssertionError(f"{self.name} did not start:\n{''.join(self.output)}")
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def instance(self) -> dict[str, str]:
        path = next((self.runtime / "herald").glob("instance-*.json"))
        return json.loads(path.read_text())  # type: ignore[no-any-return]

    def service_pid(self, service: str) -> int:
        status = json.loads((self.data / "run" / "services.json").read_text())["services"]
        return int(status[service]["pid"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            self._drainer.join(10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()


class Reader(threading.Thread):
    """One client's event stream, read to the end: the seqs it was given, in order."""

    def __init__(self, client: HeraldClient) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stream = client.events(since=0)
        self.seqs: list[int] = []
        self.events: list = []
        self.resets = 0
        self.done = threading.Event()

    def run(self) -> None:
        for msg in self.stream.messages(timeout=0.2):
            if self.done.is_set():
                return
            if msg is None:
                continue
            if msg.type == "reset":
                self.resets += 1
            if msg.event is not None:
                self.seqs.append(msg.event.seq)
                self.events.append(msg.event)


def _submit_all(client: HeraldClient, count: int, accepted: list[str], lock: threading.Lock,
                failures: Counter[str]) -> None:  # fmt: skip
    """Submit `count` tasks, each retried with its idempotency key until it is accepted
    (a web node answers 5xx while Redis is away: a retry must not make a second task)."""
    for _ in range(count):
        key = uuid.uuid4().hex
        deadline = time.monotonic() + 60
        while True:
            try:
                task = client.submit("demo.answer", {"seconds": 0.02}, idempotency_key=key)
            except Exception as exc:  # noqa: BLE001 - counted, and tried again
                failures[str(getattr(exc, "status", type(exc).__name__))] += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            with lock:
                accepted.append(task["id"])
            break


@pytest.mark.slow
def test_many_hosts_lose_nothing(tmp_path: Path, tmp_path_factory) -> None:
    require_redis_server()
    ok, why = netns.available()
    if ok and os.environ.get("HERALD_TEST_LOOPBACK_HOSTS"):  # to run it as a non-root user would
        ok, why = False, "HERALD_TEST_LOOPBACK_HOSTS is set"
    if not ok:
        print(f"\nmulti-host test on loopback, not in network namespaces: {why}")
    with _hosts(ok) as (redis_host, a_host, b_host):
        redis = RedisServer(tmp_path / "redis", aof=True, port=REDIS_PORT,
                            host=redis_host[0], prefix=tuple(redis_host[1]))  # fmt: skip
        with redis:
            _run(redis, a_host, b_host, tmp_path_factory, loopback=not ok)


class _hosts:
    """(address, argv prefix) of hosts R, A and B."""

    def __init__(self, namespaces: bool) -> None:
        self.namespaces = namespaces
        self.net: netns.Network | None = None

    def __enter__(self) -> tuple[tuple[str, list[str]], ...]:
        if not self.namespaces:
            return tuple(("127.0.0.1", []) for _ in range(3))
        self.net = netns.Network().__enter__()
        hosts = [self.net.host(role) for role in ("redis", "a", "b")]
        return tuple((h.address, [netns.IP, "netns", "exec", h.name]) for h in hosts)

    def __exit__(self, *exc: object) -> None:
        if self.net is not None:
            self.net.__exit__(*exc)


def _run(redis: RedisServer, a_host, b_host, tmp_path_factory, *, loopback: bool) -> None:
    url = redis.url
    nodes = []
    for name, (address, prefix) in (("A", a_host), ("B", b_host)):
        runtime = tmp_path_factory.mktemp(f"runtime-{name}")
        runtime.chmod(0o700)
        node = Node(name, address, prefix, tmp_path_factory.mktemp(f"data-{name}"), runtime)
        if loopback and name == "B":  # one address for both: other ports
            node.web_port, node.notifier_port = WEB_PORT + 10, NOTIFIER_PORT + 10
        nodes.append(node)
    a, b = nodes
    try:
        a.start(url)
        # Every node holds the cluster owner's token (docs/deploy.md).
        b.data.chmod(0o700)
        shutil.copy2(a.data / "token", b.data / "token")
        b.start(url, "--workers", "2")
        tokens = {}
        for p in PRINCIPALS:
            made = subprocess.run([sys.executable, "-m", "embedded", "token", "--backend", url,
                                   "create", p], env=a.env, capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
            assert made.returncode == 0, made.stderr
            tokens[p] = made.stdout.strip()
        info = {n.name: n.instance() for n in nodes}
        readers = {(p, n.name): Reader(HeraldClient(info[n.name]["api"], info[n.name]["ws"],
                                                    tokens[p]))
                   for p in PRINCIPALS for n in nodes}  # fmt: skip
        for r in readers.values():
            r.stream.open()
            r.start()
        accepted: list[str] = []
        lock = threading.Lock()
        failures: Counter[str] = Counter()
        senders = [HeraldClient(info[n.name]["api"], info[n.name]["ws"], tokens[p])
                   for p in PRINCIPALS for n in nodes]  # fmt: skip
        submitters = [threading.Thread(target=_submit_all, daemon=True, args=(
            c, TASKS // len(senders), accepted, lock, failures)) for c in senders]
        for t in submitters:
            t.start()
        wait_for(lambda: len(accepted) >= TASKS // 4, timeout=120)
        os.kill(a.service_pid("worker"), signal.SIGKILL)
        os.kill(b.service_pid("notifier"), signal.SIGKILL)
        wait_for(lambda: len(accepted) >= TASKS // 2, timeout=120)
        redis.restart()  # appendfsync always: nothing acknowledged is lost
        for t in submitters:
            t.join(180)
        assert len(accepted) == TASKS and len(set(accepted)) == TASKS
        # While Redis was away the webs answered with a clear refusal, never a 500.
        assert "500" not in failures, failures

        store = RedisTaskStore(url)
        try:
            wait_for(lambda: all(store.get_task(t).state.terminal for t in accepted),
                     timeout=180, interval=0.5)  # fmt: skip
            states = Counter(store.get_task(t).state.value for t in accepted)
            assert states == {"succeeded": TASKS}, states
            logs = {p: store.events_after(store.pruned_through(p), principal=p, limit=100_000)
                    for p in PRINCIPALS}  # fmt: skip
        finally:
            store.close()

        # Every client got its principal's whole log, each event once, in order.
        for (p, node), r in readers.items():
            want = [e.seq for e in logs[p]]
            wait_for(lambda r=r, want=want: len(r.seqs) >= len(want), timeout=120)
            assert r.seqs == want, f"{p}'s client on {node}: events missing or out of order"
            assert r.resets == 0
            r.done.set()
            r.join(10)
            r.stream.close()
            r.client.close()

        # No task ran twice except after a lost attempt.
        starts: Counter[str] = Counter()
        lost: set[str] = set()
        for p in PRINCIPALS:
            for e in logs[p]:
                if e.type is EventType.STARTED:
                    starts[e.task_id] += 1
                elif e.type is EventType.RETRYING and e.data.get("reason") != "failed":
                    lost.add(e.task_id)
        for c in senders:
            c.close()
        twice = {t for t, n in starts.items() if n > 1}
        assert twice <= lost, f"run again without a lost attempt: {sorted(twice - lost)}"
        print(f"\n{TASKS} tasks on 2 web nodes, 3 workers, 2 notifiers "
              f"({'loopback' if loopback else 'network namespaces'}): all succeeded; "
              f"{len(twice)} ran again after a lost attempt ({len(lost)} lost); submits "
              f"retried while Redis restarted: {dict(failures) or 0}")  # fmt: skip
    finally:
        for node in nodes:
            node.stop()
