"""One harness for every model: same eval rows, same parsing, same metrics, same hardware.

Quality: the teacher is asked through its OpenAI-protocol server exactly as it labelled the data (same
few-shot prompt, same sampling); the self-hosted students and the prompted base student answer on
llama-server as GGUFs of the local teacher's type (bf16 or Q8_0), like the local teacher (`gguf_eval`), or
in-process through transformers.
Every model's primary metric gets a paired-bootstrap interval, and every model but the teacher an
interval of its difference to the teacher (`distill.report.intervals`).
Cost: a separate serving measurement on one engine (`serving.py`); a hosted teacher is priced per token.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.config import resolve_path
from distill.io import write_jsonl
from distill.models.infer import engine_name, generate_batched
from distill.models.load import base_student_dir, default_gguf, gguf_parameter_count, load_model, parameter_count
from distill.progress import progress_bar
from distill.report.intervals import compare, difference, scorer
from distill.stages import cascade, gguf_eval
from distill.stages.context import RunContext, writes
from distill.stages.serving import Served, measure, teacher_weights
from distill.stats import EvalSummary, ModelResult
from distill.teacher import Request, Teacher, cost_of, teacher_cost

BASELINES = {  # key -> (name suffix, role, prompt description)
    "base_student": ("(base)", "base student", "plain prompt, zero-shot"),
    "base_zero_shot": ("(base, instructions)", "prompted base student", "the teacher's system prompt, zero-shot"),
    "base_few_shot": ("(base, {k}-shot)", "prompted base student", "the teacher's {k}-shot prompt"),
}


def model_key(ladder_name: str | None) -> str:
    """A distilled student's key in eval results and the report: "student", or "student:<name>" in a ladder."""
    return "student" if ladder_name is None else f"student:{ladder_name}"


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def answer_with_teacher(ctx: RunContext, teacher: Teacher, messages: list[list[dict]]):
    """Teacher answers request by request (a local server's slots in flight, else one at a time), no request
    store: the eval set never enters it."""
    cfg = ctx.cfg
    t = cfg.teacher
    reqs = [Request.make(t.model, m, temperature=t.temperature, max_tokens=cfg.eval.max_new_tokens) for m in messages]
    answers, wall = gguf_eval.ask(teacher.realtime(concurrency=teacher.slots), reqs, t.model)
    for a in answers:
        a.pop("logprobs")
    return answers, wall


def answer_with_transformers(model, tok, messages: list[list[dict]], *, batch_size: int, max_new_tokens: int,
                             label: str, confidence: bool = False):
    t0 = time.perf_counter()
    with progress_bar(len(messages), f"eval: {label}") as advance:
        out = generate_batched(model, tok, messages, batch_size=batch_size, max_new_tokens=max_new_tokens,
                               on_batch=advance, confidence=confidence)
    return out, time.perf_counter() - t0


def summarise(task, rows: list[dict], answers: list[dict], wall: float) -> dict:
    preds = [task.parse_answer(a["raw"]) if a["error"] is None else "" for a in answers]
    lat = [a["latency_s"] for a in answers]
    return {
        "metrics": task.metrics(preds, [r["output"] for r in rows], [r["input"] for r in rows]),
        "n": len(rows),
        "failed": sum(a["error"] is not None for a in answers),
        "latency_p50_s": round(_percentile(lat, 50), 4),
        "latency_p95_s": round(_percentile(lat, 95), 4),
        "throughput_rps": round(len(rows) / wall, 3) if wall else None,
        "wall_seconds": round(wall, 2),
        "prompt_tokens": sum(a["prompt_tokens"] for a in answers),
        "completion_tokens": sum(a["completion_tokens"] for a in answers),
    }, preds


@dataclass
class InProcess:
    """A model the harness runs in-process: the base student under one of its prompts, or a distilled student."""

    key: str
    name: str
    path: Path
    role: str
    hardware: str
    prompt: str
    messages: Callable[[str], list[dict]]


def in_process_models(ctx: RunContext) -> list[InProcess]:
    cfg, task, wanted = ctx.cfg, ctx.task, ctx.cfg.eval.models
    out = []
    if any(k in wanted for k in BASELINES):
        base, k = base_student_dir(cfg.student), len(ctx.prompt_shots)
        prompts = {"base_student": task.student_messages, "base_zero_shot": lambda x: task.teacher_messages(x, []),
                   "base_few_shot": lambda x: task.teacher_messages(x, ctx.prompt_shots)}
        for key, (suffix, role, prompt) in BASELINES.items():
            if key in wanted:
                out.append(InProcess(key, f"{base.name.split('.')[0]} {suffix.format(k=k)}", base, role,
                                     cfg.student.hardware, prompt.format(k=k), prompts[key]))
    if "student" in wanted:
        for name, student, _ in cfg.student_candidates():
            sdir = ctx.run.student(name)
            if not (sdir / "config.json").exists():
                raise FileNotFoundError(f"{sdir}: no trained student (run `distill train` first)")
            out.append(InProcess(model_key(name), student.name, sdir, "distilled student", student.hardware,
                                 "plain prompt, zero-shot", task.student_messages))
    return out


@writes
def run(ctx: RunContext) -> EvalSummary:
    cfg, rd, task = ctx.cfg, ctx.run, ctx.task
    rows = ctx.eval_rows[: cfg.eval.max_rows] if cfg.eval.max_rows else ctx.eval_rows
    refs, srcs = [r["output"] for r in rows], [r["input"] for r in rows]
    results: dict[str, ModelResult] = {}
    predictions: dict[str, list[str]] = {}
    spent = 0.0
    t_stage = time.perf_counter()
    local = in_process_models(ctx)  # a student never trained stops the stage before the teacher is asked
    first = model_key(cfg.eval.cascade.student) if cfg.eval.cascade.enabled else None
    all_answers: dict[str, list[dict]] = {}

    def record(key: str, name: str, role: str, engine: str, params: int | None, answers, wall, cost: dict,
               prompt: str):
        nonlocal spent
        summary, preds = summarise(task, rows, answers, wall)
        per_1k = cost["usd"] / len(rows) * 1000
        spent += cost["usd"]
        predictions[key], all_answers[key] = preds, answers
        results[key] = ModelResult(**summary, name=name, role=role, engine=engine, parameters=params, prompt=prompt,
                                   cost_per_1k_usd=round(per_1k, 7), quality_pass_cost_per_1k_usd=round(per_1k, 7),
                                   cost_rule=cost["rule"], breakdown=task.breakdown(preds, refs))
        write_jsonl(rd.predictions(ctx.eval_path, key), [
            {"id": r["id"], "input": r["input"], "reference": r["output"], "prediction": p, **a}
            for r, p, a in zip(rows, preds, answers)])

    files = gguf_eval.ggufs(cfg, rd, local) if gguf_eval.eval_engine(cfg) == gguf_eval.SERVER else None
    twins = [m for m in local if files is not None and gguf_eval.teacher_twin(cfg, m, ctx.shots == ctx.prompt_shots)]
    if "teacher" in cfg.eval.models:
        t = cfg.teacher
        msgs = [task.teacher_messages(r["input"], ctx.shots) for r in rows]
        teacher = ctx.teacher()
        answers, wall = answer_with_teacher(ctx, teacher, msgs)
        params = t.parameters
        if params is None and t.endpoint.launch_local and t.backend == "openai" and t.adaptation.method == "few_shot":
            params = gguf_parameter_count(resolve_path(t.endpoint.local.gguf) if t.endpoint.local.gguf else default_gguf())
        pt, ct = sum(a["prompt_tokens"] for a in answers), sum(a["completion_tokens"] for a in answers)
        cost = teacher_cost(cfg, pt, ct, wall, batch=False)
        record("teacher", t.model, "teacher", teacher.realtime(1).engine, params, answers, wall, cost,
               f"{len(ctx.shots)}-shot, system prompt" + (", LoRA-adapted on the seeds" if t.adaptation.method == "lora" else ""))
        for m in twins:
            cost = cost_of(cfg.pricing, hosted=False, model=m.name, hardware=m.hardware,
                           prompt_tokens=0, completion_tokens=0, seconds=wall)
            record(m.key, m.name, m.role, f"{results['teacher'].engine}: the teacher's answers (same file, prompt "
                   "and server)", params, answers, wall, cost, m.prompt)

    if files is not None:
        for gguf in dict.fromkeys(files[m.path] for m in local if m not in twins):  # the three base prompts share one
            group = [m for m in local if files[m.path] == gguf and m not in twins]
            with gguf_eval.serve(cfg, gguf, group[0].name, rd.logs / "eval_server.log") as srv:
                for m in group:
                    answers, wall = gguf_eval.answer_with_server(
                        cfg, srv, group[0].name, [m.messages(r["input"]) for r in rows],
                        max_new_tokens=cfg.eval.max_new_tokens, label=m.name, confidence=m.key == first)
                    cost = cost_of(cfg.pricing, hosted=False, model=m.name, hardware=m.hardware,
                                   prompt_tokens=0, completion_tokens=0, seconds=wall)
                    record(m.key, m.name, m.role, srv.label, gguf_parameter_count(gguf), answers, wall, cost, m.prompt)
    loaded: dict[Path, tuple] = {}
    for m in (local if files is None else []):
        if m.path not in loaded:
            loaded.clear()  # one set of weights in memory at a time; the three base prompts share one
            loaded[m.path] = load_model(m.path, trust_remote_code=cfg.student.trust_remote_code)
        model, tok = loaded[m.path]
        answers, wall = answer_with_transformers(model, tok, [m.messages(r["input"]) for r in rows],
                                                 batch_size=cfg.eval.batch_size,
                                                 max_new_tokens=cfg.eval.max_new_tokens, label=m.name,
                                                 confidence=m.key == first)
        cost = cost_of(cfg.pricing, hosted=False, model=m.name, hardware=m.hardware,
                       prompt_tokens=0, completion_tokens=0, seconds=wall)
        record(m.key, m.name, m.role, engine_name(cfg.eval.batch_size), parameter_count(model), answers, wall, cost,
               m.prompt)
    loaded.clear()
    for m in local:  # the report's order: the teacher, then the models as configured (a twin was answered first)
        results[m.key] = results.pop(m.key)

    metric, n, seed, b = task.primary_metric, len(rows), cfg.seed, cfg.eval.bootstrap_resamples
    if first:
        _add_cascade(ctx, rows, first, results, predictions, all_answers)
    scorers = {k: scorer(task, metric, p, refs, srcs) for k, p in predictions.items()}
    for k, iv in compare(scorers, n, against="teacher" if "teacher" in results else None, seed=seed,
                         n_resamples=b).items():
        results[k].interval, results[k].vs_teacher = iv["interval"], iv.get("vs_teacher")
    prompted = [m.key for m in local if m.role == "prompted base student"]
    if prompted:  # was fine-tuning needed: each distilled student against the best prompted base student
        best = max(prompted, key=lambda k: results[k].metrics[metric])
        for m in local:
            if m.role == "distilled student":
                d = difference(scorers[m.key], scorers[best], n, seed=seed, n_resamples=b)
                results[m.key].vs_prompted = {"against": best, **d}

    spent += _serving_cost(ctx, rows, local, results)
    if first:
        cascade.price(results["cascade"], results[first], results["teacher"])
    copy = task.metrics(srcs, refs, srcs)
    summary = EvalSummary(eval_path=str(ctx.eval_path), n=len(rows), primary_metric=metric, copy_baseline=copy,
                          models=results, wall_seconds=round(time.perf_counter() - t_stage, 2), cost_usd=round(spent, 6))
    summary.write(rd.eval_summary(ctx.eval_path))
    return summary


def _add_cascade(ctx: RunContext, rows, first: str, results: dict[str, ModelResult], predictions: dict, answers: dict):
    cfg, task = ctx.cfg, ctx.task
    target = cfg.eval.cascade.quality_target or cfg.quality_target or 1.0
    s, t = results[first], results["teacher"]
    res, preds, ans = cascade.cascade_result(task, task.primary_metric, s, t, answers[first], answers["teacher"],
                                             predictions[first], predictions["teacher"], rows,
                                             target * t.metrics[task.primary_metric], target)
    results["cascade"], predictions["cascade"] = res, preds
    write_jsonl(ctx.run.predictions(ctx.eval_path, "cascade"), [
        {"id": r["id"], "input": r["input"], "reference": r["output"], "prediction": p, **a}
        for r, p, a in zip(rows, preds, ans)])


def _serving_cost(ctx: RunContext, rows, local: list[InProcess], results: dict[str, ModelResult]) -> float:
    """Replace the quality pass's cost figures by the serving measurement's; returns what measuring cost."""
    cfg, task, sv = ctx.cfg, ctx.task, ctx.cfg.eval.serving
    sample = rows[:sv.requests]
    served = [Served(m.key, m.path, [m.messages(r["input"]) for r in sample], m.hardware) for m in local]
    weights, how = teacher_weights(cfg, ctx.run) if "teacher" in results else (None, "")
    if weights is not None:
        served.insert(0, Served("teacher", weights, [task.teacher_messages(r["input"], ctx.shots) for r in sample],
                                cfg.teacher.hardware))
    t0 = time.perf_counter()
    measured = measure(served, cfg.pricing, rounds=sv.rounds, batch_size=sv.batch_size or cfg.eval.batch_size,
                       max_new_tokens=cfg.eval.max_new_tokens, threads=sv.threads, precision=sv.precision,
                       trust_remote_code=cfg.student.trust_remote_code)
    wall = time.perf_counter() - t0
    for key, m in measured.items():
        r = results[key]
        r.serving = {**m, "weights": how if key == "teacher" else "safetensors"}
        r.cost_per_1k_usd = m["cost_per_1k_usd"]
        r.cost_rule = (f"serving measurement: median of {m['rounds']} interleaved rounds of {m['requests']} requests "
                       f"on {m['engine']}, ${m['usd_per_hour']:g}/h on {m['hardware']}"
                       + (f"; weights: {how}" if key == "teacher" else "")
                       + (f"; the same weights and prompts as {m['measured_as']}: its figures" if "measured_as" in m else ""))
    if "teacher" in results and weights is None and measured and not cfg.teacher.hosted:
        results["teacher"].cost_note = f"engines differ: the teacher is priced as {how}"
    return cost_of(cfg.pricing, hosted=False, model="", hardware=cfg.student.hardware, prompt_tokens=0,
                   completion_tokens=0, seconds=wall)["usd"] if measured else 0.0
