"""What the pieces Herald is built from cost here, each alone: `python -m bench floor`.

A task's path through Herald is one HTTP request to the web service, three write
transactions in the ledger (create, claim, finish) and one message through Huey's SQLite
queue, two round trips between the dispatcher and the attempt's process (the run frame and
its done frame, with the executor between), and three events (queued, started, succeeded)
pushed over a WebSocket. This measures the CPU of each piece with nothing of Herald's around
it (a bare aiohttp handler, a bare websockets server, bare SQLite transactions of the same
shape, bare Huey storage calls, a bare socket pair) and adds them up: the floor of the CPU
per task of any design built from these pieces on this machine, whatever Herald does in
between. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = {"task": "demo.answer", "args": {"seconds": 0}}
EVENT = {"type": "event", "seq": 1, "task_id": "0" * 32, "event": "succeeded",
         "data": {"result": {"answer": 42}}, "at": 1.0e9}  # fmt: skip

SERVE_HTTP = """
import sys
from aiohttp import web
async def submit(request):
    body = await request.json()
    return web.json_response({"id": "0" * 32, "state": "queued", "task": body["task"]},
                             status=202)
app = web.Application()
app.router.add_post("/api/tasks", submit)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]),
            print=lambda *a: print("ready", flush=True))
"""

SERVE_WS = """
import asyncio, json, sys
from websockets.asyncio.server import serve
FRAME = sys.argv[2]
async def handler(ws):
    async for message in ws:
        for _ in range(int(message)):
            await ws.send(FRAME)
async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1])):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
"""


def _cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") * 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(code: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None
    while "ready" not in (line := proc.stdout.readline()):
        if not line:
            raise RuntimeError("a bench server did not start")
    return proc


async def http_ms(n: int) -> float:
    """Server CPU per POST of a small JSON body, answered with a small JSON body (keep-alive)."""
    import aiohttp

    port = _free_port()
    proc = _server(SERVE_HTTP, str(port))
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/api/tasks"
            for _ in range(200):  # warm up
                async with session.post(url, json=BODY) as r:
                    await r.read()
            before = _cpu_ms(proc.pid)
            for _ in range(n):
                async with session.post(url, json=BODY) as r:
                    await r.read()
            return (_cpu_ms(proc.pid) - before) / n
    finally:
        proc.terminate()
        proc.wait()


async def ws_ms(n: int) -> float:
    """Server CPU per text frame of one event sent to one connection."""
    from websockets.asyncio.client import connect

    port = _free_port()
    proc = _server(SERVE_WS, str(port), json.dumps(EVENT))
    try:
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send("200")
            for _ in range(200):
                await ws.recv()
            before = _cpu_ms(proc.pid)
            for _ in range(n // 100):  # 100 at a time, as a burst's events come
                await ws.send("100")
                for _ in range(100):
                    await ws.recv()
            return (_cpu_ms(proc.pid) - before) / (n // 100 * 100)
    finally:
        proc.terminate()
        proc.wait()


def _self_ms() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000


def sqlite_ms(folder: Path, n: int) -> float:
    """CPU per write transaction of a ledger's shape: update (or insert) a task's row and
    append one event, WAL, synchronous=NORMAL, one transaction each."""
    db = sqlite3.connect(folder / "ledger.db", isolation_level=None)
    db.execute("pragma journal_mode=wal")
    db.execute("pragma synchronous=1")
    db.execute("create table tasks (id text primary key, principal text, state text, "
               "args text, result text, updated real)")  # fmt: skip
    db.execute("create table events (seq integer primary key, principal text, task_id text, "
               "type text, data text, at real)")  # fmt: skip
    db.execute("create index events_by_principal on events (principal, seq)")
    args, result = json.dumps(BODY["args"]), json.dumps(EVENT["data"])
    before = _self_ms()
    for i in range(n):
        task_id = f"{i // 3:032x}"
        db.execute("begin immediate")
        if i % 3 == 0:
            db.execute("insert into tasks values (?, 'p', 'queued', ?, null, ?)",
                       (task_id, args, time.time()))  # fmt: skip
        else:
            db.execute("update tasks set state = ?, result = ?, updated = ? where id = ?",
                       ("running" if i % 3 == 1 else "succeeded", result, time.time(),
                        task_id))  # fmt: skip
        db.execute("insert into events (principal, task_id, type, data, at) "
                   "values ('p', ?, 'e', ?, ?)", (task_id, result, time.time()))  # fmt: skip
        db.execute("commit")
    took = (_self_ms() - before) / n
    db.close()
    return took


def huey_ms(folder: Path, n: int) -> float:
    """CPU per message through Huey's SQLite storage: one enqueue and one dequeue."""
    from huey.storage import SqliteStorage

    storage = SqliteStorage("floor", filename=str(folder / "queue.db"))
    before = _self_ms()
    for i in range(n):
        storage.enqueue(f"{i:032x}".encode())
        storage.dequeue()
    took = (_self_ms() - before) / n
    storage.close()
    return took


def hop_ms(n: int) -> float:
    """CPU (both processes) per round trip of a small frame between two processes."""
    a, b = socket.socketpair()
    frame = json.dumps({"t": "run", "id": "0" * 32, "attempt": 1}).encode() + b"\n"
    pid = os.fork()
    if pid == 0:
        a.close()
        try:
            while data := b.recv(4096):
                b.sendall(data)
        finally:
            os._exit(0)
    b.close()
    before, child_before = _self_ms(), _cpu_ms(pid)
    for _ in range(n):
        a.sendall(frame)
        a.recv(4096)
    took = (_self_ms() - before + _cpu_ms(pid) - child_before) / n
    a.close()
    os.waitpid(pid, 0)
    return took


async def run(args: argparse.Namespace) -> int:
    n = args.n
    print(f"The floor of a task's CPU here ({os.cpu_count()} cores), each piece alone, "
          f"{n} times", flush=True)
    with tempfile.TemporaryDirectory(prefix="herald-floor-") as tmp:
        parts = [
            ("HTTP request (aiohttp, server side)", 1, await http_ms(n)),
            ("event frame to one connection (websockets)", 3, await ws_ms(n)),
            ("ledger write transaction (SQLite, WAL)", 3, sqlite_ms(Path(tmp), n)),
            ("queue message, enqueue + dequeue (Huey)", 1, huey_ms(Path(tmp), n)),
            ("process round trip (socket pair)", 2, hop_ms(n)),
        ]
    total = 0.0
    for label, times, each in parts:
        total += times * each
        print(f"  {label:<46} {each * 1000:7.0f} µs  x{times}  {times * each:6.3f} ms")
    print(f"  {'floor of the CPU per task':<46} {'':>7}        {total:9.3f} ms"
          f"  (so at most {(os.cpu_count() or 1) / total * 1000:,.0f} tasks/s on "
          f"{os.cpu_count()} cores)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench floor", description=__doc__)
    p.add_argument("-n", type=int, default=3000, help="repetitions of each piece")
    return asyncio.run(run(p.parse_args(argv)))
