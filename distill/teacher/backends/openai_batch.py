"""The OpenAI Batch API backend (`teacher.backend: openai_batch`): half the price, hours of latency.

Requests not already in the request store are written as one JSONL file per batch, uploaded with
purpose="batch" and submitted; the batch id goes into a journal (data/batches.jsonl) before any
waiting starts. A run that crashes or gives up waiting resumes by batch id: the requests of a batch
still open are collected from it, never submitted twice. Replies land in the same request store and
record schema as the real-time backend, so rows, ids and usage accounting do not depend on the backend.

Requests an expired batch left undone, and lines that failed with 429/5xx, go into a new batch,
up to teacher.batch.max_rounds batches per request; then they are recorded as failed (and sent
again by a later run, like any failed request).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import openai

from distill.config import Config
from distill.io import AppendLog
from distill.teacher.cached import Session
from distill.teacher.request import Request, failed_record, reply_record, top_logprobs
from distill.text import scrub

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "expired", "failed", "cancelled"}


def batch_line(req: Request) -> dict:
    return {"custom_id": req.key, "method": "POST", "url": ENDPOINT,
            "body": {"model": req.model, "messages": req.message_dicts(), **dict(req.params)}}


def parse_result_line(line: dict, req: Request | None) -> tuple[dict | None, str | None, bool]:
    """One line of an output or error file -> (reply record, error, retryable)."""
    err = line.get("error")
    resp = line.get("response") or {}
    status = resp.get("status_code")
    if err:
        code = err.get("code") or "error"
        # OpenAI writes requests an expired batch never ran to the error file as batch_expired
        retryable = code in ("batch_expired", "server_error", "rate_limit_exceeded")
        return None, f"BatchLineError({code}): {str(err.get('message', ''))[:200]}", retryable
    if status != 200:
        msg = ((resp.get("body") or {}).get("error") or {}).get("message", "")
        retryable = status is None or status in (408, 429) or status >= 500
        return None, f"APIError({status}): {str(msg)[:200]}", retryable
    body = resp.get("body") or {}
    try:
        ch = body["choices"][0]
        text, finish = ch["message"]["content"], ch.get("finish_reason")
        u = body.get("usage") or {}
    except (KeyError, IndexError, TypeError):
        return None, "MalformedReply: batch line without choices[0].message.content", True
    if req is None:  # a request of an earlier run's batch that this run does not need: kept for later runs
        req = Request(body.get("model", ""), (), ())
    extra = {"logprobs": top_logprobs(ch.get("logprobs"))} if dict(req.params).get("logprobs") else {}
    rec = reply_record(req, text, finish, u.get("prompt_tokens"), u.get("completion_tokens"), None, **extra)
    rec["key"] = line["custom_id"]
    return rec, None, False


class BatchJournal:
    """Which batches were submitted with which request keys, and which were collected.

    Every journal next to the store is read (shards write their own), so a batch submitted by any
    earlier invocation is found again.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.submitted: dict[str, dict] = {}
        self.pending_files: dict[str, dict] = {}
        self.collected: set[str] = set()
        self.counted: set[str] = set()  # batches whose requests an invocation's stats already count as sent
        main_stem = self.path.name.split(".")[0]
        for p in sorted(self.path.parent.glob(f"{main_stem}*{self.path.suffix}")):
            if p != self.path:
                self._replay(AppendLog.read(p))
        self.log = AppendLog(self.path)
        self._replay(self.log)

    def _replay(self, events) -> None:
        for e in events:
            self._apply(e)

    def _apply(self, e: dict) -> None:
        if e["event"] == "uploaded":
            self.pending_files[e["input_file_id"]] = e
        elif e["event"] == "submitted":
            self.pending_files.pop(e["input_file_id"], None)
            self.submitted[e["batch_id"]] = e
        elif e["event"] == "collected":
            self.collected.add(e["batch_id"])
        elif e["event"] == "counted":
            self.counted.add(e["batch_id"])

    def add(self, event: str, **fields) -> None:
        e = {"event": event, **fields, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.log.append(e)
        self._apply(e)

    def open_batches(self) -> dict[str, dict]:
        return {b: e for b, e in self.submitted.items() if b not in self.collected}

    def close(self) -> None:
        self.log.close()


@dataclass
class BatchBackend:
    cfg: Config
    base_url: str
    engine: str = "OpenAI Batch API"
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def send(self, reqs: list[Request], session: Session) -> None:
        if session.store is None:
            raise ValueError("the Batch API backend needs a request store (its journal sits beside it)")
        runner = BatchRunner(self, session)
        try:
            runner.run(reqs)
        finally:
            runner.journal.close()
            runner.client.close()


class BatchRunner:
    def __init__(self, backend: BatchBackend, session: Session):
        cfg = backend.cfg
        self.bcfg = cfg.teacher.batch
        self.session, self.usage, self.sleep = session, session.usage, backend.sleep
        self.key = cfg.api_key()  # scrubbed from stored error text
        self.results = session.results
        self.client = openai.OpenAI(base_url=backend.base_url, api_key=cfg.api_key() or "not-needed",
                                    max_retries=cfg.teacher.endpoint.max_retries,
                                    timeout=cfg.teacher.endpoint.timeout_s)
        self.journal = BatchJournal(session.store.journal)
        self.rounds: dict[str, int] = {}
        self.by_key: dict[str, Request] = {}
        self.batch_ids: list[str] = []
        self.inherited: set[str] = set()
        self.admitted: set[str] = set()

    def run(self, reqs: list[Request]) -> None:
        for r in reqs:
            self.by_key.setdefault(r.key, r)
        self._recover_unsubmitted()
        self.inherited = set(self.journal.open_batches()) - self.journal.counted
        open_keys = {k for e in self.journal.open_batches().values() for k in e["keys"]}
        for e in self.journal.open_batches().values():
            for k in e["keys"]:
                self.rounds[k] = max(self.rounds.get(k, 0), e.get("round", 1))
        todo = []
        for k, r in self.by_key.items():
            if k in open_keys:
                continue
            if not self.session.admit(r):
                continue
            self.admitted.add(k)
            todo.append(r)
        self._submit(todo, round_=1)
        self._wait()
        for k, r in self.by_key.items():
            if k not in self.results:  # still in a batch we stopped waiting on
                self.usage.error("BatchStillRunning")
                self.session.finish(r, failed_record(r, "batch still running after teacher.batch.max_wait_s; "
                                                        "a re-run collects it by batch id"),
                                    store=False, admitted=k in self.admitted)
        # this invocation's stats count these batches' requests as sent; a re-run that collects one
        # must not count them again
        for bid in self.batch_ids + sorted(self.inherited):
            if bid not in self.journal.counted:
                self.journal.add("counted", batch_id=bid)

    # --- submit -------------------------------------------------------------------------------------
    def _submit(self, reqs: list[Request], round_: int) -> None:
        step = self.bcfg.max_requests_per_batch
        for i in range(0, len(reqs), step):
            chunk = reqs[i: i + step]
            data = "".join(json.dumps(batch_line(r), ensure_ascii=False) + "\n" for r in chunk).encode()
            f = self.client.files.create(file=("distill-batch.jsonl", data), purpose="batch")
            keys = [r.key for r in chunk]
            # journalled before create: a crash between the two is found again through the file id
            self.journal.add("uploaded", input_file_id=f.id, keys=keys, round=round_)
            b = self.client.batches.create(input_file_id=f.id, endpoint=ENDPOINT,
                                           completion_window=self.bcfg.completion_window)
            self.journal.add("submitted", batch_id=b.id, input_file_id=f.id, keys=keys, round=round_)
            self.batch_ids.append(b.id)
            self.usage.requests_sent += len(chunk)
            if round_ > 1:
                self.usage.retries += len(chunk)
            for k in keys:
                self.rounds[k] = round_

    def _recover_unsubmitted(self) -> None:
        """Uploaded, then crashed before the batch id was journalled: find the batch by its input file."""
        if not self.journal.pending_files:
            return
        for b in self.client.batches.list(limit=100):
            if (e := self.journal.pending_files.get(b.input_file_id)) is not None:
                self.journal.add("submitted", batch_id=b.id, input_file_id=b.input_file_id, keys=e["keys"],
                                 round=e["round"])

    # --- wait and collect ----------------------------------------------------------------------------
    def _wait(self) -> None:
        deadline = time.monotonic() + self.bcfg.max_wait_s if self.bcfg.max_wait_s else None
        while True:
            waiting = {b: e for b, e in self.journal.open_batches().items()
                       if any(k in self.by_key and k not in self.results for k in e["keys"])}
            if not waiting:
                return
            for bid, e in waiting.items():
                b = self.client.batches.retrieve(bid)
                if b.status in TERMINAL:
                    self._collect(b, e)
            if deadline is not None and time.monotonic() > deadline:
                return
            if any(b not in self.journal.collected for b in waiting):
                self.sleep(self.bcfg.poll_interval_s)

    def _file_lines(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self.client.files.content(file_id).text
        out = []
        for line in text.splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a torn line: its request counts as undone
        return out

    def _collect(self, b, entry: dict) -> None:
        keys = set(entry["keys"])
        seen: set[str] = set()
        retry: list[Request] = []
        if b.id in self.inherited:
            # submitted by an earlier invocation that never wrote its stats: sent, as far as this one knows
            self.usage.requests_sent += len(keys)
        for line in self._file_lines(b.output_file_id) + self._file_lines(b.error_file_id):
            key = line.get("custom_id")
            if key not in keys or key in seen:
                continue
            seen.add(key)
            req = self.by_key.get(key)
            rec, err, retryable = parse_result_line(line, req)
            if rec is not None:
                rec["batch_id"] = b.id
                if req is not None and key not in self.results:
                    self.session.finish(req, rec, admitted=key in self.admitted)
                else:  # not (or no longer) asked for by this call, but paid for: kept for later runs
                    self.session.keep(rec)
                    self.usage.prompt_tokens += rec["usage"]["prompt_tokens"]
                    self.usage.completion_tokens += rec["usage"]["completion_tokens"]
            else:
                self.usage.error(err.split(":", 1)[0])
                if req is not None:
                    self._retry_or_fail(req, err, retryable, retry, b.id)
        for key in keys - seen:  # the batch ended (expired, failed, cancelled) before running these
            self.usage.error(f"BatchUndone({b.status})")
            if (req := self.by_key.get(key)) is not None:
                self._retry_or_fail(req, f"BatchUndone: batch {b.id} {b.status} before this request ran",
                                    True, retry, b.id)
        self.journal.add("collected", batch_id=b.id, status=b.status, lines=len(seen), missing=len(keys - seen))
        if retry:
            self._submit(retry, round_=max(self.rounds[r.key] for r in retry) + 1)

    def _retry_or_fail(self, req: Request, err: str, retryable: bool, retry: list[Request], batch_id: str) -> None:
        if req.key in self.results:
            return
        if retryable and self.rounds.get(req.key, 1) < self.bcfg.max_rounds:
            retry.append(req)
            return
        rec = failed_record(req, scrub(err, self.key), batch_id=batch_id, attempts=self.rounds.get(req.key, 1))
        self.session.finish(req, rec, admitted=req.key in self.admitted)
