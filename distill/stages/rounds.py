"""A later generation round (generation.rounds > 1): the student shows where it fails, then the teacher
is asked for inputs like those.

Round n trains a probing student on every row kept so far except probe_rows rows of round n-1, lets
it answer those probe rows (never an eval row), picks the ones it got wrong (`targets`), and sends
Self-Instruct requests that show them as examples (`generate.targeted`); the filter and train stages
then run again over every round's rows. All of it goes through the request store and the budget, so
a killed round resumes without resending, and the stats of generation count every round.
"""
from __future__ import annotations

import time
from pathlib import Path

from distill import faults
from distill.io import DataError, read_jsonl, references, write_jsonl
from distill.models.infer import generate_batched
from distill.models.load import base_student_dir, load_model
from distill.records import Row
from distill.report.intervals import compare, scorer
from distill.stages import generate
from distill.stages.context import RunContext, writes
from distill.stages.round_plan import round_requests, split_probes
from distill.stages.targets import Probe, targets
from distill.stages.train import to_prompt_completion, train_one
from distill.stats import RoundStats
from distill.text import detokenize, tokenize


@writes
def run(ctx: RunContext, round_no: int, map_shards: generate.MapShards = generate.sequential) -> RoundStats:
    """Round round_no (2 and up), after the filter stage has kept the rows of the rounds before it."""
    cfg, rd, t0 = ctx.cfg, ctx.dir, time.perf_counter()
    kept = [Row.from_dict(d) for d in read_jsonl(rd.train)] if rd.train.exists() else []
    probes, rest = split_probes(kept, round_no, cfg.generation.probe_rows, cfg.seed)
    if not probes:
        raise DataError(f"{rd.train}: no kept row of round {round_no - 1} to probe the student with "
                        f"(generation.rounds={cfg.generation.rounds}); see data/dropped.jsonl")
    student = probing_student(ctx, round_no, rest)
    weights = load_model(student, trust_remote_code=cfg.student.trust_remote_code)
    said = answer(ctx, weights, [p.input for p in probes])
    quality = eval_quality(ctx, weights) | {"student_rows": len(rest)}
    del weights
    write_jsonl(rd.round_probes(round_no),
                [{"id": p.id, "input": p.input, "teacher": p.output, "reference": p.reference, "student": s}
                 for p, s in zip(probes, said)])
    found = targets(ctx.task, [Probe(p, s) for p, s in zip(probes, said)], agree_at=cfg.generation.agree_at,
                    seed=cfg.seed)
    by_id = {p.id: p for p in probes}
    examples = [{"id": t.id, "input": t.input, "output": by_id[t.id].output, "reference": by_id[t.id].reference}
                for t in found]
    with faults.scope(f"round{round_no}"):
        gen = generate.targeted(ctx, round_no, examples, map_shards) if examples else None
    c = gen.counts if gen else None
    added = c.teacher_rows_ok + c.teacher_rows_failed + c.teacher_rows_unasked if c else 0
    stats = RoundStats(round=round_no, probe_rows=len(probes), missed=len(found), missed_ids=[t.id for t in found],
                       by_checker=sum(t.reason.startswith("checker") for t in found), trained_rows=len(rest),
                       student_quality=quality,
                       input_requests=round_requests(cfg, round_no) if examples else 0,
                       rows_added=added, usage=gen.last if gen else None,
                       wall_seconds=round(time.perf_counter() - t0, 2))
    stats.write(rd.stats(f"round{round_no}"))
    return stats


def probing_student(ctx: RunContext, round_no: int, rows: list[Row]) -> Path:
    """The student of the rows kept so far less the probes, fine-tuned from the base by SFT whatever
    training.method says (it only has to show where the student fails); a re-run finds it made."""
    _, student, t = ctx.cfg.student_candidates()[0]
    rd, out = ctx.dir, ctx.dir.round_student(round_no)
    train_one(student, t.model_copy(update={"method": "sft"}), to_prompt_completion(ctx.task, rows),
              rd.round_checkpoints(round_no), out, rd.student_stats_in(out), None, base_student_dir(student), None)
    return out


def answer(ctx: RunContext, weights: tuple, inputs: list[str]) -> list[str]:
    """The probing student's (model, tokenizer) parsed answers, greedy, as the evaluation asks it (a
    failed answer is "")."""
    cfg, task, (model, tok) = ctx.cfg, ctx.task, weights
    replies = generate_batched(model, tok, [task.student_messages(x) for x in inputs], batch_size=cfg.eval.batch_size,
                               max_new_tokens=cfg.eval.max_new_tokens, prefix_cache={})
    return [task.parse_answer(r["raw"]) if r["error"] is None else "" for r in replies]


def eval_quality(ctx: RunContext, weights: tuple) -> dict:
    """The probing student's primary metric on the headline eval set, with its bootstrap interval (the
    report's row for the round before; the evaluation stage scores the last round's student)."""
    cfg, task = ctx.cfg, ctx.task
    rows = list(ctx.eval_rows)[: cfg.eval.max_rows] if cfg.eval.max_rows else list(ctx.eval_rows)
    tokenized = cfg.eval.tokenized
    preds = answer(ctx, weights, [detokenize(r["input"]) if tokenized else r["input"] for r in rows])
    if tokenized:
        preds = [tokenize(p) for p in preds]
    metric, refs, srcs = task.primary_metric, [references(r) for r in rows], [r["input"] for r in rows]
    iv = compare({"student": scorer(task, metric, preds, refs, srcs)}, len(rows), against=None, seed=cfg.seed,
                 n_resamples=cfg.eval.bootstrap_resamples)["student"]["interval"]
    return {"metric": metric, **iv, "n": len(rows)}
