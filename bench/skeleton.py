"""Herald's process topology at its leanest, measured against Herald: `python -m bench skeleton`.

`python -m bench floor` adds up the pieces of a task measured alone in one process; it
leaves out what a pipeline of processes costs per hop (wake-ups, context switches, event
loop iterations, cold caches). This is the honest bound: the topology Herald must have
(each principal's attempts in a process of its own, a durable ledger and log) written with
the least code there is, on the same libraries and settings, driven by Herald's own bench
client, interleaved with a real `herald serve` in one run:

- web (aiohttp): `POST /api/tasks` with a bearer token (checked against sha256 digests),
  one SQLite transaction for the task's row and its `queued` event, the id enqueued with
  Huey on SQLite, one datagram per event-loop turn to wake the dispatcher; 202 and the id.
- dispatcher (a selectors loop) and 4 executors (Herald's default pool): on a wake-up it
  dequeues ids while an executor is idle, claims each (row + `started`, one transaction)
  and sends it as a JSON line to the executor, which forwards it to its principal's
  runner (forked once per principal and kept); the runner answers 42; the dispatcher
  finishes the task (row + `succeeded`, one transaction) and wakes the notifier.
- notifier (websockets): a connection authenticates at the handshake, gets a welcome,
  then its principal's events, read from the log once per wake-up for every connection.

Both databases use Herald's pragmas (WAL, synchronous=NORMAL) and a writer waiting for the
lock in short steps, as Herald's do. Nothing more: no validation beyond the body's JSON,
no retries, limits, sandbox or cancels (Landlock confinement is once per runner, not per
task), as many runners as principals in every executor (Herald keeps `runners_each()` in
each: 24 with 4 executors), events numbered in one sequence for all principals (clients
only need them to grow), the `queued` event pushed with the next wake-up of the notifier.

    python -m bench skeleton [--rounds N] [--idle SECONDS [--idle-samples N]] [--floor]

Each round (in alternating order): latency back to back, then throughput from 20
principals submitting without waiting for results and with 8 tasks in flight each, with
the CPU of every process per task (schedstat), then half as many back to back timed hop
by hop (the events' own times). The table has the median over the rounds (min-max) of
each side and the ratio Herald / skeleton. With --idle, then the first task of each side
after that long idle (both idle at once; which goes first alternates). Printed, never
asserted.

A service of the skeleton alone: `python -m bench.skeleton web|dispatcher|notifier DIR`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import selectors
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.compare import Tree


EXECUTORS = 4  # Herald's worker pool on any machine: [worker] concurrency = 4
SCHEMA = """
create table if not exists tasks (id text primary key, principal text, task text, args text,
    state text, result text, updated real);
create table if not exists events (seq integer primary key, principal text, task_id text,
    type text, data text, at real);
create index if not exists events_by_principal on events (principal, seq);
"""
_WAITS = (0.0, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005) + (0.001,) * 10_000


# ------------------------------------------------------------------ the skeleton's services


def _retry(run: Any) -> Any:
    """`run()`, again while another process holds the database's write lock (in short
    steps, like Herald's `retry_busy`: SQLite's busy handler sleeps 1 ms at least)."""
    for wait in _WAITS:
        try:
            return run()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        time.sleep(wait)
    return run()


def _ledger(folder: Path) -> sqlite3.Connection:
    db = sqlite3.connect(folder / "ledger.db", timeout=0, isolation_level=None)
    _retry(lambda: db.execute("pragma journal_mode=wal"))
    db.execute("pragma synchronous=normal")
    return db


def _write(db: sqlite3.Connection, *statements: tuple[str, tuple[Any, ...]]) -> Any:
    """One write transaction of `statements`; the first row the last one returned."""
    _retry(lambda: db.execute("begin immediate"))
    for sql, params in statements:
        row = db.execute(sql, params).fetchone()
    db.execute("commit")
    return row


def _queue(folder: Path) -> tuple[Any, Any]:
    """Huey on SQLite as Herald's queue uses it (synchronous=NORMAL, no busy handler):
    the Huey instance and the task whose messages carry an id."""
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    class Storage(SqliteStorage):  # type: ignore[misc]
        def _create_connection(self) -> sqlite3.Connection:
            conn = super()._create_connection()
            conn.execute("pragma synchronous=1")
            return conn

    class Huey(SqliteHuey):  # type: ignore[misc]
        storage_class = Storage

    huey = Huey("skeleton", filename=str(folder / "queue.db"), results=False, utc=True,
                timeout=0)  # fmt: skip
    return huey, huey.task(name="run")(_never_run)


def _never_run(task_id: str) -> None:
    raise RuntimeError("the dispatcher runs tasks, not a Huey consumer")


def _principals(folder: Path) -> dict[str, str]:
    return dict(json.loads((folder / "tokens.json").read_text()))


def _principal(header: str | None, principals: dict[str, str]) -> str | None:
    """Whose `Authorization: Bearer` header this is; None if nobody's."""
    if not header or not header.startswith("Bearer "):
        return None
    return principals.get(hashlib.sha256(header[7:].encode()).hexdigest())


def _waker(path: Path) -> Any:
    """A function that sends one wake-up datagram to the socket at `path`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)

    def wake() -> None:
        try:
            sock.sendto(b"!", str(path))
        except OSError:  # full or not bound yet: its receiver reads everything anyway
            pass

    return wake


def _receiver(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(64)
        except BlockingIOError:
            return


def web(folder: Path) -> None:
    from aiohttp import web as aioweb

    db, (huey, run) = _ledger(folder), _queue(folder)
    principals, wake_dispatcher = _principals(folder), _waker(folder / "dispatcher.sock")
    waking = False

    def wake() -> None:
        nonlocal waking
        waking = False
        wake_dispatcher()

    def error(status: int, code: str, message: str) -> aioweb.Response:
        return aioweb.json_response({"error": {"code": code, "message": message}},
                                    status=status)  # fmt: skip

    async def submit(request: aioweb.Request) -> aioweb.Response:
        nonlocal waking
        principal = _principal(request.headers.get("Authorization"), principals)
        if principal is None:
            return error(401, "unauthorized", "A valid bearer token is required.")
        body = await request.json()
        task_id, now = uuid.uuid4().hex, time.time()
        _write(db, ("insert into tasks values (?, ?, ?, ?, 'queued', null, ?)",
                    (task_id, principal, body["task"], json.dumps(body.get("args", {})), now)),
               ("insert into events (principal, task_id, type, data, at) "
                "values (?, ?, 'queued', '{}', ?)", (principal, task_id, now)))  # fmt: skip
        _retry(lambda: huey.enqueue(run.s(task_id)))
        if not waking:  # one wake-up for every submit of this turn of the loop
            waking = True
            asyncio.get_running_loop().call_soon(wake)
        return aioweb.json_response({"id": task_id, "task": body["task"], "state": "queued"},
                                    status=202)  # fmt: skip

    async def health(request: aioweb.Request) -> aioweb.Response:
        return aioweb.json_response({"status": "ok", "services": {
            name: {"state": "ready"} for name in ("web", "worker", "notifier")}})  # fmt: skip

    async def main() -> None:
        app = aioweb.Application()
        app.router.add_post("/api/tasks", submit)
        app.router.add_get("/api/health", health)
        runner = aioweb.AppRunner(app, access_log=None)
        await runner.setup()
        site = aioweb.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print("ready", runner.addresses[0][1], flush=True)
        await asyncio.Future()

    asyncio.run(main())


def dispatcher(folder: Path) -> None:
    # The executors are forked first, before any database or socket is open here.
    links: list[socket.socket] = []
    for _ in range(EXECUTORS):
        mine, theirs = socket.socketpair()
        if os.fork() == 0:
            for s in [*links, mine]:
                s.close()
            _executor(theirs)
        theirs.close()
        links.append(mine)
    db, (huey, _run) = _ledger(folder), _queue(folder)
    wake_notifier, wakes = _waker(folder / "notifier.sock"), _receiver(folder / "dispatcher.sock")
    sel = selectors.DefaultSelector()
    sel.register(wakes, selectors.EVENT_READ)
    # One attempt at a time per executor, one answer each: a blocking readline never waits.
    replies = {s: s.makefile("rb") for s in links}
    for s in links:
        sel.register(s, selectors.EVENT_READ)
    idle = list(links)
    running: dict[socket.socket, tuple[str, str]] = {}
    queued = True  # the queue may hold ids: read it until it is empty
    print("ready", flush=True)
    while True:
        finished = False
        for key, _ in sel.select():
            if key.fileobj is wakes:
                _drain(wakes)
                queued = True
                continue
            link: Any = key.fileobj
            line = replies[link].readline()
            if not line:
                raise SystemExit("an executor ended")
            task_id, principal = running.pop(link)
            result = json.loads(line)["result"]
            now = time.time()
            _write(db, ("update tasks set state = 'succeeded', result = ?, updated = ? "
                        "where id = ?", (json.dumps(result), now, task_id)),
                   ("insert into events (principal, task_id, type, data, at) "
                    "values (?, ?, 'succeeded', ?, ?)",
                    (principal, task_id, json.dumps({"result": result}), now)))  # fmt: skip
            idle.append(link)
            finished = True
        while idle and queued:
            message = _retry(huey.dequeue)
            if message is None:
                queued = False
                break
            task_id, now = message.args[0], time.time()
            principal, task, args = _write(
                db, ("insert into events (principal, task_id, type, data, at) select "
                     "principal, id, 'started', '{}', ? from tasks where id = ?", (now, task_id)),
                ("update tasks set state = 'running', updated = ? where id = ? "
                 "returning principal, task, args", (now, task_id)))  # fmt: skip
            link = idle.pop()
            running[link] = (task_id, principal)
            link.sendall(json.dumps({"id": task_id, "principal": principal, "task": task,
                                     "args": json.loads(args)}).encode() + b"\n")  # fmt: skip
        if finished:
            wake_notifier()


def _executor(up: socket.socket) -> None:
    """Forward each attempt to its principal's runner (forked at its first attempt here,
    then kept) and relay the runner's answer; exit when the dispatcher goes."""
    runners: dict[str, tuple[socket.socket, Any]] = {}
    for line in up.makefile("rb"):
        principal = json.loads(line)["principal"]
        if principal not in runners:
            mine, theirs = socket.socketpair()
            if os.fork() == 0:
                for s in [up, mine, *(r[0] for r in runners.values())]:
                    s.close()
                _runner(theirs)
            theirs.close()
            runners[principal] = (mine, mine.makefile("rb"))
        link, answers = runners[principal]
        link.sendall(line)
        up.sendall(answers.readline())
    os._exit(0)


def _runner(up: socket.socket) -> None:
    """One principal's attempts, one after the other: demo.answer's work (42)."""
    for line in up.makefile("rb"):
        task_id = json.loads(line)["id"]
        up.sendall(json.dumps({"id": task_id, "result": 42}).encode() + b"\n")
    os._exit(0)


def notifier(folder: Path) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.http11 import Request, Response

    db, principals = _ledger(folder), _principals(folder)
    wakes = _receiver(folder / "notifier.sock")
    conns: dict[str, set[ServerConnection]] = defaultdict(set)
    owner: dict[ServerConnection, str] = {}
    last = db.execute("select coalesce(max(seq), 0) from events").fetchone()[0]

    def frame(seq: int, task_id: str, type_: str, data: str, at: float) -> str:
        return (f'{{"v":1,"type":"event","seq":{seq},"task":"{task_id}","event":"{type_}",'
                f'"ts":{at!r},"attempt":1,"data":{data}}}')  # fmt: skip

    def on_wake() -> None:
        """Every event after `last`, read once, sent to its principal's connections."""
        nonlocal last
        _drain(wakes)
        rows = db.execute("select seq, principal, task_id, type, data, at from events "
                          "where seq > ? order by seq", (last,)).fetchall()  # fmt: skip
        for seq, principal, task_id, type_, data, at in rows:
            if principal in conns:
                broadcast(conns[principal], frame(seq, task_id, type_, data, at))
        if rows:
            last = rows[-1][0]

    def check(conn: ServerConnection, request: Request) -> Response | None:
        principal = _principal(request.headers.get("Authorization"), principals)
        if principal is None:
            return conn.respond(401, "A valid bearer token is required.\n")
        owner[conn] = principal
        return None

    async def handler(ws: ServerConnection) -> None:
        # Up to `conns` without an await: nothing is broadcast in between, so the welcome
        # and the replay come first, and the connection then gets every event after `last`.
        principal = owner.pop(ws)
        since = ws.request.headers.get("Herald-Since") if ws.request else None
        broadcast([ws], json.dumps({"v": 1, "type": "welcome", "principal": principal,
                                    "head": last, "reset": False}))  # fmt: skip
        if since is not None:
            for row in db.execute("select seq, task_id, type, data, at from events where "
                                  "principal = ? and seq > ? and seq <= ? order by seq",
                                  (principal, int(since), last)):  # fmt: skip
                broadcast([ws], frame(*row))
            broadcast([ws], json.dumps({"v": 1, "type": "caught_up", "seq": last}))
        conns[principal].add(ws)
        try:
            async for _ in ws:  # nothing a client says matters here
                pass
        finally:
            conns[principal].discard(ws)
            if not conns[principal]:
                del conns[principal]

    async def main() -> None:
        asyncio.get_running_loop().add_reader(wakes, on_wake)
        async with serve(handler, "127.0.0.1", 0, process_request=check, compression=None,
                         ping_interval=None, ping_timeout=None) as server:  # fmt: skip
            print("ready", server.sockets[0].getsockname()[1], flush=True)
            await asyncio.Future()

    asyncio.run(main())


# ---------------------------------------------------------------------- starting it


@dataclass
class Running:
    """A running skeleton: its folder, processes, URLs and one token per principal."""

    folder: Path
    procs: dict[str, subprocess.Popen[str]]
    api: str
    ws: str
    tokens: list[str]

    def stop(self) -> None:
        """Stop the services (the dispatcher's executors and runners follow it)."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def start(folder: Path, principals: int) -> Running:
    """Start the skeleton's three services on `folder` with `principals` tokens.

    Raises:
        RuntimeError: a service ended before it said it was ready.
    """
    tokens = [secrets.token_urlsafe(32) for _ in range(principals)]
    digests = {hashlib.sha256(t.encode()).hexdigest(): f"p{i}" for i, t in enumerate(tokens)}
    (folder / "tokens.json").write_text(json.dumps(digests))
    db = _ledger(folder)
    db.executescript(SCHEMA)
    db.close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs: dict[str, subprocess.Popen[str]] = {}
    ports: dict[str, str] = {}
    try:
        for name in ("dispatcher", "notifier", "web"):
            procs[name] = proc = subprocess.Popen(
                [sys.executable, "-m", "bench.skeleton", name, str(folder)], env=env,
                stdout=subprocess.PIPE, text=True)  # fmt: skip
            assert proc.stdout is not None
            ready = proc.stdout.readline().split()
            if ready[:1] != ["ready"]:
                raise RuntimeError(f"the skeleton's {name} did not start")
            ports[name] = ready[-1]
    except BaseException:
        Running(folder, procs, "", "", tokens).stop()
        raise
    return Running(folder, procs, f"http://127.0.0.1:{ports['web']}",
                   f"ws://127.0.0.1:{ports['notifier']}/ws", tokens)  # fmt: skip


# ------------------------------------------------------------------------- the bench


async def start_tree(root: Path) -> tuple[Tree, Running]:
    """A skeleton, and a `bench.compare.Tree` that drives it exactly as compare drives a
    Herald (its dispatcher stands where Herald's worker is: its executors and runners are
    below it), warmed up as `Tree.start` warms up a Herald."""
    from bench.compare import CLIENTS, Tree
    from bench.headless import Client

    tree = Tree(root, tmp=Path(tempfile.mkdtemp(prefix="herald-skeleton-")))
    assert tree.tmp is not None
    t0 = time.perf_counter()
    run = start(tree.tmp, CLIENTS + 1)
    tree.pids = {"web": run.procs["web"].pid, "worker": run.procs["dispatcher"].pid,
                 "notifier": run.procs["notifier"].pid}  # fmt: skip
    tree.client = Client(run.api, run.ws, run.tokens[0])
    await tree.client.open()
    await tree.client.round_trip()
    tree.start_seconds = time.perf_counter() - t0
    tree.clients = [Client(run.api, run.ws, t) for t in run.tokens[1:]]
    await asyncio.gather(*(c.open() for c in tree.clients))
    for _ in range(100):
        await tree.client.round_trip()
    await tree.burst(200)
    return tree, run


ROLES = ("web", "dispatcher", "executors", "runners", "notifier")


def role_cpu(pids: dict[str, int]) -> tuple[dict[str, float], set[int]]:
    """CPU seconds so far of each kind of process, and the executors' pids: the web and the
    notifier with any children; the worker (Herald's, or the skeleton's dispatcher) alone,
    its executors (its children) and the runners (the executors' children and theirs). A
    process's reaped children count for the children's kind: so an executor that ended
    (Herald replaces one after 1,000 attempts) takes its runners' CPU with it into the
    executors' count."""
    from embedded.procstat import children, cpu_seconds, tree_cpu_seconds

    out = dict.fromkeys(ROLES, 0.0)
    below = ("dispatcher", "executors", "runners")

    def walk(pid: int, depth: int) -> None:
        kids = children(pid)
        own = cpu_seconds(pid)
        out[below[min(depth, 2)]] += own
        # The children it reaped:
        out[below[min(depth + 1, 2)]] += (tree_cpu_seconds(pid) - own - sum(
            tree_cpu_seconds(k) for k in kids))  # fmt: skip
        for kid in kids:
            walk(kid, depth + 1)

    for name, pid in pids.items():
        if name == "worker":
            walk(pid, 0)
        else:
            out[name] += tree_cpu_seconds(pid)
    return out, set(children(pids["worker"]))


@dataclass
class Figures:
    """What the rounds measured of one side, a list of one value per round each."""

    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    nowait: list[float] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    lost: int = 0
    cold: list[float] = field(default_factory=list)  # ms, the first task after idle
    hops: dict[str, list[float]] = field(default_factory=dict)  # hop: ms per round
    cpu: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # phase, role

    def add_cpu(self, phase: str, before: tuple[dict[str, float], set[int]],
                after: tuple[dict[str, float], set[int]], tasks: int) -> None:  # fmt: skip
        """µs per task of each kind of process between two `role_cpu` readings; executors
        and runners apart only if no executor ended in between (see `role_cpu`)."""
        per = self.cpu.setdefault(phase, {})
        used = {role: (after[0][role] - before[0][role]) / tasks * 1e6 for role in ROLES}
        used["executors + runners"] = used["executors"] + used["runners"]
        used["all"] = sum(used[role] for role in ROLES)
        for role, us in used.items():
            if role not in ("executors", "runners") or before[1] == after[1]:
                per.setdefault(role, []).append(us)


async def measure(tree: Tree, figures: Figures, sequential: int, total: int) -> None:
    """One round of one side."""
    from bench.headless import pct

    assert tree.client is not None
    before = role_cpu(tree.pids)
    lat = [await tree.client.round_trip() for _ in range(sequential)]
    figures.add_cpu("back to back", before, role_cpu(tree.pids), sequential)
    figures.p50.append(pct(lat, 50) * 1000)
    figures.p99.append(pct(lat, 99) * 1000)
    for window, into in ((None, figures.nowait), (8, figures.window)):
        before = role_cpu(tree.pids)
        got = await tree.throughput(total, window)
        figures.add_cpu("no waiting" if window is None else "8 in flight", before,
                        role_cpu(tree.pids), total - int(got["lost"]))  # fmt: skip
        figures.lost += int(got["lost"])
        into.append(got["tasks_per_s"])
    await hops(tree, sequential // 2, figures.hops)


HOPS = ("submit to its queued event", "queued to started", "started to succeeded",
        "succeeded to the client", "in all")  # fmt: skip


async def hops(tree: Tree, n: int, into: dict[str, list[float]]) -> None:
    """Where the time of a task back to back goes (ms, each hop's median over `n` tasks
    appended to `into`): from the client's submit to the `queued` event's time (the
    events' "ts": the clock where they were written), to `started`, to `succeeded`, to
    the result's arrival at the client. On a connection of its own, after the measured
    phases (the tree's own client gets the events too)."""
    from embedded.client import AsyncHeraldClient

    assert tree.client is not None
    base = tree.client.http
    times: dict[str, list[float]] = {hop: [] for hop in HOPS}
    async with AsyncHeraldClient(base.api, base.ws, base.token) as http:
        stream = http.events()
        await stream.open()
        try:
            for _ in range(n):
                t0 = time.time()
                task_id = (await http.submit("demo.answer", {"seconds": 0}))["id"]
                ts: dict[str, float] = {}
                while "succeeded" not in ts:
                    ev = (await stream.recv()).event
                    if ev is not None and ev.task_id == task_id:
                        ts[ev.type.value] = ev.ts
                t1 = time.time()
                marks = [t0, ts["queued"], ts["started"], ts["succeeded"], t1]
                for hop, a, b in zip(HOPS, marks, marks[1:], strict=False):
                    times[hop].append((b - a) * 1000)
                times["in all"].append((t1 - t0) * 1000)
        finally:
            await stream.close()
    for hop, values in times.items():
        into.setdefault(hop, []).append(statistics.median(values))


def _cell(values: list[float], fmt: str) -> str:
    if not values:
        return "n/a"
    return (f"{statistics.median(values):{fmt}} "
            f"({min(values):{fmt}}-{max(values):{fmt}})")  # fmt: skip


def table(skeleton: Figures, herald: Figures) -> list[str]:
    """The printed table: each figure's median (min-max) for both, and the ratio."""
    rows: list[tuple[str, list[float], list[float], str]] = [
        ("latency p50, back to back (ms)", skeleton.p50, herald.p50, ".2f"),
        ("latency p99, back to back (ms)", skeleton.p99, herald.p99, ".2f"),
        ("tasks/s, 20 principals, no waiting", skeleton.nowait, herald.nowait, ".0f"),
        ("tasks/s, 20 principals, 8 in flight", skeleton.window, herald.window, ".0f"),
    ]
    if skeleton.cold or herald.cold:
        rows.append(("first task after idle (ms)", skeleton.cold, herald.cold, ".2f"))
    for phase in skeleton.cpu:
        rows.append((f"CPU per task, {phase} (µs)", skeleton.cpu[phase]["all"],
                     herald.cpu[phase]["all"], ".0f"))  # fmt: skip
        for role in ("web", "dispatcher", "executors + runners", "executors", "runners",
                     "notifier"):  # fmt: skip
            label = f"    of which {role}" if role in ("executors", "runners") else f"  {role}"
            rows.append((label, skeleton.cpu[phase].get(role, []),
                         herald.cpu[phase].get(role, []), ".0f"))  # fmt: skip
    out = [f"  {'':<40} {'skeleton':>20} {'Herald':>20} {'Herald/skeleton':>16}"]
    for label, s, h, fmt in rows:
        ratio = (f"{statistics.median(h) / statistics.median(s):.2f}x"
                 if s and h and statistics.median(s) else "")  # fmt: skip
        out.append(f"  {label:<40} {_cell(s, fmt):>20} {_cell(h, fmt):>20} {ratio:>16}")
    out.append(f"  {'results lost':<40} {skeleton.lost:>20} {herald.lost:>20}")
    out.append("  where a task's time goes back to back (ms, the events' own times):")
    for hop in HOPS:
        s, h = skeleton.hops.get(hop, []), herald.hops.get(hop, [])
        ratio = f"{statistics.median(h) / statistics.median(s):.2f}x" if s and h else ""
        out.append(f"    {hop:<38} {_cell(s, '.2f'):>20} {_cell(h, '.2f'):>20} {ratio:>16}")
    return out


async def run(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parents[1]
    print(f"The skeleton of Herald's topology against Herald ({root}), {os.cpu_count()} "
          f"cores, {args.rounds} interleaved rounds", flush=True)  # fmt: skip
    if args.floor:
        from bench.floor import run as floor

        await floor(argparse.Namespace(n=1000))
        print()
    from bench.compare import Tree

    skeleton: Running | None = None
    sides: list[tuple[Tree, Figures]] = []
    try:
        tree, skeleton = await start_tree(root)
        sides.append((tree, Figures()))
        herald = Tree(root)
        sides.append((herald, Figures()))
        await herald.start()
        for c in herald.shared:  # compare's subscribed clients: not measured here
            await c.close()
        herald.shared = []
        for i in range(args.rounds):
            for tree, figures in sides[:: 1 if i % 2 == 0 else -1]:
                await measure(tree, figures, args.sequential, args.tasks)
        for i in range(args.idle_samples if args.idle > 0 else 0):
            await asyncio.sleep(args.idle)  # both idle at once; the first alternates
            for tree, figures in sides[:: 1 if i % 2 == 0 else -1]:
                assert tree.client is not None
                figures.cold.append(await tree.client.round_trip() * 1000)
    finally:
        for tree, _ in sides:
            for c in [*tree.clients, *([tree.client] if tree.client else [])]:
                await c.close()
            tree.clients, tree.client = [], None
        if skeleton is not None:
            skeleton.stop()
        for tree, _ in sides:
            await tree.stop()
    print(f"\n{args.sequential} back to back, {args.tasks} tasks a burst; median over the "
          "rounds (min-max). The per-process rows: Herald's worker is its dispatcher, its "
          "executors and their runners.")  # fmt: skip
    print("\n".join(table(sides[0][1], sides[1][1])))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench skeleton", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sequential", type=int, default=200, help="tasks back to back a round")
    p.add_argument("--tasks", type=int, default=1000, help="tasks in each burst")
    p.add_argument("--idle", type=float, default=0.0,
                   help="then the first task after this many seconds idle (0: not)")
    p.add_argument("--idle-samples", type=int, default=3, help="idle periods for --idle")
    p.add_argument("--floor", action="store_true",
                   help="first print `python -m bench floor` (1,000 of each piece)")  # fmt: skip
    return asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    services = {"web": web, "dispatcher": dispatcher, "notifier": notifier}
    if len(sys.argv) == 3 and sys.argv[1] in services:
        services[sys.argv[1]](Path(sys.argv[2]))
    else:
        sys.exit(main(sys.argv[1:]))
