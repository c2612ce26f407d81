"""The original design after idle: its services' CPU while idle, then the first task.

Not part of Herald: `python -m bench seed` copies this file into its copy of the seed stack,
where it runs with the seed stack's own venv and imports its `loadgen.py` (the client of the
original's driver), from the `idle` section `bench.seed` adds to that copy's bench.sh.

    python seed_idle.py --reps 3 --idle 30 --settle 5 --svc rabbitmq=PID ...

For each rep: wait `settle` s, measure the services' CPU over `idle` s of doing nothing, then
time one task, submit to result. Prints one JSON object.
"""

import argparse
import asyncio
import json
import sys
import time

import loadgen


def tree_cpu(services):
    total = 0.0
    for root in services.values():
        for pid in loadgen.proc_tree(root):
            s = loadgen.proc_sample(pid)
            if s is not None:
                total += s[2]
    return total


async def one(c, timeout=30):
    t0 = time.perf_counter()
    if await c.post() != 202:
        return None
    try:
        t1, _ = await asyncio.wait_for(c.notified.get(), timeout)
    except TimeoutError:
        return None
    return t1 - t0


async def run(reps, idle, settle, services):
    c = loadgen.Client()
    deadline = time.time() + 120
    while True:  # the stack was just started: wait for its first round trip
        try:
            await c.connect(timeout=2)
            if await one(c) is not None:
                break
        except Exception:
            pass
        await c.close()
        if time.time() > deadline:
            return {"error": "no round trip within 120 s"}
        await asyncio.sleep(0.2)
        c = loadgen.Client()
    for _ in range(20):  # warm, as the latency run is
        await one(c)
    after_idle, idle_cpu = [], []
    for _ in range(reps):
        await asyncio.sleep(settle)
        c0, w0 = tree_cpu(services), time.perf_counter()
        await asyncio.sleep(idle)
        c1, w1 = tree_cpu(services), time.perf_counter()
        idle_cpu.append(round(100 * (c1 - c0) / (w1 - w0), 3))
        t = await one(c)
        after_idle.append(None if t is None else round(t * 1e3, 3))
    await c.close()
    return {"idle_s": idle, "after_idle_ms": after_idle, "idle_cpu_pct_one_core": idle_cpu}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--settle", type=float, default=5)
    ap.add_argument("--svc", action="append", default=[], help="name=PID (repeatable)")
    a = ap.parse_args()
    services = {k: int(v) for k, v in (s.split("=", 1) for s in a.svc)}
    json.dump(asyncio.run(run(a.reps, a.idle, a.settle, services)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
