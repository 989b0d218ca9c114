"""What the teacher costs: per token for hosted models, per busy second for self-hosted ones; what a
run has spent so far; and the budget that stops sending before a limit is crossed."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from distill.config import Config, Pricing
from distill.io import AppendLog
from distill.rundir import RunDir
from distill.stats import GenerateStats


def cost_of(pricing: Pricing, *, hosted: bool, model: str, hardware: str, prompt_tokens: int,
            completion_tokens: int, seconds: float, batch: bool = False, cached_tokens: int = 0) -> dict:
    """{"usd": ..., "rule": how it was priced}. `cached_tokens`: prompt tokens the provider read from its
    prompt cache, priced at its cached-input price when the config gives one."""
    if hosted:
        if model not in pricing.models:
            raise KeyError(f"pricing.models has no entry for hosted model '{model}'")
        p = pricing.models[model]
        cached = min(cached_tokens, prompt_tokens) if p.cached_input_per_1m is not None else 0
        usd = ((prompt_tokens - cached) * p.input_per_1m + cached * (p.cached_input_per_1m or 0.0)
               + completion_tokens * p.output_per_1m) / 1e6
        if batch:
            usd *= p.batch_discount
        rule = f"hosted tokens x price of {model}" + (" (batch)" if batch else "")
        if cached:
            rule += f"; {cached} prompt tokens from the provider's prompt cache at ${p.cached_input_per_1m:g}/1M"
        return {"usd": round(usd, 6), "rule": rule}
    if hardware not in pricing.hardware:
        raise KeyError(f"pricing.hardware has no entry for '{hardware}'")
    per_hour = pricing.hardware[hardware].usd_per_hour
    usd = seconds / 3600 * per_hour
    return {"usd": round(usd, 6), "rule": f"self-hosted {seconds:.1f} s x ${per_hour:g}/h on {hardware}"}


def teacher_cost(cfg: Config, prompt_tokens: int, completion_tokens: int, seconds: float,
                 batch: bool | None = None, cached_tokens: int = 0) -> dict:
    """The teacher's cost under its pricing rule.

    Generation through the Batch API is priced at the batch discount (batch=None: per the backend);
    the evaluation harness asks the real-time API and passes batch=False.
    """
    t = cfg.teacher
    if batch is None:
        batch = t.backend == "openai_batch"
    return cost_of(cfg.pricing, hosted=t.hosted, model=t.model, hardware=t.hardware, prompt_tokens=prompt_tokens,
                   completion_tokens=completion_tokens, seconds=seconds, batch=batch, cached_tokens=cached_tokens)


@dataclass
class Budget:
    """Admits a request only while the run stays within teacher.budget.max_requests and max_cost_usd.

    Counted over the whole run (earlier invocations included). Requests in flight are reserved at the
    estimated price, so concurrency cannot push spending over the limit.
    """

    max_requests: int | None
    max_cost_usd: float | None
    price: Callable[[int, int, float], float]  # (prompt tokens, completion tokens, busy seconds) -> USD
    sent_before: int = 0
    spent_before_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    admitted: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    exhausted: str | None = None
    limit: int | None = None  # the configured max_requests, for the message (max_requests is this share's)
    limit_usd: float | None = None  # the configured max_cost_usd, for the message (max_cost_usd is this share's)
    spent_earlier_usd: float = 0.0  # what earlier invocations spent, for the message

    def spent_usd(self) -> float:
        return self.spent_before_usd + self.price(self.prompt_tokens, self.completion_tokens,
                                                  time.monotonic() - self.started)

    def admit(self, est_prompt_tokens: int, est_completion_tokens: int, est_seconds: float) -> bool:
        if self.exhausted is None and self.max_requests is not None \
                and self.sent_before + self.admitted >= self.max_requests:
            self.exhausted = f"teacher.budget.max_requests={self.limit or self.max_requests} reached"
        if self.exhausted is None and self.max_cost_usd is not None:
            nxt = self.price(est_prompt_tokens, est_completion_tokens, est_seconds)
            if self.spent_usd() + nxt * (1 + self.in_flight) > self.max_cost_usd:
                limit = self.max_cost_usd if self.limit_usd is None else self.limit_usd
                self.exhausted = (f"teacher.budget.max_cost_usd={limit:g} would be exceeded "
                                  f"(spent ${self.spent_earlier_usd + self.spent_usd():.4f} so far)")
        if self.exhausted is not None:
            return False
        self.admitted += 1
        self.in_flight += 1
        return True

    def settle(self, usage: dict | None, admitted: bool = True) -> None:
        """A reply (or failure) for a request; admitted=False: one this run never admitted (a batch an
        earlier invocation submitted) whose spending still counts."""
        if admitted:
            self.in_flight -= 1
        if usage:
            self.prompt_tokens += usage.get("prompt_tokens", 0)
            self.completion_tokens += usage.get("completion_tokens", 0)


def spent_so_far(cfg: Config, rd: RunDir) -> tuple[int, float]:
    """(requests, USD) the run has spent on generation before this invocation. The stats file is written
    at the end of an invocation, so a killed one is missing from it; the sending files (a line per
    request with its reservation, written before it goes) and the store are not. A request sent but
    never answered (in flight at a kill) may still be billed: it counts at its reservation. Whichever
    of the two accounts is larger counts."""
    prev = GenerateStats.read(rd.stats("generate")).totals
    sending = [s for f in rd.sending_files() for s in AppendLog.read(f)]
    records = [r for f in rd.generation_requests() for r in AppendLog.read(f)]
    tokens = [r["usage"] for r in records if r.get("usage")]
    stored = teacher_cost(cfg, sum(u["prompt_tokens"] for u in tokens), sum(u["completion_tokens"] for u in tokens),
                          0.0)["usd"] if tokens else 0.0
    answered = Counter(r.get("key") for r in records)  # a record without one: the store names it when it opens
    unanswered = 0.0
    for s in sending:  # each send ends in one record (a reply or a failure) unless its process died first
        if answered[s["key"]] > 0:
            answered[s["key"]] -= 1
        else:
            unanswered += s.get("usd_at_most", 0.0)
    return max(prev.requests_sent - prev.retries, len(sending)), max(prev.cost_usd, stored + unanswered)


def make_budget(cfg: Config, spent_requests: int, spent_usd: float, shard: int = 0, shards: int = 1) -> Budget | None:
    """This shard's share of what the run may still spend (the whole remainder with one shard)."""
    b = cfg.teacher.budget
    if b.max_requests is None and b.max_cost_usd is None:
        return None
    max_requests = None
    if b.max_requests is not None:
        left = max(0, b.max_requests - spent_requests)
        max_requests = left // shards + (shard < left % shards)
    max_cost = None if b.max_cost_usd is None else max(0.0, b.max_cost_usd - spent_usd) / shards
    return Budget(max_requests, max_cost, lambda pt, ct, secs: teacher_cost(cfg, pt, ct, secs)["usd"],
                  limit=b.max_requests, limit_usd=b.max_cost_usd, spent_earlier_usd=spent_usd)
