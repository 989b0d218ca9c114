"""`distill doctor`: find damaged lines in a run directory's files and, with --fix, set them aside.

The request store, the Batch API journal and the sending log are append-only: a damaged line there
(a disk error, an editor, a crash on a filesystem that reorders writes) costs only its own request
once it is moved to <file>.damaged; the next run sends that request again. Files a stage writes
whole (generated.jsonl, train.jsonl, dropped.jsonl, stats) are moved aside entirely; re-running the
stage that wrote them makes them again.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from distill.io import DataError, read_json, read_jsonl, write_text_atomic
from distill.rundir import RunDir


@dataclass
class Damage:
    path: Path
    line: int | None  # None: the whole file
    why: str  # for a whole file, the complete message (file and line included)
    log: bool  # an append-only log (set the line aside) or a file a stage writes whole (set it aside)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.why}" if self.log else self.why


def _line_problem(line: str, log_of_requests: bool) -> str | None:
    if not line.endswith("\n"):
        return "torn last line (a write cut short)"
    try:
        rec = json.loads(line)
    except ValueError as e:
        return f"not a JSON record ({e.args[0].split(':')[0]})"
    if not isinstance(rec, dict):
        return "not a JSON object"
    if log_of_requests and "key" not in rec:
        return "a record without 'key'"
    return None


def examine(rd: RunDir) -> list[Damage]:
    """Every damaged line of the run's logs and every unreadable file a stage wrote whole."""
    found = []
    for path in rd.append_logs():
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if line.strip() and (why := _line_problem(line, path.name.startswith(("requests", "sending")))):
                    found.append(Damage(path, n, why, log=True))
    for path in rd.whole_outputs():
        try:
            (read_json if path.suffix == ".json" else read_jsonl)(path)
        except UnicodeDecodeError as e:
            found.append(Damage(path, None, f"{path}: not UTF-8 text ({e.reason} at byte {e.start})", log=False))
        except DataError as e:  # names the file and the line already
            found.append(Damage(path, None, str(e), log=False))
    return found


def set_aside(rd: RunDir, damage: list[Damage]) -> list[str]:
    """Move damaged log lines to <file>.damaged (the rest of the log kept in order) and damaged whole
    files to <file>.damaged. Runs under the run's lock: no writer is appending meanwhile."""
    done = []
    with rd.lock():
        for path in sorted({d.path for d in damage if d.log}):
            bad = {d.line for d in damage if d.path == path}
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines(True)
            aside = path.with_name(path.name + ".damaged")
            with open(aside, "a", encoding="utf-8") as f:  # first the copy, so a crash loses nothing
                f.writelines(line if line.endswith("\n") else line + "\n" for n, line in enumerate(lines, 1) if n in bad)
                f.flush()
                os.fsync(f.fileno())
            write_text_atomic(path, "".join(line for n, line in enumerate(lines, 1) if n not in bad))
            done.append(f"{path}: {len(bad)} damaged line(s) moved to {aside.name}; those requests will be sent again")
        for d in damage:
            if not d.log:
                os.replace(d.path, d.path.with_name(d.path.name + ".damaged"))
                done.append(f"{d.path}: moved to {d.path.name}.damaged; re-run the stage that writes it")
    return done
