"""Named fault-injection points, so tests kill or fail a run at an exact place instead of on a timer.

`DISTILL_FAULT="<point>[@<n>]=<kill|raise>"` (several separated by ";") makes the n-th pass (default
the first) through `point` in this process SIGKILL the process or raise InjectedFault. Points:

- `write:<file name>`: inside an atomic write, with the temp file half written (`write:dataset`,
  `write:student`, `write:adapter` for the folders written whole);
- `send`: a teacher request admitted by the budget and logged as sending, just before it goes.

Inside `scope(label)` every point is also passed as `<label>:<point>` (`round2:send@3=kill`: the third
request of generation round 2).

Unset (always, outside tests), a point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from contextlib import contextmanager

_passes: Counter[str] = Counter()
_scopes: list[str] = []


class InjectedFault(RuntimeError):
    """Raised at a fault-injection point: a stand-in for a crash that a retry may survive."""


def point(name: str) -> None:
    spec = os.environ.get("DISTILL_FAULT")
    if not spec:
        return
    for full in [name, *(f"{label}:{name}" for label in _scopes)]:
        _passes[full] += 1
        for item in spec.split(";"):
            where, _, action = item.strip().partition("=")
            target, _, nth = where.partition("@")
            if target == full and _passes[full] == int(nth or 1):
                if action == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise InjectedFault(f"injected fault at {full} (pass {_passes[full]})")


@contextmanager
def scope(label: str):
    """Points passed inside are also named `<label>:<point>`, counted on their own."""
    _scopes.append(label)
    try:
        yield
    finally:
        _scopes.pop()


def reset() -> None:
    """Count passes from zero again (a test that injects in its own process)."""
    _passes.clear()
