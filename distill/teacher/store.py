"""The request store: an append-only JSONL of finished teacher requests, so a re-run sends only what
never finished."""
from __future__ import annotations

from pathlib import Path

from distill.io import AppendLog, DataError


def _line_of(path: Path, n: int) -> int:
    """The line of the n-th record (blank lines hold none)."""
    seen = 0
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").split("\n"), 1):
        seen += bool(line.strip())
        if seen == n:
            return line_no
    return n


def answered(rec: dict) -> bool:
    """A reply to reuse: no error and some text (a store written before empty replies counted as
    failures may hold blank "successes"; they are asked again)."""
    return rec.get("error") is None and bool((rec.get("text") or "").strip())


class RequestStore:
    """Append-only JSONL of finished requests, keyed by Request.key: a re-run skips what is here.

    Only answered requests count as finished; a failed one (an error, an empty reply) is logged for
    the ledger but sent again on the next run.
    """

    def __init__(self, path: Path, writer: str | None = None, journal: Path | None = None, sending: Path | None = None):
        # Shards running in parallel processes each append to their own file
        # (requests.<writer>.jsonl); every store reads all of them, so re-sharding never resends.
        path = Path(path)
        own = path.with_name(f"{path.stem}.{writer}{path.suffix}") if writer else path
        # the Batch API journal of this writer (batch ids and their request keys) sits beside its file
        self.journal = Path(journal) if journal else own.with_name("batches" + own.name[len(path.stem):])
        self.done: dict[str, dict] = {}
        for other in sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")) + [path]:
            if other != own and other.exists():
                self._index(AppendLog.read(other), other)
        self.log = AppendLog(own)
        self._index(self.log, own)
        # a line per request about to be sent, written before it goes: budgets count these, so a run
        # killed with requests in flight still has them counted on the next run
        self.sending_path, self._sending = sending, None

    def _index(self, records, path: Path) -> None:
        for n, rec in enumerate(records, 1):
            if "key" not in rec:
                raise DataError(f"{path}:{_line_of(path, n)}: a record without 'key'; the store is damaged (`distill "
                                "doctor --fix` sets damaged lines aside)")
            if answered(rec):
                self.done[rec["key"]] = rec

    def get(self, key: str) -> dict | None:
        return self.done.get(key)

    def put(self, rec: dict) -> None:
        self.log.append(rec)
        if answered(rec):
            self.done[rec["key"]] = rec

    def intend(self, key: str, usd_at_most: float) -> None:
        """Log a request about to be sent, with what it may cost at most (its budget reservation)."""
        if self.sending_path is not None:
            if self._sending is None:
                self._sending = AppendLog(self.sending_path)
            self._sending.append({"key": key, "usd_at_most": usd_at_most})

    def close(self) -> None:
        self.log.close()
        if self._sending is not None:
            self._sending.close()
