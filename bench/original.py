"""Compare Herald with the original design (../shared/seed-stack), measured interleaved.

The original (Flask/gunicorn + Celery/RabbitMQ + Node Socket.IO) is scripted in a seed-stack
folder whose `bench.sh` installs what it needs (rabbitmq-server with apt, a venv, its npm
modules), measures it with its own driver (`loadgen.py`) and prints a JSON summary. This copies
that folder to a temp dir, adds one section to the copy's bench.sh (`idle`: the services' CPU
over 30 s of idle, then the first task, driven by `bench/seed_idle.py` with the original's own
client), and alternates short sections of each side, so that both see the same drift of this
machine's speed (a factor of two over minutes): each round runs the original's `seed` section
(start, 200 tasks back to back, 2,000 tasks from 20 clients), the same on a fresh Herald
(`bench.compare.Tree`), then the idle section of each. It prints each figure for both and the
ratio Herald / original; each figure is the median over the rounds (min-max beside it).

    python -m bench original [--seed-stack PATH] [--rounds N] [--idle S]

Herald's throughput is measured twice: each client submitting without waiting for results (as
the original's driver does), and with at most 8 tasks in flight per client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bench.compare import Tree
from bench.headless import pct

LATENCY_N = 200
TASKS = 2000
WINDOW = 8
MAIN_MARK = "# ------------------------------------------------------------ main"
FANOUT = (1000, 100)  # connections, events each (bench.fanout)
# The desktop's stall (bench.desktop's measure), in a process of its own (Qt, offscreen).
STALL = """
import json, os, sys, tempfile
from pathlib import Path
tmp = Path(tempfile.mkdtemp(prefix="herald-bench-stall-"))
(tmp / "rt").mkdir(mode=0o700)
os.environ["XDG_RUNTIME_DIR"] = str(tmp / "rt")
from desktop.measure import measure_stream
figures = measure_stream(tmp / "data", 200, 6.0)
print(json.dumps({"stall_ms": max(figures["lateness"]) * 1000}))
"""

# The section added to the copy's bench.sh (it reuses the script's own process control).
IDLE_SECTION = r"""
# added by Herald's `python -m bench original`: idle CPU, then the first task after idle
idle_section() {
  local w out
  w="${GUNICORN_WORKERS%% *}"
  ports_free 4369 5672 25672 3000 8000 || exit 1
  log "seed stack gunicorn -w $w: ${IDLE_S:-30} s idle, then one task"
  start_stack "$w"
  out=$(run_fg seed-idle "$PY" seed_idle.py --reps "$REPS" --idle "${IDLE_S:-30}" \
        --svc rabbitmq="$PID_rabbit" --svc epmd="$PID_epmd" --svc notifier="$PID_notifier" \
        --svc gunicorn="$PID_gunicorn" --svc celery="$PID_celery")
  emit idle "gunicorn-w$w" 1 "$out"
  log "  $out"
  stop_all
}

"""


class SeedStackMissing(SystemExit):
    pass


class SeedStack:
    """A temp copy of the seed stack, its bench.sh run section by section; every raw result
    row of every run is kept (each run of bench.sh truncates its own results file)."""

    def __init__(self, source: Path, gunicorn_workers: str) -> None:
        if not (source / "bench.sh").is_file():
            raise SeedStackMissing(
                f"no seed stack at {source} (no bench.sh there): set SEED_STACK to the folder "
                "of the original design's scripts, e.g. make bench-compare "
                "SEED_STACK=/path/to/seed-stack")
        self.tmp = Path(tempfile.mkdtemp(prefix="herald-seed-"))
        self.dir = self.tmp / "seed-stack"
        shutil.copytree(source, self.dir, symlinks=True,
                        ignore=shutil.ignore_patterns("run", "venv", "node_modules", "rmq"))
        script = (self.dir / "bench.sh").read_text()
        if MAIN_MARK not in script:
            raise SystemExit(f"{source}/bench.sh has no '{MAIN_MARK}' line to add a section at")
        (self.dir / "bench.sh").write_text(script.replace(MAIN_MARK, IDLE_SECTION + MAIN_MARK))
        shutil.copy(Path(__file__).with_name("seed_idle.py"), self.dir / "seed_idle.py")
        self.log = self.tmp / "bench.log"
        self.workers = gunicorn_workers
        self.rows: list[dict[str, Any]] = []

    def run(self, sections: str, rep: int, idle: float) -> None:
        """Run the copy's bench.sh for `sections`, once; keep its raw rows as repetition
        `rep`."""
        env = {**os.environ, "SECTIONS": sections, "REPS": "1", "IDLE_S": f"{idle:g}",
               "GUNICORN_WORKERS": self.workers,
               # other helpers share this machine; interleaving, not waiting, handles drift
               "QUIET_WAIT": os.environ.get("QUIET_WAIT", "5")}  # fmt: skip
        with self.log.open("a") as log:
            done = subprocess.run(["bash", str(self.dir / "bench.sh")], env=env, cwd=self.dir,
                                  stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
        results = self.dir / "run" / "results.jsonl"
        rows = [json.loads(x) for x in results.read_text().splitlines() if x.strip()] \
            if results.exists() else []  # fmt: skip
        if done.returncode != 0 or not rows:
            tail = "\n".join(self.log.read_text().splitlines()[-25:])
            raise SystemExit(f"the seed stack's bench.sh ({sections}) failed "
                             f"(exit {done.returncode}):\n{tail}\n(whole log: {self.log})")
        self.rows.extend({**r, "rep": rep} for r in rows)

    def summary(self) -> dict[str, Any]:
        """The seed stack's own summary (its summarize.py) of every row so far, plus "idle":
        the idle section's figures, which summarize.py does not know."""
        combined = self.tmp / "results.jsonl"
        combined.write_text("".join(json.dumps(r) + "\n" for r in self.rows))
        out = subprocess.run([str(self.dir / "venv" / "bin" / "python"), "summarize.py",
                              str(combined)], cwd=self.dir, capture_output=True, text=True,
                             check=True)  # fmt: skip
        summary: dict[str, Any] = json.loads(out.stdout)
        idle: dict[str, list[float]] = {"after_idle_ms": [], "idle_cpu_pct_one_core": []}
        for r in self.rows:
            if r["section"] == "idle" and "error" not in r["data"]:
                for k in idle:
                    idle[k].extend(v for v in r["data"].get(k, []) if v is not None)
        summary["idle"] = idle
        return summary

    def remove(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------ the figures and table

# (key, label, unit, format); the ratio is Herald / original for every figure
FIGURES = [
    ("p50_ms", "latency p50, back to back", "ms", "{:.2f}"),
    ("p99_ms", "latency p99, back to back", "ms", "{:.2f}"),
    ("after_idle_ms", "first task after {idle} s idle", "ms", "{:.2f}"),
    ("tasks_per_s", "throughput, 20 principals, no waiting", "/s", "{:.0f}"),
    ("lost", "  results lost (all rounds)", "", "{:.0f}"),
    ("cpu_ms_per_task", "  CPU per task across services", "ms", "{:.2f}"),
    ("w_tasks_per_s", f"throughput, 20 principals, {WINDOW} in flight each", "/s", "{:.0f}"),
    ("w_lost", "  results lost (all rounds)", "", "{:.0f}"),
    ("w_cpu_ms_per_task", "  CPU per task across services", "ms", "{:.2f}"),
    ("s_tasks_per_s", "throughput, 1 principal, 20 subscribed conns", "/s", "{:.0f}"),
    ("s_lost", "  results lost (all rounds)", "", "{:.0f}"),
    ("rss_mb", "RSS of the services (peak, with children)", "MB", "{:.0f}"),
    ("pss_mb", "PSS of the services (peak, with children)", "MB", "{:.0f}"),
    ("services_rss_mb", "  Herald's three services alone (RSS)", "MB", "{:.0f}"),
    ("start_s", "start to first round trip", "s", "{:.2f}"),
    ("idle_cpu_pct", "idle CPU of the services", "% core", "{:.3f}"),
    ("fanout_s", f"fan-out: {FANOUT[0]:,} conns x {FANOUT[1]} events", "s", "{:.2f}"),
    ("stall_ms", "desktop: longest stall, 200 tasks streaming", "ms", "{:.1f}"),
]
SUMS = {"lost", "w_lost", "s_lost"}
# the original has one throughput run: both of Herald's are compared with it
SAME_AS = {"w_tasks_per_s": "tasks_per_s", "w_lost": "lost", "w_cpu_ms_per_task": "cpu_ms_per_task",
           "s_tasks_per_s": "tasks_per_s", "s_lost": "lost"}


def _median(agg: dict[str, Any] | None) -> float | None:
    return None if not agg else agg.get("median")


def original_figures(summary: dict[str, Any], variant: str | None = None) -> dict[str, Any]:
    """The original's figures from its summary (summarize.py's format, plus "idle"): the
    median over repetitions of each, and the spread (min, max) where there is one."""
    stacks = summary.get("seed_stack", {})
    if variant is None:
        variant = next(iter(sorted(stacks)), "")
    s = stacks.get(variant, {})
    lat = s.get("latency_seq_ms", {})
    tp = s.get("throughput", {})
    out: dict[str, Any] = {}

    def put(key: str, agg: dict[str, Any] | None) -> None:
        if agg and agg.get("median") is not None:
            out[key] = (agg["median"], agg.get("min", agg["median"]), agg.get("max", agg["median"]))

    put("p50_ms", lat.get("p50_ms"))
    put("p99_ms", lat.get("p99_ms"))
    put("tasks_per_s", tp.get("tasks_per_s"))
    put("cpu_ms_per_task", tp.get("stack_cpu_ms_per_task"))
    put("start_s", s.get("cold_start_s"))
    lost = [x for x in tp.get("lost_per_run", []) if isinstance(x, (int, float))]
    if lost:
        out["lost"] = (sum(lost), sum(lost), sum(lost))
    services = tp.get("services", {})
    if services:
        rss = [_median(v.get("peak_rss_mb")) for v in services.values()]
        if all(r is not None for r in rss):
            total = sum(r for r in rss if r is not None)
            out["rss_mb"] = (total, total, total)
        pss = [_median(v.get("peak_pss_mb")) for v in services.values()]
        if pss and all(p is not None for p in pss):
            total = sum(p for p in pss if p is not None)
            out["pss_mb"] = (total, total, total)
    idle = summary.get("idle", {})
    put("after_idle_ms", _spread(idle.get("after_idle_ms", [])))
    put("idle_cpu_pct", _spread(idle.get("idle_cpu_pct_one_core", [])))
    return out


def _spread(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def herald_figures(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Herald's figures from its rounds (one dict of FIGURES keys per round): the median
    over rounds and the spread, or the sum for the lost counts."""
    out: dict[str, Any] = {}
    for key, *_ in FIGURES:
        values = [r[key] for r in rounds if r.get(key) is not None]
        if not values:
            continue
        if key in SUMS:
            out[key] = (sum(values), sum(values), sum(values))
        else:
            out[key] = (statistics.median(values), min(values), max(values))
    return out


def ratio(herald: float | None, original: float | None) -> str:
    """Herald / original, as "0.27×"; blank where it means nothing (a zero original)."""
    if herald is None or original is None or original == 0:
        return ""
    r = herald / original
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


def table(original: dict[str, Any], herald: dict[str, Any], idle: float = 30) -> list[str]:
    """The comparison, one line per figure: original, Herald, Herald / original."""

    def cell(fig: tuple[float, float, float] | None, fmt: str, unit: str) -> str:
        if fig is None:
            return "-"
        med, lo, hi = fig
        text = fmt.format(med) + (f" {unit}" if unit else "")
        if lo != hi:
            text += f" ({fmt.format(lo)}-{fmt.format(hi)})"
        return text

    lines = [f"{'':<44} {'original':>26} {'Herald':>26} {'ratio':>7}"]
    for key, label, unit, fmt in FIGURES:
        orig = original.get(SAME_AS.get(key, key))
        mine = herald.get(key)
        lines.append(f"{label.format(idle=f'{idle:g}'):<44} {cell(orig, fmt, unit):>26} "
                     f"{cell(mine, fmt, unit):>26} "
                     f"{ratio(mine and mine[0], orig and orig[0]):>7}")  # fmt: skip
    return lines


# ------------------------------------------------------------------ Herald's side


async def herald_main(tree: Tree) -> dict[str, float]:
    """A fresh Herald: start, latency back to back, both throughput runs."""
    await tree.start()
    assert tree.client is not None
    lat = [await tree.client.round_trip() for _ in range(LATENCY_N)]
    free = await tree.throughput(TASKS, None)
    windowed = await tree.throughput(TASKS, WINDOW)
    shared = await tree.throughput(TASKS, WINDOW, clients=tree.shared)
    return {"start_s": tree.start_seconds, "p50_ms": pct(lat, 50) * 1000,
            "p99_ms": pct(lat, 99) * 1000, "tasks_per_s": free["tasks_per_s"],
            "lost": free["lost"], "cpu_ms_per_task": free["cpu_ms_per_task"],
            "w_tasks_per_s": windowed["tasks_per_s"], "w_lost": windowed["lost"],
            "w_cpu_ms_per_task": windowed["cpu_ms_per_task"],
            "s_tasks_per_s": shared["tasks_per_s"], "s_lost": shared["lost"],
            "rss_mb": max(free["peak_rss_mb"], windowed["peak_rss_mb"]),
            "pss_mb": max(free["peak_pss_mb"], windowed["peak_pss_mb"]),
            "services_rss_mb": max(free["peak_services_rss_mb"],
                                   windowed["peak_services_rss_mb"])}  # fmt: skip


def herald_extras(root: Path) -> dict[str, float]:
    """The figures of Herald's that the original has no counterpart for: the notifier's
    fan-out (`python -m bench fanout`) and the desktop's longest stall (`bench desktop`)."""
    from bench.fanout import one_round

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    seconds, _, _ = one_round(root, *FANOUT)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", STALL], cwd=root, env=env, text=True,
                         capture_output=True, timeout=600)  # fmt: skip
    lines = out.stdout.strip().splitlines()
    stall = json.loads(lines[-1])["stall_ms"] if out.returncode == 0 and lines else None
    return {"fanout_s": seconds, **({"stall_ms": stall} if stall is not None else {})}


def note(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> int:
    seed = SeedStack(Path(args.seed_stack).resolve(), args.gunicorn_workers)
    root = Path(__file__).resolve().parents[1]
    print(f"Herald ({root}) against the original ({args.seed_stack}, gunicorn -w "
          f"{args.gunicorn_workers}), {os.cpu_count()} cores, {args.rounds} interleaved rounds; "
          f"the original's log: {seed.log}", flush=True)
    rounds: list[dict[str, float]] = []
    try:
        for i in range(1, args.rounds + 1):
            tree = Tree(root)
            figures: dict[str, float] = {}
            first = " (first run: installs its dependencies)" if i == 1 else ""
            steps: dict[str, tuple[str, Coroutine[Any, Any, Any]]] = {
                "herald": ("Herald: start, latency, throughput", herald_main(tree)),
                "seed": (f"the original: start, latency, throughput{first}",
                         asyncio.to_thread(seed.run, "seed", i, args.idle)),
                "herald idle": (f"Herald: idle {args.idle:g} s, then one task",
                                tree.idle(args.idle)),
                "seed idle": (f"the original: idle {args.idle:g} s, then one task",
                              asyncio.to_thread(seed.run, "idle", i, args.idle)),
                "herald extras": ("Herald: fan-out and the desktop's stall",
                                  asyncio.to_thread(herald_extras, root)),
            }  # fmt: skip
            try:
                # ABBA: who goes first alternates, so neither always runs on the warmer machine
                order = ["seed", "herald", "herald idle", "seed idle"] if i % 2 else \
                    ["herald", "seed", "seed idle", "herald idle"]  # fmt: skip
                order.append("herald extras")  # the services of both are stopped by then
                for name in order:
                    label, step = steps[name]
                    note(f"round {i}: {label}")
                    got = await step
                    if name == "herald":
                        figures.update(got)
                    elif name == "herald idle":
                        figures["idle_cpu_pct"], figures["after_idle_ms"] = got
                        await tree.stop()  # (again at the end: a no-op)
                    elif name == "herald extras":
                        figures.update(got)
                rounds.append(figures)
            finally:
                for _, step in steps.values():
                    step.close()  # those not run, if one failed
                await tree.stop()
        summary = seed.summary()
    finally:
        seed.remove()
    print()
    for text in table(original_figures(summary), herald_figures(rounds), args.idle):
        print(text)
    print("\nEach figure: median over the rounds (min-max); ratio: Herald / original. The "
          "original has one throughput run (its driver submits without waiting); both of "
          "Herald's are set against it.")
    print("Load average at the end (1, 5, 15 min): "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    print("Versions of the original: " + ", ".join(
        f"{k} {v}" for k, v in summary.get("versions", {}).items()
        if k in ("flask", "gunicorn", "celery", "python-socketio", "node", "npm:socket.io",
                 "rabbitmq-server (deb)")))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench original", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parents[1]
    p.add_argument("--seed-stack", default=os.environ.get("SEED_STACK")
                   or str(here.parent / "shared" / "seed-stack"),
                   help="the original design's scripts (default: ../shared/seed-stack)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle", type=float, default=30, help="seconds of idle before a task")
    p.add_argument("--gunicorn-workers", default="2", help="gunicorn -w for the original")
    try:
        return asyncio.run(run(p.parse_args(argv)))
    except SeedStackMissing as e:
        print(e.code, file=sys.stderr)
        return 2
