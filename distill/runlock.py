"""One writer per run directory: an OS lock on its `.lock` file, taken by every stage and by the flow, and
the clean-up of what atomic writers killed mid-write left behind, done by whoever takes the lock."""
from __future__ import annotations

import fcntl
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class RunDirError(RuntimeError):
    """The run directory cannot be used: it is a file, not writable, or held by another process."""


class RunDirInUse(RunDirError):
    """Another process holds the run directory's lock."""


# Locks this process holds, by run directory: a stage inside a flow that already holds the lock (the
# flow's tasks run in its process) takes it again without deadlocking on itself.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


@contextmanager
def hold(rd) -> Iterator[None]:
    """Hold the run directory `rd` (a RunDir) for writing: an OS lock (flock on .lock), released when the
    holder exits or dies, so a killed run never leaves a stale lock. A second process fails at once with
    RunDirInUse naming the holder's pid. The processes of one `torchrun` launch are one writer: only rank
    0 locks."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    rd.make()
    key = str(rd.root.resolve())
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None:
            f = open(rd.lock_file, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                pid = f.read().strip() or "unknown"
                f.close()
                raise RunDirInUse(f"{rd.root}: run directory in use by pid {pid} (another distill "
                                  "process is writing to it); wait for it to finish or use another --run-dir") from None
            f.truncate(0)
            f.write(str(os.getpid()))
            f.flush()
            held = _HELD[key] = [f, 0]
            remove_stale_temps(rd)
        held[1] += 1
    try:
        yield
    finally:
        with _HELD_GUARD:
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                held[0].close()  # closing the file releases the flock


def remove_stale_temps(rd) -> list[Path]:
    """Delete what atomic writers killed mid-write left behind (`.<name>.<random>.tmp` files and folders) in
    the run directory `rd`. Only the lock's holder may: no other writer of this run can be using one then."""
    stale = []
    prefect = rd.prefect_home.name  # Prefect's own files (its home and its results) are its business
    for top, dirs, files in os.walk(rd.root):
        dirs[:] = [d for d in dirs if not d.startswith(prefect)]
        for name in [*dirs, *files]:
            if name.startswith(".") and name.endswith(".tmp"):
                stale.append(Path(top) / name)
        dirs[:] = [d for d in dirs if not (d.startswith(".") and d.endswith(".tmp"))]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale
