"""`python -m bench [headless|desktop|all]` (default: all)."""

import sys

which = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "all"
rest = [a for a in sys.argv[1:] if a != which]
code = 0
if which in ("headless", "all"):
    from bench.headless import main as headless

    code |= headless(rest)
if which in ("desktop", "all"):
    from bench.desktop import main as desktop

    code |= desktop()
sys.exit(code)
