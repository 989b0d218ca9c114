"""Named fault-injection points, so tests kill or fail a run at an exact place instead of on a timer.

`DISTILL_FAULT="<point>[@<n>]=<kill|raise>"` (several separated by ";") makes the n-th pass (default
the first) through `point` in this process SIGKILL the process or raise InjectedFault. Points:

- `write:<file name>`: inside an atomic write, with the temp file half written (`write:dataset`,
  `write:student`, `write:adapter` for the folders written whole);
- `send`: a teacher request admitted by the budget and logged as sending, just before it goes.

Unset (always, outside tests), a point costs one dictionary lookup.
"""
from __future__ import annotations

import os
import signal
from collections import Counter

_passes: Counter[str] = Counter()


class InjectedFault(RuntimeError):
    """Raised at a fault-injection point: a stand-in for a crash that a retry may survive."""


def point(name: str) -> None:
    spec = os.environ.get("DISTILL_FAULT")
    if not spec:
        return
    _passes[name] += 1
    for item in spec.split(";"):
        where, _, action = item.strip().partition("=")
        target, _, nth = where.partition("@")
        if target == name and _passes[name] == int(nth or 1):
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"injected fault at {name} (pass {_passes[name]})")


def reset() -> None:
    """Count passes from zero again (a test that injects in its own process)."""
    _passes.clear()
