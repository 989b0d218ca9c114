"""One harness for every model: same eval rows, same parsing, same metrics, same hardware.

Models are reached through one of two engines: an OpenAI-protocol server (the teacher, exactly as
it labelled the data: same few-shot prompt, same sampling) or transformers in-process (students,
with their plain prompt, in batches). Each records per-request latency and tokens; cost per 1k
requests comes from the busy wall time (self-hosted) or tokens (hosted).
"""
from __future__ import annotations

import statistics
import time

from distill.config import resolve_path
from distill.io import write_jsonl
from distill.models.load import base_student_dir, default_gguf, gguf_parameter_count, load_model, parameter_count
from distill.progress import progress_bar
from distill.stages.context import RunContext
from distill.stats import EvalSummary, ModelResult
from distill.teacher import Request, Teacher, cost_of, teacher_cost


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
    """Teacher answers request by request, one at a time, no request store: the eval set never enters it."""
    cfg = ctx.cfg
    t = cfg.teacher
    reqs = [Request.make(t.model, m, temperature=t.temperature, max_tokens=cfg.eval.max_new_tokens) for m in messages]
    t0 = time.perf_counter()
    with progress_bar(len(reqs), f"eval: {t.model}") as advance:
        recs, _ = teacher.realtime(concurrency=1).run(reqs, on_done=advance)
    wall = time.perf_counter() - t0
    out = [{"raw": r.get("text") or "", "error": r.get("error"), "latency_s": r.get("latency_s", 0.0),
            "prompt_tokens": (r.get("usage") or {}).get("prompt_tokens", 0),
            "completion_tokens": (r.get("usage") or {}).get("completion_tokens", 0)} for r in recs]
    return out, wall


def answer_with_transformers(model, tok, messages: list[list[dict]], *, batch_size: int, max_new_tokens: int,
                             label: str):
    """Greedy batched generation; every request in a batch waits for the whole batch (its latency)."""
    import torch

    tok.padding_side = "left"
    model.eval()
    out = []
    t_start = time.perf_counter()
    with progress_bar(len(messages), f"eval: {label}") as advance, torch.inference_mode():
        for i in range(0, len(messages), batch_size):
            chunk = messages[i:i + batch_size]
            texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            t0 = time.perf_counter()
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            dt = time.perf_counter() - t0
            new = gen[:, enc["input_ids"].shape[1]:]
            for j in range(len(chunk)):
                ids = new[j]
                n_out = int((ids != tok.pad_token_id).sum())
                out.append({"raw": tok.decode(ids, skip_special_tokens=True), "error": None, "latency_s": dt,
                            "prompt_tokens": int(enc["attention_mask"][j].sum()), "completion_tokens": n_out})
            advance(len(chunk))
    return out, time.perf_counter() - t_start


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


def run(ctx: RunContext) -> EvalSummary:
    import torch

    cfg, rd, task = ctx.cfg, ctx.run, ctx.task
    students = []
    if "base_student" in cfg.eval.models:
        base = base_student_dir(cfg.student)
        students.append(("base_student", f"{base.name.split('.')[0]} (base)", base, "base student", cfg.student.hardware))
    if "student" in cfg.eval.models:
        for name, student, _ in cfg.student_candidates():
            sdir = rd.student(name)
            if not (sdir / "config.json").exists():
                raise FileNotFoundError(f"{sdir}: no trained student (run `distill train` first)")
            students.append((model_key(name), student.name, sdir, "distilled student", student.hardware))
    rows = ctx.eval_rows[: cfg.eval.max_rows] if cfg.eval.max_rows else ctx.eval_rows
    results: dict[str, ModelResult] = {}
    t_stage = time.perf_counter()

    def record(key: str, name: str, role: str, engine: str, params: int | None, answers, wall, cost: dict,
               prompt: str):
        summary, preds = summarise(task, rows, answers, wall)
        per_1k = cost["usd"] / len(rows) * 1000
        results[key] = ModelResult(**summary, name=name, role=role, engine=engine, parameters=params, prompt=prompt,
                                   cost_per_1k_usd=round(per_1k, 6), cost_rule=cost["rule"],
                                   breakdown=task.breakdown(preds, [r["output"] for r in rows]))
        write_jsonl(rd.predictions(ctx.eval_path, key), [
            {"id": r["id"], "input": r["input"], "reference": r["output"], "prediction": p, **a}
            for r, p, a in zip(rows, preds, answers)])

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

    for key, name, path, role, hardware in students:
        model, tok = load_model(path, trust_remote_code=cfg.student.trust_remote_code)
        msgs = [task.student_messages(r["input"]) for r in rows]
        answers, wall = answer_with_transformers(model, tok, msgs, batch_size=cfg.eval.batch_size,
                                                 max_new_tokens=cfg.eval.max_new_tokens, label=name)
        cost = cost_of(cfg.pricing, hosted=False, model=name, hardware=hardware,
                       prompt_tokens=0, completion_tokens=0, seconds=wall)
        record(key, name, role,
               f"transformers (batch {cfg.eval.batch_size}, fp32, {torch.get_num_threads()} threads)",
               parameter_count(model), answers, wall, cost, "plain prompt, zero-shot")
        del model

    copy = task.metrics([r["input"] for r in rows], [r["output"] for r in rows], [r["input"] for r in rows])
    summary = EvalSummary(eval_path=str(ctx.eval_path), n=len(rows), primary_metric=task.primary_metric,
                          copy_baseline=copy, models=results, wall_seconds=round(time.perf_counter() - t_stage, 2))
    summary.write(rd.eval_summary(ctx.eval_path))
    return summary
