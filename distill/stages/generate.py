"""The generate stage: seeds -> the adapted teacher -> data/generated.jsonl (see `shards.py` for the
two phases). Every request goes through the request store, so a re-run sends only what never
finished and row ids (hashes of the requests that made them) come out identical. The teacher is
adapted before (`adapt.run`, a stage of its own).
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

from distill.config import Config
from distill.filters import FilterContext, not_to_send
from distill.io import read_jsonl, write_jsonl
from distill.records import Row
from distill.rundir import RunDir
from distill.stages.context import RunContext, few_shot_examples, prepare_run, writes
from distill.stages.round_plan import round_config
from distill.stages.shards import ShardJob, ShardResult, answer_shard, candidate_row, input_plans, input_shard, worker_id
from distill.stats import GenerateCounts, GenerateStats, Usage
from distill.tasks import Task
from distill.teacher import TeacherFatal, estimate_tokens, spent_so_far, teacher_cost

# How the shards of a phase are run: (shard function, argument tuples) -> results in order. The flow
# passes one that submits them as Prefect tasks to its task runner.
MapShards = Callable[[Callable[..., ShardResult], list[tuple]], list[ShardResult]]


def sequential(fn: Callable[..., ShardResult], calls: list[tuple]) -> list[ShardResult]:
    return [fn(*args) for args in calls]


@writes
def run(ctx: RunContext, map_shards: MapShards = sequential) -> GenerateStats:
    """Round 1: both phases over generation.shards shards, then one generated.jsonl: the seed rows, then
    every candidate input in order, answered, failed, or not asked (status "unasked": the filters on
    inputs drop it). Rows come out the same, with the same ids, whatever the shard count or runner."""
    cfg = round_config(ctx.cfg, 1)
    job = ShardJob(cfg, ctx.dir, ctx.teacher(), ctx.seeds, ctx.shots, cfg.generation.shards)
    return generate_rows(ctx, job, [Row.from_seed(s) for s in ctx.seeds], map_shards, round_no=1)


@writes
def targeted(ctx: RunContext, round_no: int, examples: list[dict], map_shards: MapShards = sequential) -> GenerateStats:
    """A later round: inputs like `examples` (rows a student got wrong), made by the task's code
    (`inputs_like`) or asked of the teacher in Self-Instruct requests that show them instead of seeds.
    The rows of the earlier rounds stay as they are (dedup and decontamination see them all); this
    round's are added after them."""
    cfg = round_config(ctx.cfg, round_no)
    job = ShardJob(cfg, ctx.dir, ctx.teacher(), examples, ctx.shots, cfg.generation.shards)
    earlier = [Row.from_dict(d) for d in read_jsonl(ctx.dir.generated)]
    return generate_rows(ctx, job, [r for r in earlier if round_of(r) < round_no], map_shards, round_no=round_no)


def generate_rows(ctx: RunContext, job: ShardJob, earlier: list[Row], map_shards: MapShards, *, round_no: int) -> GenerateStats:
    """One round's two phases; generated.jsonl rewritten as `earlier` and then this round's rows."""
    cfg, t0 = job.cfg, time.perf_counter()
    spent = spent_so_far(cfg, ctx.dir)
    candidates, inputs = new_inputs(ctx, job, spent, map_shards, earlier if round_no > 1 else None)
    spent = (spent[0] + inputs.usage.requests_sent - inputs.usage.retries,
             spent[1] + input_cost(cfg, inputs.usage, time.perf_counter() - t0))
    rows = [candidate_row(cfg, ctx.task, c) for c in candidates]
    fctx = FilterContext(task=ctx.task, seeds=ctx.seeds, eval_rows=ctx.all_eval_rows)
    skip = not_to_send(cfg.filter_specs(), earlier + rows, fctx)
    ask = [(i, c) for i, (c, row) in enumerate(zip(candidates, rows)) if row.id not in skip]
    n = job.shards
    answers = ShardResult.merge(map_shards(answer_shard, [(job, i, spent, ask[i::n]) for i in range(n)]))
    for i, row in answers.rows:
        rows[i] = row
    for row in rows:
        if row.id in skip:
            row.status = "unasked"
        if round_no > 1:
            row.meta["round"] = round_no
    stats = write_stats(cfg, ctx.dir, inputs, answers, time.perf_counter() - t0,
                        counts(ctx, job, len(candidates), earlier, rows, inputs, answers))
    check_usable(cfg, stats, answers)
    write_jsonl(ctx.dir.generated, [r.to_dict() for r in earlier + rows])
    return stats


def round_of(row: Row) -> int:
    return row.meta.get("round", 1)


def new_inputs(ctx: RunContext, job: ShardJob, spent: tuple[int, float], map_shards: MapShards,
               earlier: list[Row] | None = None) -> tuple[list[dict], ShardResult]:
    """Phase 1: the candidate inputs in plan order, made by the task's code when it can (round 1: its
    programmatic inputs; a later round, given the `earlier` rows: inputs like its examples) or asked of
    the teacher."""
    cfg, g = job.cfg, job.cfg.generation
    n, exclude = g.input_requests * g.inputs_per_request, {r["input"] for r in [*ctx.seeds, *ctx.all_eval_rows]}
    if earlier is None:
        made = ctx.task.programmatic_inputs(cfg.seed, n, exclude)
    else:
        made = ctx.task.inputs_like(job.seeds, cfg.seed, n, exclude | {r.input for r in earlier})
    if made is not None:  # inputs made by code, with their answers: no Self-Instruct requests
        result = ShardResult(workers=[worker_id()])
        candidates = [{"id": "p-" + hashlib.sha256(m["input"].encode()).hexdigest()[:16], "text": m["input"],
                       "reference": m["output"], "seed_ids": [], "topic": ""} for m in made]
    else:
        result = ShardResult.merge(map_shards(input_shard, [(job, i, spent) for i in range(job.shards)]))
        candidates = [c for _, c in sorted(result.candidates, key=lambda ic: ic[0])]
    if result.usage.fatal:
        raise TeacherFatal(f"teacher: {result.usage.fatal}")
    return candidates[: g.max_inputs] if g.max_inputs else candidates, result


def input_cost(cfg: Config, usage: Usage, seconds: float) -> float:
    sent = usage.requests_sent - usage.retries
    return teacher_cost(cfg, usage.prompt_tokens, usage.completion_tokens, seconds if sent else 0.0)["usd"]


def counts(ctx: RunContext, job: ShardJob, parsed: int, earlier: list[Row], rows: list[Row], inputs: ShardResult,
           answers: ShardResult) -> GenerateCounts:
    """This round's counts (rows and seed_rows: all of generated.jsonl)."""
    cut = inputs.cut_short or answers.cut_short
    return GenerateCounts(
        input_requests=job.cfg.generation.input_requests, failed_input_requests=inputs.failed, parsed_inputs=parsed,
        rows=len(earlier) + len(rows), seed_rows=sum(r.meta.get("source") == "seed" for r in earlier),
        teacher_rows_ok=sum(r.status == "ok" for r in rows), teacher_rows_failed=sum(r.status == "failed" for r in rows),
        teacher_rows_unasked=sum(r.status == "unasked" for r in rows), few_shot_ids=[s["id"] for s in ctx.shots],
        shards=job.shards, shard_workers=sorted(set(inputs.workers + answers.workers)), cut_short=cut)


def check_usable(cfg: Config, stats: GenerateStats, answers: ShardResult) -> None:
    """Stop (after the stats are written) when the teacher stopped for good or gave no usable row."""
    if answers.usage.fatal:
        raise TeacherFatal(f"teacher: {answers.usage.fatal}")
    c = stats.counts
    if not c.teacher_rows_ok and not c.cut_short and not cfg.generation.seeds_only_ok:
        raise TeacherFatal(no_usable_row(stats))


def no_usable_row(stats: GenerateStats) -> str:
    """Why a generation that sent requests made no row, in one line (the run stops rather than train on seeds alone)."""
    c, u = stats.counts, stats.last
    common = max(u.errors, key=u.errors.get) if u.errors else None
    return (f"teacher: no usable row: {c.failed_input_requests} of {c.input_requests} input requests failed, "
            f"{c.parsed_inputs} inputs parsed, {c.teacher_rows_failed} answers failed"
            + (f" (most common error: {common} x{u.errors[common]})" if common else "")
            + "; see data/requests.jsonl, or set generation.seeds_only_ok=true to train on the seeds alone")


def dry_run_plan(config: Path | None, run_dir: Path | None, overrides: list[str]) -> dict:
    """What `generate --dry-run` prints: the run's (or the given) config checked through the same
    `prepare_run` as a run, the plan made; nothing is sent, written or started."""
    ctx = prepare_run(config, run_dir, overrides, save=False, plan_only=True)
    return plan_generation(ctx.cfg, ctx.task, ctx.seeds) | {"prompts": example_prompts(ctx)}


def example_prompts(ctx: RunContext) -> dict[str, list[dict]]:
    """One Self-Instruct request and one answer request as the teacher would get them (the first of each)."""
    cfg, task, seeds = ctx.cfg, ctx.task, ctx.seeds
    out = {}
    if task.programmatic_inputs(cfg.seed, 1, set()) is None:
        out["a Self-Instruct request"] = input_plans(cfg, task, seeds, first=1)[0][0].message_dicts()
    out["an answer request"] = task.teacher_messages(seeds[0]["input"], ctx.shots)
    return out


PLAN_SAMPLE = 1000  # Self-Instruct requests a plan renders to estimate their prompt size


def plan_generation(cfg: Config, task: Task, seeds: list[dict]) -> dict:
    """What a generate run would ask of the teacher, without asking: for --dry-run.

    Answer counts and completion tokens are upper bounds (every requested input parsed, every reply
    at max_tokens); prompt tokens are estimated at ~4 characters a token.
    """
    g, t = cfg.generation, cfg.teacher
    sample = input_plans(cfg, task, seeds, first=PLAN_SAMPLE)  # the prompts' size from a sample: never enumerate
    shots = few_shot_examples(cfg, seeds, task)
    answers = g.input_requests * g.inputs_per_request * g.samples_per_input
    if g.max_inputs:
        answers = min(answers, g.max_inputs * g.samples_per_input)
    avg_input_prompt = sum(estimate_tokens(p[0].message_dicts()) for p in sample) / max(len(sample), 1)
    avg_answer_prompt = sum(estimate_tokens(task.teacher_messages(s["input"], shots)) for s in seeds) / len(seeds)
    prompt_tokens = int(g.input_requests * avg_input_prompt) + int(answers * avg_answer_prompt)
    completion_tokens = g.input_requests * g.input_max_tokens + answers * t.max_tokens
    seconds = completion_tokens / t.budget.expected_output_tokens_per_s
    cost = teacher_cost(cfg, prompt_tokens, completion_tokens, seconds)
    return {"teacher": t.model, "input_requests": g.input_requests, "answer_requests_at_most": answers,
            "requests_at_most": g.input_requests + answers, "prompt_tokens_est": prompt_tokens,
            "completion_tokens_at_most": completion_tokens, "cost_usd_at_most": cost["usd"], "cost_rule": cost["rule"],
            "max_requests": t.budget.max_requests, "max_cost_usd": t.budget.max_cost_usd}


def write_stats(cfg: Config, rd: RunDir, inputs: ShardResult, answers: ShardResult, wall: float,
                counts: GenerateCounts) -> GenerateStats:
    """This invocation's usage and cost appended to the run's history (stats/generate.json)."""
    this = Usage.merge([inputs.usage, answers.usage])
    # Only time spent waiting on requests that were actually sent costs money; a fully cached re-run is free.
    cost = teacher_cost(cfg, this.prompt_tokens, this.completion_tokens, wall if this.requests_sent else 0.0)
    this.wall_seconds, this.cost_usd, this.cost_rule = round(wall, 2), cost["usd"], cost["rule"]
    this.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S")
    history = [*GenerateStats.read(rd.stats("generate")).invocations, this]
    stats = GenerateStats(teacher=cfg.teacher.model, counts=counts, last=this, totals=Usage.merge(history),
                          invocations=history)
    stats.write(rd.stats("generate"))
    return stats
