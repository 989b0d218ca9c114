"""One harness for every model: same eval rows, same parsing, same metrics, same hardware.

Models are reached through one of two engines: an OpenAI-protocol server (the teacher, exactly as
it labelled the data: same few-shot prompt, same sampling) or transformers in-process (students,
with their plain prompt, in batches). Each records per-request latency and tokens; cost per 1k
requests comes from the busy wall time (self-hosted) or tokens (hosted).
"""
from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

from distill.config import Config, resolve_path
from distill.generate import few_shot_examples
from distill.io import load_examples, write_json, write_jsonl
from distill.models import base_student_dir, gguf_parameter_count, load_model, parameter_count
from distill.progress import progress_bar
from distill.tasks import get_task
from distill.teacher import Request, TeacherClient, cost_of, default_gguf, teacher_cost, teacher_endpoint


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    if len(xs) == 1:
        return xs[0]
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q) - 1]


def answer_with_server(cfg: Config, base_url: str, messages: list[list[dict]], concurrency: int):
    """Teacher answers through the OpenAI protocol, no request store: the eval set never enters it."""
    t = cfg.teacher
    reqs = [Request.make(t.model, m, temperature=t.temperature, max_tokens=cfg.eval.max_new_tokens) for m in messages]

    async def go():
        client = TeacherClient(t.model_copy(update={"max_concurrency": concurrency}), base_url, cfg.api_key())
        try:
            with progress_bar(len(reqs), f"eval: {t.model}") as advance:
                return await client.complete_all(reqs, advance)
        finally:
            await client.aclose()

    t0 = time.perf_counter()
    if t.backend == "vllm_offline" or base_url.startswith("transformers://"):
        from distill.teacher import run_requests

        recs, _ = run_requests(cfg, base_url, None, reqs)
    else:
        recs = asyncio.run(go())
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


def eval_dir(cfg: Config, run_dir: Path) -> Path:
    """Results per eval file, so evaluating another file never overwrites the main one."""
    return run_dir / "eval" / Path(cfg.eval.path).stem


def evaluate_stage(cfg: Config, run_dir: Path) -> dict:
    import torch

    task = get_task(cfg.task)
    rows = load_examples(resolve_path(cfg.eval.path), what="eval set")
    if cfg.eval.max_rows:
        rows = rows[: cfg.eval.max_rows]
    seeds = load_examples(resolve_path(cfg.seeds_path), what="seed file")
    out_dir = eval_dir(cfg, run_dir)
    results: dict[str, dict] = {}
    t_stage = time.perf_counter()

    def record(key: str, name: str, role: str, engine: str, params: int | None, answers, wall, cost: dict,
               prompt: str):
        summary, preds = summarise(task, rows, answers, wall)
        per_1k = cost["usd"] / len(rows) * 1000
        summary.update({"name": name, "role": role, "engine": engine, "parameters": params, "prompt": prompt,
                        "cost_per_1k_usd": round(per_1k, 6), "cost_rule": cost["rule"]})
        results[key] = summary
        write_jsonl(out_dir / f"{key}.jsonl", [
            {"id": r["id"], "input": r["input"], "reference": r["output"], "prediction": p, **a}
            for r, p, a in zip(rows, preds, answers)])

    if "teacher" in cfg.eval.models:
        shots = few_shot_examples(cfg, seeds)
        msgs = [task.teacher_messages(r["input"], shots) for r in rows]
        with teacher_endpoint(cfg, run_dir) as url:
            answers, wall = answer_with_server(cfg, url, msgs, concurrency=1)
        params = cfg.teacher.parameters
        if params is None and cfg.teacher.launch_local and cfg.teacher.backend != "vllm_offline" \
                and cfg.teacher.adaptation == "few_shot":
            params = gguf_parameter_count(resolve_path(cfg.teacher.local.gguf) if cfg.teacher.local.gguf else default_gguf())
        pt, ct = sum(a["prompt_tokens"] for a in answers), sum(a["completion_tokens"] for a in answers)
        cost = teacher_cost(cfg, pt, ct, wall, batch=False)
        engine = ("vLLM in-process" if cfg.teacher.backend == "vllm_offline"
                  else "transformers in-process (LoRA-adapted)" if url.startswith("transformers://")
                  else "llama.cpp server (local)" if cfg.teacher.launch_local
                  else f"OpenAI protocol ({cfg.teacher.base_url})")
        record("teacher", cfg.teacher.model, "teacher", engine, params, answers, wall, cost,
               f"{len(shots)}-shot, system prompt" + (", LoRA-adapted on the seeds" if cfg.teacher.adaptation == "lora" else ""))

    students = []
    if "base_student" in cfg.eval.models:
        base = base_student_dir(cfg.student)
        students.append(("base_student", f"{base.name.split('.')[0]} (base)", base, "base student"))
    hardware = {"base_student": cfg.student.hardware}
    if "student" in cfg.eval.models:
        from distill.train import student_dir

        for key, student, _ in cfg.student_candidates():
            sdir = student_dir(run_dir, key)
            if not (sdir / "config.json").exists():
                raise FileNotFoundError(f"{sdir}: no trained student (run `distill train` first)")
            students.append((key, student.name, sdir, "distilled student"))
            hardware[key] = student.hardware
    for key, name, path, role in students:
        model, tok = load_model(path, trust_remote_code=cfg.student.trust_remote_code)
        msgs = [task.student_messages(r["input"]) for r in rows]
        answers, wall = answer_with_transformers(model, tok, msgs, batch_size=cfg.eval.batch_size,
                                                 max_new_tokens=cfg.eval.max_new_tokens, label=name)
        cost = cost_of(cfg.pricing, hosted=False, model=name, hardware=hardware[key],
                       prompt_tokens=0, completion_tokens=0, seconds=wall)
        record(key, name, role,
               f"transformers (batch {cfg.eval.batch_size}, fp32, {torch.get_num_threads()} threads)",
               parameter_count(model), answers, wall, cost, "plain prompt, zero-shot")
        del model

    copy = task.metrics([r["input"] for r in rows], [r["output"] for r in rows], [r["input"] for r in rows])
    summary = {"eval_path": cfg.eval.path, "n": len(rows), "primary_metric": task.primary_metric,
               "copy_baseline": copy, "models": results,
               "wall_seconds": round(time.perf_counter() - t_stage, 2)}
    write_json(out_dir / "summary.json", summary)
    return summary
