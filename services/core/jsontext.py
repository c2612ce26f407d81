"""Compact JSON text, as Herald writes it everywhere (the ledger, the worker's frames, the
events on the wire, the API's bodies): no spaces, UTF-8 characters as they are.

One encoder, made once: `json.dumps` with options builds a new one at every call (a third
of its cost for a small object: 5.8 against 3.9 µs for a done frame here).
"""

from __future__ import annotations

import json
from typing import Any

COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def compact(obj: Any) -> str:
    """`obj` as compact JSON text.

    Raises:
        TypeError, ValueError, RecursionError: as `json.dumps` does.
    """
    return COMPACT.encode(obj)
