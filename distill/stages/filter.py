"""The filter stage: generated.jsonl -> train.jsonl + dropped.jsonl + stats/filter.json + a HF dataset.

Nothing is deleted silently: every row of generated.jsonl ends up in exactly one of train.jsonl
and dropped.jsonl (failed teacher requests are dropped at stage "generate" with their error). The
stage owns the whole filter chain: its leading filters on inputs run over every row, the rows
generation did not send included (they drop them again, with their reason).
"""
from __future__ import annotations

import time

from distill.config import ConfigError
from distill.filters import FilterContext, before_answer, run_filters
from distill.io import DataError, read_jsonl, write_jsonl
from distill.progress import progress_bar
from distill.records import Message, Row
from distill.stages.context import RunContext, writes
from distill.stages.dataset import export_dataset
from distill.stats import FilterStats, GenerateStats
from distill.teacher import Request, RequestStore, TeacherFatal, Usage, response_format, teacher_cost


@writes
def run(ctx: RunContext) -> FilterStats:
    t0 = time.perf_counter()
    rd = ctx.dir
    if not rd.generated.exists():
        raise FileNotFoundError(f"{rd.generated}: not found (run `distill generate` first)")
    generated = [Row.from_dict(g) for g in read_jsonl(rd.generated)]
    check_whole(rd, len(generated))
    teacher = FilterTeacher(ctx)
    fctx = FilterContext(task=ctx.task, seeds=ctx.seeds, eval_rows=ctx.all_eval_rows, teacher=teacher)
    specs = ctx.cfg.filter_specs()
    k = before_answer(specs)

    # the filters on inputs see every row, as generation saw them when it chose what not to send
    on_inputs, dropped_first, stages = run_filters(specs[:k], generated, fctx)
    stages = [{**st, "before_answer": True} for st in stages]  # what generation did not send
    check_answered(on_inputs, rd.generated)
    ledger = [{"id": g.id, "stage": "generate", "reason": g.error or "failed", **({"raw": g.raw} if g.raw is not None else {})}
              for g in on_inputs if g.status == "failed"]
    kept, dropped, rest = run_filters(specs[k:], [g for g in on_inputs if g.ok], fctx)
    ledger += dropped_first + dropped
    stages += rest

    write_jsonl(rd.train, [r.to_kept_dict() for r in kept])
    write_jsonl(rd.dropped, ledger)
    if len(kept) + len(ledger) != len(generated):
        raise RuntimeError(f"{len(generated)} rows in, {len(kept)} kept + {len(ledger)} dropped out: "
                           "a filter lost or duplicated rows")

    by_source = {}
    for r in kept:
        src = r.meta.get("source", "teacher")
        by_source[src] = by_source.get(src, 0) + 1
    stats = FilterStats(
        generated=len(generated), failed_generation=sum(1 for g in generated if g.status == "failed"), kept=len(kept),
        kept_by_source=by_source, kept_with_edit=sum(1 for r in kept if r.input != r.output), dropped=len(ledger),
        stages=stages, wall_seconds=round(time.perf_counter() - t0, 2),
        teacher=teacher.stats() if teacher.used else None)
    export_dataset(ctx, kept, stats)
    stats.write(rd.stats("filter"))
    return stats


def check_whole(rd, rows: int) -> None:
    """generated.jsonl holds every row generation wrote (a file cut at a line boundary parses clean)."""
    if rd.stats("generate").exists():
        made = GenerateStats.read(rd.stats("generate")).counts.rows
        if made and rows != made:
            raise DataError(f"{rd.generated}: {rows} rows, but generation wrote {made} (stats/generate.json): the file "
                            "was cut or edited; run `distill generate` again (it rebuilds the file from the request "
                            "store without sending anything twice)")


def check_judged(label: str, replies: list[dict], usage: Usage) -> None:
    """Stop the stage (one line) when the teacher stopped for good or failed every request of a filter:
    its drops would say nothing about the rows, and keeping none would pass as a verdict."""
    if usage.fatal:
        raise TeacherFatal(f"filter '{label}': teacher: {usage.fatal}")
    if replies and usage.failed == len(replies) and all(r.get("parsed") is None for r in replies):
        common = max(usage.errors, key=usage.errors.get) if usage.errors else "no reply"
        raise TeacherFatal(f"filter '{label}': every one of its {len(replies)} teacher requests failed (most common "
                           f"error: {common}); nothing was judged: fix the teacher and run `distill filter` again")


def check_answered(rows: list[Row], generated) -> None:
    """A row generation did not send must be dropped by the same filters on inputs now: otherwise they
    changed since, and it has no answer to train on."""
    if unasked := [r for r in rows if r.status == "unasked"]:
        raise ConfigError(f"filters: {generated} has {len(unasked)} rows the teacher was never asked about (the "
                          "filters on inputs dropped them then) that the configured filters now keep: run "
                          "`distill generate` again")


class FilterTeacher:
    """The teacher as filters see it (`FilterContext.teacher`): started on the first request only,
    replies kept in the run's request store (writer "filters"), so a re-run asks nothing twice, and
    usage and cost add up for the report like generation's."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.usage: list[dict] = []
        self.busy_s = 0.0
        self.used = False

    def structured(self, messages: list[list[Message]], schema: dict, label: str, *, max_tokens: int = 16,
                   model: str | None = None) -> list[dict]:
        cfg, rd = self.ctx.cfg, self.ctx.dir
        self.used = True
        fmt = response_format(cfg, schema, label)
        params = {"temperature": 0.0, "max_tokens": max_tokens, **({"response_format": fmt} if fmt else {})}
        reqs = [Request.make(model or cfg.teacher.model, m, **params) for m in messages]
        teacher = self.ctx.teacher()
        store = RequestStore(rd.requests(), writer="filters", journal=rd.batches("filters"))
        t0 = time.perf_counter()
        try:
            with progress_bar(len(reqs), label) as advance:
                replies, usage = teacher.structured(reqs, schema, store, None, advance)
        finally:
            store.close()
        if usage.requests_sent:
            self.busy_s += time.perf_counter() - t0
        self.usage.append(usage)
        check_judged(label, replies, usage)
        return replies

    def stats(self) -> dict:
        cfg = self.ctx.cfg
        u = Usage.merge(self.usage).model_dump(exclude={"wall_seconds", "cost_usd", "cost_rule", "finished_at"})
        cost = teacher_cost(cfg, u["prompt_tokens"], u["completion_tokens"], self.busy_s)
        return {"model": cfg.teacher.model, **u, "busy_seconds": round(self.busy_s, 2),
                "cost_usd": cost["usd"], "cost_rule": cost["rule"]}
