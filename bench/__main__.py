"""`python -m bench [headless|desktop|all]` (default: all), `python -m bench compare TREE`
(this tree against another checkout, measured interleaved in one run), `python -m bench
original [--seed-stack PATH]` (against the original design, interleaved; `make bench-compare`),
or `python -m bench sandbox` (what confining each attempt costs), or `python -m bench idle
[TREE]` (the services' CPU while idle, per service), or `python -m bench search`
(the first page of a search over 100,000 finished tasks; also part of `all`), or `python -m
bench fanout` (1,000 WebSocket connections x 100 events through a real notifier; `--tree DIR`
runs another checkout's notifier), or `python -m bench floor` (what the pieces Herald is built
from cost alone: the floor of its CPU per task), or `python -m bench skeleton [--rounds N]`
(Herald against a bare skeleton of its processes, web, dispatcher with executors and
per-principal runners, notifier, on the same libraries: what the topology itself costs), or
`python -m bench backends` (SQLite and Redis side by side, and Redis with 1, 2 and 4 worker
processes: `make bench BACKEND=redis`)."""

import sys

which = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "all"
if which == "compare":
    from bench.compare import main as compare

    sys.exit(compare(sys.argv[2:]))
if which == "original":
    from bench.original import main as original

    sys.exit(original(sys.argv[2:]))
if which == "fanout":
    from bench.fanout import main as fanout

    sys.exit(fanout(sys.argv[2:]))
if which == "backends":
    from bench.backends import main as backends

    sys.exit(backends(sys.argv[2:]))
if which == "skeleton":
    from bench.skeleton import main as skeleton

    sys.exit(skeleton(sys.argv[2:]))
if which == "floor":
    from bench.floor import main as floor

    sys.exit(floor(sys.argv[2:]))
if which == "idle":
    from bench.idle import main as idle

    sys.exit(idle(sys.argv[2:]))
if which == "sandbox":
    from bench.sandbox import main as sandbox

    sys.exit(sandbox(sys.argv[2:]))
rest = [a for a in sys.argv[1:] if a != which]
code = 0
if which in ("headless", "all"):
    from bench.headless import main as headless

    code |= headless(rest)
if which in ("desktop", "all"):
    from bench.desktop import main as desktop

    code |= desktop()
if which in ("search", "all"):
    from bench.search import main as search

    code |= search(rest if which == "search" else [])
sys.exit(code)
