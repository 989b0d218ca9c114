"""The generate stage: seeds -> the adapted teacher -> data/generated.jsonl (see `shards.py` for the
two phases). Every request goes through the request store, so a re-run sends only what never
finished and row ids (hashes of the requests that made them) come out identical.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from distill.config import Config
from distill.filters import FilterContext, before_answer, run_filters
from distill.io import AppendLog, write_jsonl
from distill.records import Row
from distill.rundir import RunDir
from distill.stages.adapt import adapt_teacher
from distill.stages.context import RunContext, few_shot_examples, writes
from distill.stages.shards import ShardJob, answer_shard, candidate_row, input_plans, input_shard, worker_id
from distill.stats import GenerateCounts, GenerateStats, TeacherUsage
from distill.tasks import Task
from distill.teacher import TeacherFatal, Usage, estimate_tokens, teacher_cost

# How the shards of a phase are run: (shard function, argument tuples) -> results in order. The flow
# passes one that submits them as Prefect tasks to its task runner.
MapShards = Callable[[Callable[..., dict], list[tuple]], list[dict]]


def sequential(fn: Callable[..., dict], calls: list[tuple]) -> list[dict]:
    return [fn(*args) for args in calls]


@writes
def run(ctx: RunContext, map_shards: MapShards = sequential) -> GenerateStats:
    """Adapt the teacher (once), then both phases over generation.shards shards, then one generated.jsonl.

    Rows come out in the same order, with the same ids and texts, whatever the shard count or runner.
    """
    adapt_teacher(ctx)
    cfg, rd, seeds = ctx.cfg, ctx.run, ctx.seeds
    g, n = cfg.generation, cfg.generation.shards
    spent = spent_so_far(cfg, rd)
    t_start = time.perf_counter()
    job = ShardJob(cfg, rd, ctx.teacher(), seeds, ctx.shots, n)

    made = ctx.task.programmatic_inputs(cfg.seed, g.input_requests * g.inputs_per_request,
                                        {r["input"] for r in seeds + ctx.eval_rows})
    if made is not None:  # inputs made by code, with their answers: no Self-Instruct requests
        parts_in = [{"candidates": [], "failed": 0, "usage": Usage().as_dict(), "worker": worker_id(), "cut_short": None}]
        candidates = [{"id": "p-" + hashlib.sha256(m["input"].encode()).hexdigest()[:16], "text": m["input"],
                       "reference": m["output"], "seed_ids": [], "topic": ""} for m in made]
    else:
        parts_in = map_shards(input_shard, [(job, i, spent) for i in range(n)])
        candidates = [c for _, c in sorted((c for p in parts_in for c in p["candidates"]), key=lambda ic: ic[0])]
    usage_in = Usage.merge([p["usage"] for p in parts_in])
    if usage_in.fatal:
        raise TeacherFatal(f"teacher: {usage_in.fatal}")
    if g.max_inputs:
        candidates = candidates[: g.max_inputs]

    sent_in = usage_in.requests_sent - usage_in.retries
    cost_in = teacher_cost(cfg, usage_in.prompt_tokens, usage_in.completion_tokens,
                           time.perf_counter() - t_start if sent_in else 0.0)["usd"]
    spent = (spent[0] + sent_in, spent[1] + cost_in)
    seed_rows = [Row.from_seed(s) for s in seeds]
    unasked = [candidate_row(cfg, ctx.task, c) for c in candidates]
    before = filter_before_answering(ctx, seed_rows + unasked)
    ask = [(i, c) for i, (c, row) in enumerate(zip(candidates, unasked)) if row.ok]
    parts_ans = map_shards(answer_shard, [(job, i, spent, ask[i::n]) for i in range(n)])
    usage_ans = Usage.merge([p["usage"] for p in parts_ans])
    answered = [ir for p in parts_ans for ir in p["rows"]]
    dropped = [[i, row.to_dict()] for i, row in enumerate(unasked) if not row.ok]
    rows = [r for _, r in sorted(answered + dropped, key=lambda ir: ir[0])]
    all_rows = [r.to_dict() for r in seed_rows] + rows
    wall = time.perf_counter() - t_start
    cut = [p["cut_short"] for p in parts_in + parts_ans if p["cut_short"]]
    stats = _write_stats(cfg, rd, usage_in, usage_ans, wall, GenerateCounts(**{
        "input_requests": g.input_requests, "failed_input_requests": sum(p["failed"] for p in parts_in),
        "parsed_inputs": len(candidates), "rows": len(all_rows), "seed_rows": len(seed_rows),
        "teacher_rows_ok": sum(r["status"] == "ok" for r in rows),
        "teacher_rows_failed": sum(r["status"] == "failed" for r in rows),
        "teacher_rows_dropped": len(dropped), "filtered_before_answer": before,
        "few_shot_ids": [s["id"] for s in ctx.shots],
        "shards": n, "shard_workers": sorted({p["worker"] for p in parts_in + parts_ans}),
        "cut_short": cut[0] if cut else None,
    }))
    if usage_ans.fatal:
        raise TeacherFatal(f"teacher: {usage_ans.fatal}")
    if not stats.counts.teacher_rows_ok and not cut and not g.seeds_only_ok:
        raise TeacherFatal(no_usable_row(stats))
    write_jsonl(rd.generated, all_rows)
    return stats


def filter_before_answering(ctx: RunContext, rows: list[Row]) -> list[dict]:
    """Run the leading filters that need no answer (`register_filter(before_answer=...)`: the dedups
    on inputs) over the seed rows and the unanswered candidates, in the order the filter stage sees
    them, and mark each row they drop (status "dropped", meta "dropped": its ledger entry): the teacher
    is never asked about it. Returns those stages' statistics, which the filter stage reports as its
    own first stages. Their verdicts are the same as after answering; only a duplicate of an input
    whose answer then fails is not asked in its place."""
    specs = ctx.cfg.filter_specs()
    k = before_answer(specs)
    if not k:
        return []
    fctx = FilterContext(task=ctx.task, seeds=ctx.seeds, eval_rows=ctx.eval_rows)
    _, ledger, stages = run_filters(specs[:k], rows, fctx)
    by_id = {e["id"]: e for e in ledger}
    for r in rows:
        if r.id in by_id:
            r.status, r.meta["dropped"] = "dropped", {"stage": by_id[r.id]["stage"], "reason": by_id[r.id]["reason"]}
    # no seconds: a resumed generation's statistics come out the same
    return [{**{key: v for key, v in st.items() if key != "seconds"}, "before_answer": True} for st in stages]


def no_usable_row(stats: GenerateStats) -> str:
    """Why a generation that sent requests made no row, in one line (the run stops rather than train on seeds alone)."""
    c, u = stats.counts, stats.last
    common = max(u.errors, key=u.errors.get) if u.errors else None
    return (f"teacher: no usable row: {c.failed_input_requests} of {c.input_requests} input requests failed, "
            f"{c.parsed_inputs} inputs parsed, {c.teacher_rows_failed} answers failed"
            + (f" (most common error: {common} x{u.errors[common]})" if common else "")
            + "; see data/requests.jsonl, or set generation.seeds_only_ok=true to train on the seeds alone")


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


def dry_run_plan(config: Path | None, run_dir: Path | None, overrides: list[str]) -> dict:
    """What `generate --dry-run` prints: the run's (or the given) config checked, the plan made, nothing sent or written."""
    from distill.config import load_config
    from distill.stages.preflight import preflight

    saved = RunDir(run_dir).config if run_dir else None
    cfg = load_config(config or (saved if saved and saved.exists() else None), overrides)
    inputs = preflight(cfg, ())  # every file checked; the teacher is not probed
    return plan_generation(cfg, inputs.task, inputs.seeds)


def plan_generation(cfg: Config, task: Task, seeds: list[dict]) -> dict:
    """What a generate run would ask of the teacher, without asking: for --dry-run.

    Answer counts and completion tokens are upper bounds (every requested input parsed, every reply
    at max_tokens); prompt tokens are estimated at ~4 characters a token.
    """
    g, t = cfg.generation, cfg.teacher
    plans = input_plans(cfg, task, seeds)
    shots = few_shot_examples(cfg, seeds, task)
    answers = g.input_requests * g.inputs_per_request * g.samples_per_input
    if g.max_inputs:
        answers = min(answers, g.max_inputs * g.samples_per_input)
    avg_answer_prompt = sum(estimate_tokens(task.teacher_messages(s["input"], shots)) for s in seeds) / len(seeds)
    prompt_tokens = sum(estimate_tokens(p[0].message_dicts()) for p in plans) + int(answers * avg_answer_prompt)
    completion_tokens = g.input_requests * g.input_max_tokens + answers * t.max_tokens
    seconds = completion_tokens / t.budget.expected_output_tokens_per_s
    cost = teacher_cost(cfg, prompt_tokens, completion_tokens, seconds)
    return {"teacher": t.model, "input_requests": g.input_requests, "answer_requests_at_most": answers,
            "requests_at_most": g.input_requests + answers, "prompt_tokens_est": prompt_tokens,
            "completion_tokens_at_most": completion_tokens, "cost_usd_at_most": cost["usd"], "cost_rule": cost["rule"],
            "max_requests": t.budget.max_requests, "max_cost_usd": t.budget.max_cost_usd}


def _write_stats(cfg: Config, rd: RunDir, usage_in: Usage, usage_ans: Usage, wall: float,
                 counts: GenerateCounts) -> GenerateStats:
    u = {k: getattr(usage_in, k) + getattr(usage_ans, k)
         for k in ("requests_sent", "cache_hits", "retries", "failed", "skipped", "prompt_tokens", "completion_tokens")}
    u["errors"] = dict(Counter(usage_in.errors) + Counter(usage_ans.errors))
    # Only time spent waiting on requests that were actually sent costs money; a fully cached re-run is free.
    busy = wall if u["requests_sent"] else 0.0
    cost = teacher_cost(cfg, u["prompt_tokens"], u["completion_tokens"], busy)
    this = TeacherUsage(**u, wall_seconds=round(wall, 2), cost_usd=cost["usd"], cost_rule=cost["rule"],
                        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    history = [*GenerateStats.read(rd.stats("generate")).invocations, this]
    totals = TeacherUsage(**{k: sum(getattr(h, k) for h in history) for k in
                             ("requests_sent", "cache_hits", "retries", "failed", "skipped", "prompt_tokens",
                              "completion_tokens", "wall_seconds", "cost_usd")})
    stats = GenerateStats(teacher=cfg.teacher.model, counts=counts, last=this, totals=totals, invocations=history)
    stats.write(rd.stats("generate"))
    return stats
