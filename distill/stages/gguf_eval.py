"""The quality pass on llama-server: every self-hosted model as a GGUF of one type (the local teacher's:
bf16 where the CPU computes bf16 natively, else Q8_0) behind the same server, with the same slots and the
same greedy requests as the local teacher, so they are all served alike.

transformers in fp32 decodes these small models several times slower per request than llama.cpp; the
students are written once as GGUF (the base student's file is the teacher's own re-encoding of the GGUF
the student came from; a distilled student's is the file `distill export` ships when export.gguf_type is
the served type, else one of its own; its tokenizer is copied from that GGUF). A student from a Hugging
Face folder, or of an architecture our writer does not know, keeps every model on transformers.
"""
from __future__ import annotations

import time
from pathlib import Path

from distill.config import Config
from distill.models.gguf_export import ExportError, write_gguf
from distill.models.load import base_gguf
from distill.progress import progress_bar
from distill.rundir import RunDir
from distill.teacher import Request, Teacher
from distill.teacher.backends.openai import OpenAIBackend
from distill.teacher.gguf_server import (
    RunningServer,
    engine_of,
    llama_server_binary,
    serve_gguf,
    served_gguf,
    served_type,
    teacher_gguf,
)

SERVER = "llama-server"


def eval_engine(cfg: Config) -> str:
    """llama-server or transformers, for every self-hosted model of the run alike."""
    if cfg.eval.engine == "auto":
        return SERVER if llama_server_binary() is not None else "transformers"
    return cfg.eval.engine


def gguf_of(cfg: Config, run: RunDir, m, reference: Path) -> Path:
    """The served GGUF of one evaluated model (`served_type`), written once (or again when its weights are newer)."""
    if m.role != "distilled student":
        return served_gguf(reference)  # the base student is the bundled GGUF, dequantised: the same file
    ladder_name, quant = m.key.partition(":")[2] or None, served_type()
    # of the export's type it is the file `distill export` ships (written once); else it is kept apart from it
    folder = run.export(ladder_name) if quant == cfg.export.gguf_type else run.served(ladder_name)
    target = folder / f"{ladder_name or m.name}.{quant}.gguf"
    if not target.exists() or target.stat().st_mtime < (m.path / "config.json").stat().st_mtime:
        write_gguf(m.path, target, quant=quant, name=m.name, reference=reference)
    return target


def teacher_twin(cfg: Config, m, same_shots: bool) -> bool:
    """Whether the base student under the teacher's k-shot prompt is the local teacher itself: the same
    file on the same server with the same slots, asked the same greedy requests (the offline default
    distils SmolLM2 into itself). Its answers are then the teacher's, not asked a second time: two passes
    would differ only where batching flips a near-tied token."""
    t, reference = cfg.teacher, base_gguf(cfg.student)
    return (m.key == "base_few_shot" and same_shots and reference is not None and "teacher" in cfg.eval.models
            and t.backend == "openai" and t.endpoint.launch_local and t.adaptation.method == "few_shot"
            and t.temperature == 0 and engine_of(t.endpoint.local) == SERVER and eval_engine(cfg) == SERVER
            and teacher_gguf(t.endpoint.local) == served_gguf(reference))


def ggufs(cfg: Config, run: RunDir, models) -> dict[Path, Path] | None:
    """Model directory -> GGUF for every model, or None, and every model stays on transformers: when the
    student did not come from a GGUF (a tokenizer rebuilt from tokenizer.json might split text otherwise)
    or one model cannot be written (another architecture)."""
    reference = base_gguf(cfg.student)
    if reference is None:
        return None
    out = {}
    try:
        for m in models:
            if m.path not in out:
                out[m.path] = gguf_of(cfg, run, m, reference)
    except ExportError:
        return None
    return out


def serve(cfg: Config, gguf: Path, alias: str, log_path: Path | None):
    local = cfg.teacher.endpoint.local
    return serve_gguf(SERVER, gguf, alias, slots=local.parallel, n_ctx=local.n_ctx, threads=local.n_threads,
                      log_path=log_path, startup_timeout_s=local.startup_timeout_s)


def answers_from(teacher: Teacher, reqs: list[Request], label: str) -> tuple[list[dict], float]:
    """The eval answers of one model behind an OpenAI-protocol server, in the harness's form (text, error,
    latency, tokens, and the reply's logprobs when asked for), and the wall time they took."""
    t0 = time.perf_counter()
    with progress_bar(len(reqs), f"eval: {label}") as advance:
        recs, _ = teacher.ask(reqs, on_done=advance)
    wall = time.perf_counter() - t0
    return [{"raw": r.get("text") or "", "error": _failure(r.get("error")), "latency_s": r.get("latency_s") or 0.0,
             "prompt_tokens": (r.get("usage") or {}).get("prompt_tokens", 0),
             "completion_tokens": (r.get("usage") or {}).get("completion_tokens", 0),
             "cached_tokens": (r.get("usage") or {}).get("cached_tokens", 0),
             "logprobs": r.get("logprobs")} for r in recs], wall


def _failure(error: str | None) -> str | None:
    """A request's failure as the evaluation counts it: a blank reply is the model's answer (scored as
    such), not a failed request; only generation treats it as no answer at all."""
    return None if error and error.startswith("EmptyReply") else error


def answer_with_server(cfg: Config, srv: RunningServer, alias: str, messages: list[list[dict]], *, max_new_tokens: int,
                       label: str, confidence: bool = False) -> tuple[list[dict], float]:
    """Greedy answers, the server's slots in flight; with `confidence` the mean log-probability of the
    answer's tokens as "confidence" (what the cascade routes on)."""
    extra = {"logprobs": True, "top_logprobs": 1} if confidence else {}
    reqs = [Request.make(alias, m, temperature=0.0, max_tokens=max_new_tokens, **extra) for m in messages]
    backend = OpenAIBackend(cfg, srv.base_url, engine=srv.label, slots=srv.slots, concurrency=srv.slots)
    answers, wall = answers_from(Teacher(cfg, backend), reqs, label)
    for a in answers:
        lp = a.pop("logprobs")
        if confidence:
            lps = [top[0][1] for top in ((lp or {}).get("top") or []) if top]
            a["confidence"] = round(sum(lps) / len(lps), 5) if lps else -100.0  # no answer: as unsure as can be
    return answers, wall
