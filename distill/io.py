"""File I/O every stage shares: atomic writes, an fsync'd append-only JSONL log, validated JSONL input."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataError(ValueError):
    """Bad input data, phrased as one line: file:line: field 'x': what is wrong."""


def write_text_atomic(path: Path, text: str) -> None:
    """Temp file in the same directory + fsync + rename: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file this project wrote itself (trusted: no per-field checks)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class AppendLog:
    """Append-only JSONL where each line is durable once `append` returns.

    A crash can leave at most one partial last line; opening the log cuts it off, so a resumed run
    neither trips over it nor appends after garbage.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.discarded_partial = self._repair()
        self._f = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> bool:
        if not self.path.exists():
            return False
        data = self.path.read_bytes()
        good = len(data)
        if data and not data.endswith(b"\n"):
            good = data.rfind(b"\n") + 1
        else:
            # a complete-looking last line can still be garbage if the crash hit mid-write of a
            # multi-byte sequence; check that it parses
            last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
            if data[last_start:].strip():
                try:
                    json.loads(data[last_start:])
                except ValueError:
                    good = last_start
        if good != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
            return True
        return False

    def __iter__(self) -> Iterator[dict]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    @staticmethod
    def read(path: Path) -> Iterator[dict]:
        """Records of a log another process may be appending to: a torn last line is skipped, not repaired."""
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def append(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def load_examples(path: Path, *, fields: tuple[str, ...] = ("id", "input", "output"), what: str = "file") -> list[dict]:
    """Read a user-supplied JSONL set, checking every line; the first problem raises DataError naming file, line, field."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    rows, seen = [], {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: expected a JSON object")
        for f in fields:
            v = row.get(f)
            if not isinstance(v, str) or not v.strip():
                problem = "missing" if f not in row else "must be a non-empty string"
                raise DataError(f"{path}:{n}: field '{f}': {problem}")
        if "id" in fields:
            if row["id"] in seen:
                raise DataError(f"{path}:{n}: field 'id': duplicate id '{row['id']}' (first on line {seen[row['id']]})")
            seen[row["id"]] = n
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: {what} is empty")
    return rows
