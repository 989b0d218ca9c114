"""The evaluation's pairwise judge (eval.judge): for each judged model and eval row, which is better,
its answer or the comparison answer (the teacher's, or the reference)? Asked in both orders through the
run's request store (writer "judge": a re-run asks nothing twice), within the teacher's budget, costed in
the bill; the outcomes and rates come from `distill.report.pairwise`."""
from __future__ import annotations

import time
from contextlib import ExitStack, closing
from dataclasses import replace

from distill.config import Config
from distill.io import references, write_jsonl
from distill.progress import progress_bar
from distill.report.pairwise import outcome, rates, self_preference
from distill.stages.context import RunContext
from distill.stats import Usage
from distill.teacher import (
    Request,
    RequestStore,
    TeacherFatal,
    make_budget,
    open_teacher,
    response_format,
    spent_so_far,
    teacher_cost,
)

VERDICT_SCHEMA = {"type": "object", "properties": {"better": {"type": "string", "enum": ["A", "B", "tie"]}},
                  "required": ["better"], "additionalProperties": False}
SAME = "same answer"  # identical answers are a tie without asking


def judge_config(cfg: Config) -> Config:
    """The run's config with the judge as its teacher: the judge's model, endpoint and pricing, asked
    request by request (what the request store keys, the backend sends and the bill prices)."""
    j, t = cfg.eval.judge, cfg.teacher
    judge = t.model_copy(update={"model": j.model or t.model, "backend": "openai" if own_judge(cfg) else t.backend,
                                 "endpoint": j.endpoint or t.endpoint,
                                 "hosted": t.hosted if j.hosted is None else j.hosted, "hardware": j.hardware or t.hardware})
    return cfg.model_copy(update={"teacher": judge})


def own_judge(cfg: Config) -> bool:
    """Whether the judge is opened apart from the run's teacher: on its own endpoint, or on the teacher's
    when the teacher is asked through the Batch API (a judge is asked request by request)."""
    return cfg.eval.judge.endpoint is not None or cfg.teacher.backend == "openai_batch"


def judged_keys(ctx: RunContext, predictions: dict[str, list[str]]) -> list[str]:
    """The models the judge compares: eval.judge.models, else every one but the comparison itself."""
    j = ctx.cfg.eval.judge
    keys = [k for k in predictions if not (j.against == "teacher" and k == "teacher")]
    return [k for k in keys if k in j.models] if j.models is not None else keys


def judge(ctx: RunContext, rows: list[dict], predictions: dict[str, list[str]]) -> dict:
    """Every judged model against the comparison answer on the headline set: the verdicts file, and per
    model its outcome counts and rates with intervals; the judge's name, usage, cost and warning."""
    cfg, task, j = ctx.cfg, ctx.task, ctx.cfg.eval.judge
    jcfg = judge_config(cfg)
    other = predictions["teacher"] if j.against == "teacher" else [references(r)[0] for r in rows]
    keys = judged_keys(ctx, predictions)
    asks, reqs = [], []  # (key, row index, order) per request
    model = jcfg.teacher.model
    fmt = response_format(jcfg, VERDICT_SCHEMA, "judge")
    params = {"temperature": 0.0, "max_tokens": j.max_tokens, **({"response_format": fmt} if fmt else {})}
    for key in keys:
        for i, (r, mine, theirs) in enumerate(zip(rows, predictions[key], other)):
            if mine.strip() == theirs.strip():
                continue
            for order, (a, b) in (("model first", (mine, theirs)), ("model second", (theirs, mine))):
                asks.append((key, i, order))
                reqs.append(Request.make(model, task.pairwise_messages(r["input"], a, b), **params))
    replies, usage, busy = _ask(ctx, jcfg, reqs)
    verdicts: dict[tuple[str, int], dict[str, str | None]] = {}
    for (key, i, order), rep in zip(asks, replies):
        parsed = rep.get("parsed") or {}
        verdicts.setdefault((key, i), {})[order] = parsed.get("better")
    records, out = [], {}
    for key in keys:
        got = [verdicts.get((key, i)) for i in range(len(rows))]
        results = [outcome(v["model first"], v["model second"]) if v else "tie" for v in got]
        records += [{"model": key, "id": r["id"], "model_first": v["model first"] if v else SAME,
                     "model_second": v["model second"] if v else SAME, "outcome": o}
                    for r, v, o in zip(rows, got, results)]
        out[key] = {**rates(results, seed=cfg.seed, n_resamples=cfg.eval.bootstrap_resamples),
                    "same_answer": sum(v is None for v in got)}
    write_jsonl(ctx.dir.judgements(ctx.eval_path), records)
    cost = teacher_cost(jcfg, usage.prompt_tokens, usage.completion_tokens, busy, batch=False)
    return {"judge": model, "against": j.against, "warning": self_preference(model, cfg.teacher.model, j.against),
            "models": out, "requests_sent": usage.requests_sent, "cache_hits": usage.cache_hits,
            "failed": usage.failed, "cost_usd": cost["usd"], "cost_rule": cost["rule"]}


def _ask(ctx: RunContext, jcfg: Config, reqs: list[Request]):
    """The verdicts through the request store, admitted within what the run's teacher budget has left: on
    the teacher, or on the judge's own endpoint (opened here, closed here)."""
    if not reqs:
        return [], Usage(), 0.0
    rd = ctx.dir
    budget = make_budget(ctx.cfg, *spent_so_far(ctx.cfg, rd))
    with ExitStack() as stack:
        store = stack.enter_context(closing(RequestStore(rd.requests(), writer="judge", journal=rd.batches("judge"))))
        judge = stack.enter_context(open_teacher(jcfg)) if own_judge(ctx.cfg) else replace(ctx.teacher(), cfg=jcfg)
        t0 = time.perf_counter()
        with progress_bar(len(reqs), "pairwise judge") as advance:
            replies, usage = judge.structured(reqs, VERDICT_SCHEMA, store, budget, advance)
    if usage.fatal:  # a budget reached or a teacher gone: no verdict would mean anything
        raise TeacherFatal(f"eval.judge: {usage.fatal}")
    return replies, usage, (time.perf_counter() - t0) if usage.requests_sent else 0.0
