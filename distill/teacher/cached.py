"""The one wrapper every backend runs under: the request store, the budget and usage accounting.

A backend only sends. Before it sends a request it asks the session to admit it (the budget); for
each reply or failure it hands the record to the session, which stores it, counts its tokens,
settles the budget and reports progress. A backend counts only what it alone sees: attempts
(requests_sent, retries), errors by kind and busy seconds (the budget's time estimate).
"""
from __future__ import annotations

from typing import Callable, Protocol

from distill import faults
from distill.stats import Usage
from distill.teacher.cost import Budget
from distill.teacher.request import Request, estimate_tokens
from distill.teacher.store import RequestStore


class Session:
    def __init__(self, store: RequestStore | None, budget: Budget | None, on_done: Callable[[], None] | None):
        self.store, self.budget, self.on_done = store, budget, on_done
        self.usage = Usage()
        self.results: dict[str, dict] = {}

    def done(self) -> None:
        if self.on_done:
            self.on_done()

    def admit(self, req: Request) -> bool:
        """True: send it. False: the budget is spent; the request is answered with a skipped record
        (not stored, so a later run with a larger budget sends it)."""
        if self.usage.fatal:
            return self._skip(req, self.usage.fatal)
        if self.budget is not None:
            done = self.usage.requests_sent - self.usage.retries
            avg_seconds = self.usage.request_seconds / done if done else 1.0
            est = (estimate_tokens(req.message_dicts()), req.max_tokens, avg_seconds)
            if not self.budget.admit(*est):
                return self._skip(req, self.budget.exhausted)
            if self.store is not None:
                self.store.intend(req.key, self.budget.price(*est))
        faults.point("send")
        return True

    def stop(self, why: str) -> None:
        """A fault no retry fixes (a rejected key, an unknown model): nothing more is sent, and the
        stage that asked ends with `why` instead of going on with no data."""
        self.usage.fatal = self.usage.fatal or why

    def _skip(self, req: Request, why: str) -> bool:
        self.usage.skipped += 1
        self.results[req.key] = {"key": req.key, "model": req.model, "params": dict(req.params), "text": None,
                                 "error": f"not sent: {why}", "skipped": True}
        self.done()
        return False

    def finish(self, req: Request, rec: dict, *, store: bool = True, admitted: bool = True) -> None:
        """The outcome of an admitted request: a reply record, or a failed one (error set)."""
        ok = rec.get("error") is None
        if ok:
            self.usage.prompt_tokens += rec["usage"]["prompt_tokens"]
            self.usage.completion_tokens += rec["usage"]["completion_tokens"]
        else:
            self.usage.failed += 1
        if self.budget is not None:
            self.budget.settle(rec.get("usage") if ok else None, admitted=admitted)
        if store:
            self.keep(rec)
        self.results[req.key] = rec
        self.done()

    def keep(self, rec: dict) -> None:
        """Store a record without answering a request of this call (a reply an earlier batch brought)."""
        if self.store is not None:
            self.store.put(rec)


class Backend(Protocol):
    """How requests travel: the OpenAI protocol, the Batch API, vLLM or transformers in-process."""

    engine: str  # named in the report

    def send(self, reqs: list[Request], session: Session) -> None:
        """Send every request (each admitted first) and finish each in the session."""


def run_cached(backend: Backend, reqs: list[Request], store: RequestStore | None = None, budget: Budget | None = None,
               on_done: Callable[[], None] | None = None) -> tuple[list[dict], Usage]:
    """Replies for reqs in order: from the store when finished before, else sent once through the backend.

    A request repeated within reqs is sent once; the repeats count as cache hits.
    """
    s = Session(store, budget, on_done)
    todo: list[Request] = []
    queued: set[str] = set()
    for r in reqs:
        if r.key in queued:
            s.usage.cache_hits += 1
            s.done()
        elif store is not None and (rec := store.get(r.key)) is not None:
            s.usage.cache_hits += 1
            s.results[r.key] = rec
            queued.add(r.key)
            s.done()
        else:
            queued.add(r.key)
            todo.append(r)
    if todo:
        backend.send(todo, s)
    return [s.results[r.key] for r in reqs], s.usage
