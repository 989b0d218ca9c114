"""The evaluate stage: one harness for every model: same eval rows, same parsing, same metrics, same hardware.

Which models: `eval_models.py`. Their answers, engine by engine: `answer.py`. Here, per eval set: every
model's metrics, each with its paired-bootstrap interval, the primary metric's difference to the
teacher (`distill.report.intervals`); on the headline set also the cascade row and the cost, from a
separate serving measurement on one engine (`serving.py`; a hosted teacher is priced per token).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from distill.io import Examples, references, write_jsonl
from distill.report.intervals import compare, difference, metric_intervals, scorer
from distill.stages import cascade, judge_eval
from distill.stages.answer import Answered, answer_all
from distill.stages.context import RunContext, writes
from distill.stages.eval_models import TEACHER_STEPS, InProcess, Progression, in_process_models, model_key
from distill.stages.serving import Served, measure, teacher_weights
from distill.stats import EvalSummary, ModelResult
from distill.teacher import cost_of
from distill.text import detokenize, tokenize


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


@writes
def run(ctx: RunContext) -> EvalSummary:
    """Every model answers each eval set (`answer.py`) and is scored with intervals; the headline set
    also gets the cascade and the serving measurement. Writes eval/<set file>/<model>.jsonl and
    summary.json per set; returns the headline set's summary."""
    cfg = ctx.cfg
    steps = Progression(ctx)
    local = in_process_models(ctx, steps)
    first = model_key(cfg.eval.cascade.student) if cfg.eval.cascade.enabled else None
    summary = evaluate_set(ctx, cfg.eval.name, ctx.eval_rows, cfg.eval.tokenized, local, steps, first)
    for name, rows in ctx.eval_sets.items():
        evaluate_set(ctx, name, rows, cfg.eval.sets[name].tokenized, local, steps, None)
    return summary


def evaluate_set(ctx: RunContext, name: str, rows: Examples, tokenized: bool, local: list[InProcess],
                 steps: Progression, first: str | None) -> EvalSummary:
    """One eval set through the harness; the headline set (the context's own eval rows) is also priced."""
    cfg, task, t0, headline = ctx.cfg, ctx.task, time.perf_counter(), rows is ctx.eval_rows
    path, rows = rows.path, rows[: cfg.eval.max_rows] if cfg.eval.max_rows else list(rows)
    asked = [{**r, "input": detokenize(r["input"])} for r in rows] if tokenized else rows
    answered = answer_all(ctx, asked, local, steps, first)
    results, predictions = {}, {}
    for key, a in answered.items():
        results[key], predictions[key] = score(ctx, rows, a, path, tokenized)
    if first:
        _add_cascade(ctx, rows, first, results, predictions, {k: a.answers for k, a in answered.items()}, path)
    add_intervals(ctx, rows, results, predictions)
    spent = sum(a.cost["usd"] for a in answered.values())
    if headline:
        spent += _serving_cost(ctx, asked, local, steps, results)
    if first:
        cascade.price(results["cascade"], results[first], results["teacher"])
    srcs, refs = [r["input"] for r in rows], [references(r) for r in rows]
    trivial, answers = task.baseline(srcs, list(ctx.seeds))
    judged = judge_eval.judge(ctx, rows, predictions) if headline and cfg.eval.judge.enabled else None
    summary = EvalSummary(name=name, eval_path=str(path), n=len(rows), primary_metric=task.primary_metric,
                          tokenized=tokenized, baseline=task.metrics(answers, refs, srcs), baseline_name=trivial,
                          models=results, judge=judged,
                          wall_seconds=round(time.perf_counter() - t0, 2), cost_usd=round(spent, 6))
    summary.write(ctx.dir.eval_summary(path))
    return summary


def score(ctx: RunContext, rows: list[dict], a: Answered, path: Path, tokenized: bool) -> tuple[ModelResult, list[str]]:
    """One model's metrics, latency and quality-pass cost; its predictions file written. On a tokenised
    set the answers are tokenised like the references before scoring."""
    task, refs = ctx.task, [references(r) for r in rows]
    preds = [task.parse_answer(x["raw"]) if x["error"] is None else "" for x in a.answers]
    if tokenized:
        preds = [tokenize(p) for p in preds]
    lat = [x["latency_s"] for x in a.answers]
    per_1k = round(a.cost["usd"] / len(rows) * 1000, 7)
    result = ModelResult(
        name=a.name, role=a.role, engine=a.engine, parameters=a.parameters, prompt=a.prompt,
        metrics=task.metrics(preds, refs, [r["input"] for r in rows]), n=len(rows),
        failed=sum(x["error"] is not None for x in a.answers), latency_p50_s=round(_percentile(lat, 50), 4),
        latency_p95_s=round(_percentile(lat, 95), 4), latency_rule=QUALITY_PASS_LATENCY,
        throughput_rps=round(len(rows) / a.wall, 3) if a.wall else None,
        wall_seconds=round(a.wall, 2), prompt_tokens=sum(x["prompt_tokens"] for x in a.answers),
        cached_tokens=sum(x.get("cached_tokens", 0) for x in a.answers),
        completion_tokens=sum(x["completion_tokens"] for x in a.answers), cost_per_1k_usd=per_1k,
        quality_pass_cost_per_1k_usd=per_1k, cost_rule=a.cost["rule"],
        breakdown=task.breakdown(preds, [r["output"] for r in rows]))
    write_jsonl(ctx.dir.predictions(path, a.key), prediction_records(rows, preds, a.answers))
    return result, preds


QUALITY_PASS_LATENCY = "the quality pass: send to reply, the other eval requests in flight (queue and shared batch included)"
PROMPT_ONLY = ("base student", "prompted base student", "teacher", "prompted teacher")  # the steps before fine-tuning


def add_intervals(ctx: RunContext, rows: list[dict], results: dict[str, ModelResult],
                  predictions: dict[str, list[str]]) -> None:
    """The primary metric's paired-bootstrap interval for every model, its difference to the teacher,
    each prompt-only step's difference to every distilled student (was fine-tuning needed?), and a
    student made elsewhere (merged, joint) its difference to the run's own."""
    task, n, seed, b = ctx.task, len(rows), ctx.cfg.seed, ctx.cfg.eval.bootstrap_resamples
    metric, refs, srcs = task.primary_metric, [references(r) for r in rows], [r["input"] for r in rows]
    scorers = {k: scorer(task, metric, p, refs, srcs) for k, p in predictions.items()}
    for k, iv in compare(scorers, n, against="teacher" if "teacher" in results else None, seed=seed,
                         n_resamples=b).items():
        results[k].interval, results[k].vs_teacher = iv["interval"], iv.get("vs_teacher")
        results[k].intervals = metric_intervals(task, list(results[k].metrics), predictions[k], refs, srcs, seed=seed,
                                                n_resamples=b)
    students = [k for k, r in results.items() if r.role == "distilled student"]
    for k, r in results.items():
        if r.role in PROMPT_ONLY and students:
            r.vs_student = {s: difference(scorers[k], scorers[s], n, seed=seed, n_resamples=b) for s in students}
    if "student" in scorers:  # a multi-task run's merged and joint students against the task's own
        for name in ctx.also_students:
            results[model_key(name)].vs_separate = difference(scorers[model_key(name)], scorers["student"], n, seed=seed,
                                                              n_resamples=b)


def _add_cascade(ctx: RunContext, rows, first: str, results: dict[str, ModelResult], predictions: dict, answers: dict,
                 path: Path):
    cfg, task = ctx.cfg, ctx.task
    target = cfg.eval.cascade.quality_target or cfg.quality_target or 1.0
    s, t = results[first], results["teacher"]
    res, preds, ans = cascade.cascade_result(task, task.primary_metric, s, t, answers[first], answers["teacher"],
                                             predictions[first], predictions["teacher"], rows,
                                             target * t.metrics[task.primary_metric], target)
    results["cascade"], predictions["cascade"] = res, preds
    write_jsonl(ctx.dir.predictions(path, "cascade"), prediction_records(rows, preds, ans))


def prediction_records(rows: list[dict], preds: list[str], answers: list[dict]) -> list[dict]:
    """eval/<file>/<model>.jsonl: each row with its reference(s), the parsed prediction and the raw answer."""
    return [{"id": r["id"], "input": r["input"], "reference": r["output"],
             **({"references": r["references"]} if len(references(r)) > 1 else {}), "prediction": p, **a}
            for r, p, a in zip(rows, preds, answers)]


def _serving_cost(ctx: RunContext, rows, local: list[InProcess], steps: Progression,
                  results: dict[str, ModelResult]) -> float:
    """Replace the quality pass's cost figures by the serving measurement's; returns what measuring cost."""
    cfg, task, sv = ctx.cfg, ctx.task, ctx.cfg.eval.serving
    sample = rows[:sv.requests]
    served = [Served(m.key, m.path, [m.messages(r["input"]) for r in sample], m.hardware) for m in local]
    weights, how = teacher_weights(cfg, ctx.dir) if "teacher" in results else (None, "")
    if weights is not None:
        teachers = {"teacher": lambda x: ctx.shots, **{k: steps.shots(k) for k in TEACHER_STEPS if k in results}}
        served[:0] = [Served(k, weights, [task.teacher_messages(r["input"], shots(r["input"])) for r in sample],
                             cfg.teacher.hardware) for k, shots in teachers.items()]
    t0 = time.perf_counter()
    measured = measure(served, cfg.pricing, rounds=sv.rounds, batch_size=sv.batch_size or cfg.eval.batch_size,
                       max_new_tokens=cfg.eval.max_new_tokens, threads=sv.threads, precision=sv.precision,
                       latency_requests=sv.latency_requests,
                       trust_remote_code=cfg.student.trust_remote_code)
    wall = time.perf_counter() - t0
    for key, m in measured.items():
        r = results[key]
        r.serving = {**m, "weights": how if key == "teacher" or key in TEACHER_STEPS else "safetensors"}
        r.cost_per_1k_usd = m["cost_per_1k_usd"]
        r.latency_p50_s, r.latency_p95_s = (round(_percentile(m["latency_s"], q), 4) for q in (50, 95))
        r.latency_rule = (f"{len(m['latency_s'])} requests, each alone (a batch of one, warm) on the serving "
                          "measurement's engine: wall seconds")
        r.cost_rule = (f"serving measurement: median of {m['rounds']} interleaved rounds of {m['requests']} requests "
                       f"on {m['engine']}, ${m['usd_per_hour']:g}/h on {m['hardware']}"
                       + (f"; the {m['cached_tokens']}-token shared prompt prefix computed once (prompt cache)"
                          if m.get("cached_tokens") else "")
                       + (f"; weights: {how}" if key == "teacher" or key in TEACHER_STEPS else "")
                       + (f"; the same weights and prompts as {m['measured_as']}: its figures" if "measured_as" in m else ""))
    if weights is None and measured and not cfg.teacher.hosted:
        for key in [k for k in ("teacher", *TEACHER_STEPS) if k in results]:
            results[key].cost_note = f"engines differ: the teacher is priced as {how}"
    return cost_of(cfg.pricing, hosted=False, model="", hardware=cfg.student.hardware, prompt_tokens=0,
                   completion_tokens=0, seconds=wall)["usd"] if measured else 0.0
