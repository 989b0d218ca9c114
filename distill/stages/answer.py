"""The quality pass: every model answers the eval rows, one function per engine.

The teacher is asked through its OpenAI-protocol server exactly as it labelled the data (same few-shot
prompt, same sampling); the self-hosted models answer on llama-server as GGUFs of the local teacher's
type (`gguf_eval`), or in-process through transformers. Each answer is {"raw", "error", "latency_s",
"prompt_tokens", "completion_tokens"} (and "confidence" for the cascade's student).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from distill.config import resolve_path
from distill.models.infer import engine_name, generate_batched
from distill.models.load import default_gguf, gguf_parameter_count, load_model, parameter_count
from distill.progress import progress_bar
from distill.stages import gguf_eval
from distill.stages.context import RunContext
from distill.stages.eval_models import TEACHER_STEPS, InProcess, Progression, Shots
from distill.teacher import Request, cost_of, teacher_cost


@dataclass
class Answered:
    """One model's answers to the eval rows, how they were made and what the quality pass cost."""

    key: str
    name: str
    role: str
    engine: str
    parameters: int | None
    prompt: str
    answers: list[dict]
    wall: float
    cost: dict


def answer_all(ctx: RunContext, rows: list[dict], local: list[InProcess], steps: Progression,
               confident: str | None) -> dict[str, Answered]:
    """Every configured model's answers, in the report's order (the teacher and its prompted steps, then
    the models as configured). `confident`: the model whose answers carry a confidence (the cascade's student)."""
    cfg = ctx.cfg
    files = gguf_eval.ggufs(cfg, ctx.dir, local) if gguf_eval.eval_engine(cfg) == gguf_eval.SERVER else None
    twins = [m for m in local if files is not None and gguf_eval.teacher_twin(cfg, m, ctx.shots == ctx.prompt_shots)]
    out: dict[str, Answered] = {}
    if "teacher" in cfg.eval.models:
        out["teacher"] = teacher_answers(ctx, rows)
        out.update({m.key: twin_answers(ctx, m, out["teacher"]) for m in twins})
    for key, (suffix, role, prompt) in TEACHER_STEPS.items():
        if key in cfg.eval.models:
            n = steps.counts(key)
            out[key] = teacher_answers(ctx, rows, steps.shots(key), key=key, role=role, name_suffix=suffix.format(**n),
                                       prompt=prompt.format(**n))
    rest = [m for m in local if m not in twins]
    if files is not None:
        out.update(server_answers(ctx, rows, rest, files, confident))
    else:
        out.update(transformers_answers(ctx, rows, rest, confident))
    return {k: out[k] for k in [*(k for k in ("teacher", *TEACHER_STEPS) if k in out), *(m.key for m in local)]}


def self_hosted_cost(ctx: RunContext, m: InProcess, wall: float) -> dict:
    return cost_of(ctx.cfg.pricing, hosted=False, model=m.name, hardware=m.hardware, prompt_tokens=0,
                   completion_tokens=0, seconds=wall)


def teacher_answers(ctx: RunContext, rows: list[dict], shots: Shots | None = None, *, key: str = "teacher",
                    role: str = "teacher", name_suffix: str = "", prompt: str | None = None) -> Answered:
    """The teacher request by request (a local server's slots in flight, else one at a time), with no
    request store: the eval set never enters it. `shots`: a prompted step's examples instead of the
    teacher's own (teacher_many_shot, teacher_retrieval)."""
    cfg, t = ctx.cfg, ctx.cfg.teacher
    teacher, shots = ctx.teacher(), shots or (lambda x: ctx.shots)
    label = f"{t.model} {name_suffix}".strip()
    reqs = [Request.make(t.model, ctx.task.teacher_messages(r["input"], shots(r["input"])), temperature=t.temperature,
                         max_tokens=cfg.eval.max_new_tokens) for r in rows]
    answers, wall = gguf_eval.answers_from(teacher.realtime(concurrency=teacher.slots), reqs, label)
    for a in answers:
        a.pop("logprobs")
    params = t.parameters
    if params is None and t.endpoint.launch_local and t.backend == "openai" and t.adaptation.method == "few_shot":
        params = gguf_parameter_count(resolve_path(t.endpoint.local.gguf) if t.endpoint.local.gguf else default_gguf())
    pt, ct = sum(a["prompt_tokens"] for a in answers), sum(a["completion_tokens"] for a in answers)
    cached = sum(a["cached_tokens"] for a in answers)
    if prompt is None:
        lora = ", LoRA-adapted on the seeds" if t.adaptation.method == "lora" else ""
        prompt = f"{len(ctx.shots)}-shot, system prompt{lora}"
    return Answered(key, label, role, teacher.realtime(1).engine, params, prompt, answers, wall,
                    teacher_cost(cfg, pt, ct, wall, batch=False, cached_tokens=cached))


def twin_answers(ctx: RunContext, m: InProcess, teacher: Answered) -> Answered:
    """The base student under the teacher's own prompt, file and server is the teacher: its answers."""
    return Answered(m.key, m.name, m.role, f"{teacher.engine}: the teacher's answers (same file, prompt and server)",
                    teacher.parameters, m.prompt, teacher.answers, teacher.wall, self_hosted_cost(ctx, m, teacher.wall))


def server_answers(ctx: RunContext, rows: list[dict], models: list[InProcess], files: dict[Path, Path],
                   confident: str | None) -> dict[str, Answered]:
    """The self-hosted models on llama-server, one server per GGUF (the base prompts share one)."""
    cfg, out = ctx.cfg, {}
    for gguf in dict.fromkeys(files[m.path] for m in models):
        group = [m for m in models if files[m.path] == gguf]
        with gguf_eval.serve(cfg, gguf, group[0].name, ctx.dir.logs / "eval_server.log") as srv:
            for m in group:
                answers, wall = gguf_eval.answer_with_server(
                    cfg, srv, group[0].name, [m.messages(r["input"]) for r in rows],
                    max_new_tokens=cfg.eval.max_new_tokens, label=m.name, confidence=m.key == confident)
                out[m.key] = Answered(m.key, m.name, m.role, srv.label, gguf_parameter_count(gguf), m.prompt, answers,
                                      wall, self_hosted_cost(ctx, m, wall))
    return out


def transformers_answers(ctx: RunContext, rows: list[dict], models: list[InProcess],
                         confident: str | None) -> dict[str, Answered]:
    """The self-hosted models in-process, one set of weights in memory at a time (the base prompts share one)."""
    cfg, out, loaded = ctx.cfg, {}, {}
    for m in models:
        if m.path not in loaded:
            loaded.clear()
            loaded[m.path] = load_model(m.path, trust_remote_code=cfg.student.trust_remote_code)
        model, tok = loaded[m.path]
        t0 = time.perf_counter()
        with progress_bar(len(rows), f"eval: {m.name}") as advance:
            answers = generate_batched(model, tok, [m.messages(r["input"]) for r in rows], batch_size=cfg.eval.batch_size,
                                       max_new_tokens=cfg.eval.max_new_tokens, on_batch=advance,
                                       confidence=m.key == confident, prefix_cache={})
        wall = time.perf_counter() - t0
        out[m.key] = Answered(m.key, m.name, m.role, engine_name(cfg.eval.batch_size), parameter_count(model), m.prompt,
                              answers, wall, self_hosted_cost(ctx, m, wall))
    return out
