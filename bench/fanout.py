"""Measure the notifier's fan-out: N WebSocket clients of one principal, E events each.

    python -m bench fanout [--connections 1000] [--events 100] [--rounds 3] [--tree DIR]

Starts a real notifier process (`python -m services.notifier`, from this tree or from
`--tree DIR`, another checkout: the before/after figure) on a temp data dir, opens the
connections from two client processes, then records one task's E events in the real
SQLite log from this process, waking the notifier after each as the worker does. Prints
the time from the first event recorded to the last connection's last event, and the
notifier's CPU seconds over that time (median of the rounds).

The clients are real WebSocket clients over real sockets, but lean ones (a raw asyncio
protocol that does the handshake and counts frames), so that what is measured is the
notifier: a websockets client costs more per message than the server does.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENT_PROCESSES = 2
READ_EVERY = 0.05  # seconds between the clients' rounds of reads
EVENT_PREFIX = b'{"v":1,"type":"event"'
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python names it not


# ---------------------------------------------------------------------- client side


class _Frames:
    """Counts the event frames of a byte stream from the server (unmasked frames)."""

    def __init__(self) -> None:
        self.buf = b""
        self.events = 0
        self.caught_up = False

    def feed(self, data: bytes) -> None:
        buf = self.buf + data
        pos, n = 0, len(buf)
        while n - pos >= 2:
            length, head = buf[pos + 1] & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < head + length:
                break
            start = pos + head
            if buf.startswith(EVENT_PREFIX, start):
                self.events += 1
            elif buf.startswith(b'"caught_up"', start + 14):  # after '{"v":1,"type":'
                self.caught_up = True
            pos = start + length
        self.buf = buf[pos:]


def _connect(port: int, token: str) -> tuple[socket.socket, _Frames]:
    """A connection whose handshake and replay are done (it got caught_up)."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
                  ).encode())  # fmt: skip
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    if not buf.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(buf[:200].decode(errors="replace"))
    frames = _Frames()
    frames.feed(buf[buf.index(b"\r\n\r\n") + 4:])
    while not frames.caught_up:
        frames.feed(sock.recv(65536))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return sock, frames


def client_main(argv: list[str]) -> int:
    """Open the connections, say ready, then read what came every READ_EVERY seconds
    (epoll, no decoding) and report the kernel's arrival time of each connection's last
    event (SO_TIMESTAMPNS, CLOCK_REALTIME): how long the clients take to read adds
    nothing to the figure."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port, token, count, events = int(argv[0]), argv[1], int(argv[2]), int(argv[3])
    conns = [_connect(port, token) for _ in range(count)]
    sel = selectors.DefaultSelector()
    for sock, frames in conns:
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, frames)
    print(json.dumps({"ready": True}), flush=True)
    space = socket.CMSG_SPACE(16)
    lasts: list[float] = []
    deadline = time.monotonic() + 60
    while len(lasts) < count and time.monotonic() < deadline:
        # Reading late costs the figure nothing (the kernel stamped each arrival) and
        # leaves the CPU to the notifier: one read per connection takes many events.
        time.sleep(READ_EVERY)
        for key, _ in sel.select(1.0):
            sock, frames = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            data, ancillary, _, _ = sock.recvmsg(1 << 20, space)
            if not data:
                raise RuntimeError("the notifier closed a connection")
            frames.feed(data)
            if frames.events >= events:
                for level, kind, value in ancillary:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", value[:16])
                        lasts.append(sec + nsec / 1e9)
                sel.unregister(sock)
    if len(lasts) < count:
        raise RuntimeError(f"only {len(lasts)} of {count} connections got every event")
    print(json.dumps({"first": min(lasts), "last": max(lasts)}), flush=True)
    return 0


# ------------------------------------------------------------------------- driver


def _cpu(pid: int) -> float:
    from embedded.procstat import cpu_seconds

    return cpu_seconds(pid)


def one_round(tree: Path, connections: int, events: int) -> tuple[float, float, float]:
    """(delivery seconds, notifier CPU seconds, seconds spent recording) of one round."""
    from services.auth import ensure_install_token
    from services.core.states import TaskState
    from services.layout import DataLayout
    from services.store.sqlite import TaskStore
    from services.wake import WakeSender

    with tempfile.TemporaryDirectory(prefix="herald-fanout-") as tmp:
        root = Path(tmp) / "data"
        root.mkdir(mode=0o700)
        layout = DataLayout(root)
        token = ensure_install_token(layout)
        layout.config_file.write_text(
            f"[notifier]\nmax_connections_per_principal = {connections}\n")
        store = TaskStore(layout.ledger_db)
        env = {**os.environ, "PYTHONPATH": str(tree), "HERALD_LOG_LEVEL": "WARNING"}
        notifier = subprocess.Popen(
            [sys.executable, "-m", "services.notifier", "--data-dir", str(root)],
            cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        clients: list[subprocess.Popen[str]] = []
        try:
            assert notifier.stdout is not None
            line = notifier.stdout.readline()
            if not line.startswith("HERALD_READY "):
                raise RuntimeError(f"the notifier did not start: {line!r}")
            port = json.loads(line.split(" ", 1)[1])["port"]
            share = [connections // CLIENT_PROCESSES + (i < connections % CLIENT_PROCESSES)
                     for i in range(CLIENT_PROCESSES)]  # fmt: skip
            here = Path(__file__).resolve().parent.parent
            for n in share:
                clients.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.fanout", "--client", str(port), token,
                     str(n), str(events)],
                    cwd=here, stdout=subprocess.PIPE, text=True))  # fmt: skip
            for c in clients:
                assert c.stdout is not None
                assert json.loads(c.stdout.readline())["ready"]
            sender = WakeSender(layout.wake_address("notifier"))
            time.sleep(0.5)  # let the connections settle
            cpu0, t0, wall0 = _cpu(notifier.pid), time.monotonic(), time.time()
            rec, ev = store.create_task(principal="local", name="bench", args={})
            assert ev is not None
            sender.wake()
            task_id = ev.task_id
            claimed, _ = store.claim(task_id, "bench", lease_seconds=60)
            assert claimed is not None
            sender.wake()
            for i in range(events - 3):
                store.progress(task_id, claimed.attempt, (i + 1) / events, f"step {i + 1}")
                sender.wake()
            store.finish(task_id, claimed.attempt, TaskState.SUCCEEDED, result={"ok": True})
            sender.wake()
            recorded = time.monotonic() - t0
            cpu = _cpu(notifier.pid)
            while True:  # until the notifier is done: its CPU stops growing
                time.sleep(0.25)
                cpu, before = _cpu(notifier.pid), cpu
                if cpu - before < 0.002:
                    break
            cpu -= cpu0
            last = 0.0
            for c in clients:
                assert c.stdout is not None
                r = json.loads(c.stdout.readline())
                if os.environ.get("FANOUT_DEBUG"):
                    print("client", r["first"] - wall0, r["last"] - wall0, file=sys.stderr)
                last = max(last, r["last"])
            sender.close()
            return last - wall0, cpu, recorded
        finally:
            for c in clients:
                c.kill()
                c.wait()
            notifier.terminate()
            notifier.communicate(timeout=10)
            store.close()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--client":
        return client_main(args[1:])
    p = argparse.ArgumentParser(prog="python -m bench fanout")
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--events", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent,
                   help="run the notifier of this checkout (default: this one)")
    opts = p.parse_args(args)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results = [one_round(opts.tree.resolve(), opts.connections, opts.events)
               for _ in range(opts.rounds)]  # fmt: skip
    delivery = statistics.median(r[0] for r in results)
    cpu = statistics.median(r[1] for r in results)
    recorded = statistics.median(r[2] for r in results)
    messages = opts.connections * opts.events
    print(f"fan-out: {opts.connections} connections x {opts.events} events "
          f"({opts.tree.resolve()}), median of {opts.rounds}")
    print(f"  delivered in      {delivery:.3f} s  (target 0.5 s; the events took "
          f"{recorded:.3f} s to record)")
    print(f"  notifier CPU      {cpu:.3f} s  ({cpu / messages * 1e6:.1f} us per message)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
