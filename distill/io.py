"""File I/O every stage shares: atomic writes, an fsync'd append-only JSONL log, validated seed and eval files."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from distill import faults


class DataError(ValueError):
    """Bad input data, phrased as one line: file:line: field 'x': what is wrong."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask can only be read by setting it


@contextmanager
def atomic_path(target: Path, *, folder: bool = False, keep_existing: bool = False) -> Iterator[Path]:
    """A temp file (or folder) beside target to fill; when the block ends without error it takes target's
    place whole, so readers see the old one or the new one, never half of it. The one way this project
    writes a file or folder others read. keep_existing: a target another process finished first stays
    (a shared cache filled by several processes at once), and the new copy goes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    os.chmod(tmp, (0o777 if folder else 0o666) & ~_UMASK)  # an ordinary file's mode, not mkstemp's 0600
    try:
        yield tmp
        faults.point(f"write:{target.name}")  # a test's kill lands here, with the new copy complete but not in place
        _put_in_place(tmp, target, folder, keep_existing)
    finally:
        if folder:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _put_in_place(tmp: Path, target: Path, folder: bool, keep_existing: bool) -> None:
    if keep_existing and not folder:
        try:
            os.link(tmp, target)  # only if still absent: one another process already put there stays
        except FileExistsError:
            pass
        return
    if target.exists():
        if keep_existing:
            return
        if folder:
            shutil.rmtree(target)
    try:
        os.replace(tmp, target)
    except OSError:
        if not (keep_existing and target.exists()):  # another process got there between the check and here
            raise


def write_text_atomic(path: Path, text: str) -> None:
    """Written through `atomic_path`, fsync'd before it takes the file's place."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text[:len(text) // 2])
        f.flush()
        faults.point(f"write:{Path(path).name}")  # a test's kill lands here, with the temp file half written
        f.write(text[len(text) // 2:])
        f.flush()
        os.fsync(f.fileno())


def atomic_dir(target: Path) -> Iterator[Path]:
    """A folder written whole (`atomic_path(folder=True)`)."""
    return atomic_path(target, folder=True)


def write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as e:  # written atomically, so only damage from outside makes it unreadable
        raise DataError(f"{path}: corrupt ({str(e).splitlines()[0]}); delete it and re-run the stage that wrote it") from None


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file this project wrote itself (no per-field checks; a damaged line is named)."""
    return list(_jsonl_records(path))


def _jsonl_records(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}:{n}: not a JSON record ({e.args[0].split(':')[0]}); the file is damaged") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: not a JSON object; the file is damaged")
            yield rec


def _lock_nowait(f) -> bool:
    """An exclusive lock on an open file, held until it closes, if no one else holds one."""
    import fcntl

    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class AppendLog:
    """Append-only JSONL where each line is durable once `append` returns.

    A crash can leave at most one partial last line; the log's writer cuts it off when it opens the
    log, so a resumed run neither trips over it nor appends after garbage. The writer is whoever holds
    the file's lock (flock): a second opener while it is held (a notebook, a monitoring script) reads
    but never cuts a line the writer may be in the middle of, and may not append.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")
        self.writer = _lock_nowait(self._f)
        self.discarded_partial = self._repair() if self.writer else False

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
        # the writer's log is whole (its torn tail cut); another's may end in the line being written
        return _jsonl_records(self.path) if self.writer else AppendLog.read(self.path)

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
        if not self.writer:
            raise RuntimeError(f"{self.path}: another process is writing this log (it holds its lock)")
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Examples(list):
    """Rows of a seed or eval file, each {"id", "input", "output", ...other columns}, and where each came
    from (`where(id)` -> "file:line"), so later checks can still name the line."""

    def __init__(self, rows: list[dict], path: Path, places: dict[str, str], files: list[Path] | None = None):
        super().__init__(rows)
        self.path, self._places = path, places
        self.files = files or [path]  # every file the rows came from (a benchmark: its source and references)

    def where(self, row_id: str) -> str:
        return f"{self.path}{self._places.get(row_id, '')}"


DEFAULT_COLUMNS = {"input": "input", "output": "output", "id": "id"}


def load_examples(path: Path, *, columns: dict[str, str | None] | None = None, what: str = "file") -> Examples:
    """Read a user-supplied seed or eval set (JSONL, CSV or parquet), checking every row.

    `columns` maps our field names to the file's (`{"input": "source", "output": "target", "id": None}`);
    `output` may name several columns, one reference each. Rows without an id column get a stable id
    from their content. The first problem raises DataError naming the file, line (row, for parquet)
    and the file's column.
    """
    path = Path(path)
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    ref_cols = cols["output"] if isinstance(cols["output"], list) else None
    if ref_cols:
        cols["output"] = ref_cols[0]
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if path.is_dir():
        raise DataError(f"{path}: {what} is a directory, not a file")
    rows, places, seen = [], {}, {}
    for place, raw in _records(path):
        out = {k: v for k, v in raw.items() if k not in cols.values() and k not in (ref_cols or [])}
        refs = _reference_columns(raw, ref_cols, f"{path}{place}") if ref_cols else raw.get(cols["output"])
        if isinstance(refs, list) and refs and all(isinstance(r, str) for r in refs):  # several references
            if (empty := next((i for i, r in enumerate(refs) if not r.strip()), None)) is not None:
                raise DataError(f"{path}{place}: field '{cols['output']}': reference {empty + 1} is empty")
            out["references"], raw = refs, {**raw, cols["output"]: refs[0]}
        for f in ("input", "output"):
            col = cols[f]
            v = raw.get(col)
            if f == "output" and isinstance(v, (dict, list)):  # an extraction answer given as an object
                v = json.dumps(v, sort_keys=True, ensure_ascii=False)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(v, str) or not v.strip():
                problem = "missing" if v is None and col not in raw else "must be a non-empty string"
                raise DataError(f"{path}{place}: field '{col}': {problem}")
            out[f] = v
        if cols["id"] and raw.get(cols["id"]) not in (None, ""):
            rid, id_field = str(raw[cols["id"]]), cols["id"]
        else:
            rid = "row-" + hashlib.sha256(f"{out['input']}\0{out['output']}".encode()).hexdigest()[:10]
            id_field = cols["input"]
        if rid in seen:
            raise DataError(f"{path}{place}: field '{id_field}': duplicate "
                            f"{'id ' + repr(rid) if id_field == cols['id'] else 'row'} (first on {_place_words(seen[rid])})")
        seen[rid] = place
        rows.append({"id": rid, "input": out.pop("input"), "output": out.pop("output"), **out})
        places[rid] = place
    if not rows:
        raise DataError(f"{path}: {what} is empty")
    return Examples(rows, path, places)


def _reference_columns(raw: dict, columns: list[str], where: str) -> list[str]:
    """A row's references from the columns `fields.output` names, each a non-empty string."""
    for c in columns:
        if not isinstance(raw.get(c), str) or not raw[c].strip():
            raise DataError(f"{where}: field '{c}': {'missing' if c not in raw else 'must be a non-empty string'}")
    return [raw[c] for c in columns]


def load_benchmark(source: Path, references: list[Path], *, what: str = "eval set") -> Examples:
    """A benchmark in its usual layout: a source file and one reference file per annotator, plain text,
    one sentence a line, line n of each belonging together. Rows get ids "line-<n>"; `output` is the
    first reference, `references` all of them. Missing files, differing line counts and empty lines
    are one DataError naming the file (and line)."""
    files = [Path(source), *map(Path, references)]
    if not references:
        raise DataError(f"{source}: {what} has a source file but no reference file")
    texts = []
    for f in files:
        if not f.is_file():
            raise DataError(f"{f}: {what} file not found")
        data = f.read_bytes()
        try:
            texts.append(data.decode("utf-8").rstrip("\n").split("\n"))
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise DataError(f"{f}:{line}: not UTF-8 text (byte {e.start})") from None
    if len({len(t) for t in texts}) > 1:
        counts = ", ".join(f"{f} {len(t)}" for f, t in zip(files, texts))
        raise DataError(f"{source}: {what} files differ in line count ({counts}): line n of each must belong together")
    rows, places = [], {}
    for n, (src, *refs) in enumerate(zip(*texts), 1):
        for f, text in zip(files, (src, *refs)):
            if not text.strip():
                raise DataError(f"{f}:{n}: empty line (every line of a benchmark file holds one sentence)")
        rows.append({"id": f"line-{n}", "input": src, "output": refs[0], "references": list(refs)})
        places[f"line-{n}"] = f":{n}"
    if not rows:
        raise DataError(f"{source}: {what} is empty")
    return Examples(rows, Path(source), places, files)


def references(row: dict) -> list[str]:
    """Every reference of an eval row (one unless its file gave several)."""
    return row.get("references") or [row["output"]]


def _place_words(place: str) -> str:
    return place.lstrip(": ") if "row" in place else f"line {place.lstrip(':')}"


def _check_csv_widths(path: Path, sep: str) -> None:
    """The first row whose field count differs from the header's, by line (pyarrow's error names none)."""
    import csv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, None)
        for row in reader:
            if header is not None and row and len(row) != len(header):
                raise DataError(f"{path}:{reader.line_num}: {len(row)} fields where the header has {len(header)}")


def yaml_load(text: str):
    """YAML as yaml.safe_load reads it, but a key given twice in one mapping is an error at its line
    (safe_load keeps the last silently: a config's first setting would vanish unseen)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for knode, _ in node.value:
                key = self.construct_object(knode, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key '{key}' given twice", knode.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=UniqueKeys)


def _records(path: Path) -> Iterator[tuple[str, dict]]:
    """(":line" or ": row n", record) for every record of a JSONL, CSV or parquet file."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".parquet", ".pq"):
        import datasets

        datasets.disable_progress_bars()
        try:
            if suffix == ".parquet" or suffix == ".pq":
                ds = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
            else:
                _check_csv_widths(path, "\t" if suffix == ".tsv" else ",")
                ds = datasets.Dataset.from_csv(str(path), keep_in_memory=True, sep="\t" if suffix == ".tsv" else ",")
        except Exception as e:  # noqa: BLE001 - pyarrow's parse errors have many types; the message says enough
            raise DataError(f"{path}: cannot read ({str(e).splitlines()[0][:200]})") from None
        for i, rec in enumerate(ds):
            # a CSV's first line is its header; parquet has no lines, only rows
            yield (f":{i + 2}" if suffix != ".parquet" and suffix != ".pq" else f": row {i + 1}"), rec
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None
    # records end at "\n" only: str.splitlines() also breaks at U+2028, U+0085 and others, which JSON
    # strings may hold raw
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: expected a JSON object")
        yield f":{n}", row
