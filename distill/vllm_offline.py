"""In-process vLLM (`teacher.backend: vllm_offline`): the GPU fast path, no server in between.

vLLM's LLM.chat takes every pending request at once and batches them continuously on the GPU.
Requests and replies go through the same request store and record schema as the OpenAI-protocol
path, so rows, ids and usage accounting do not depend on the backend. `vllm` is an optional extra
(`pip install .[vllm]`); nothing else in the project imports it.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from distill.config import Config
from distill.teacher import Budget, Request, RequestStore, Usage, estimate_tokens, failed_record, reply_record

_ENGINES: dict[tuple, Any] = {}  # one engine per process and settings: loading takes minutes on a GPU


def engine_kwargs(cfg: Config) -> dict:
    """vllm.LLM(**...) for the configured teacher."""
    o = cfg.teacher.offline
    kw = {"model": o.model or cfg.teacher.model, "tensor_parallel_size": o.tensor_parallel_size, "dtype": o.dtype,
          "gpu_memory_utilization": o.gpu_memory_utilization, "seed": cfg.seed}
    if o.max_model_len:
        kw["max_model_len"] = o.max_model_len
    if o.enforce_eager:
        kw["enforce_eager"] = True
    if o.lora_path or cfg.teacher.adaptation == "lora":
        kw.update(enable_lora=True, max_lora_rank=o.max_lora_rank)
    return kw


def sampling_kwargs(req: Request) -> dict:
    """OpenAI request params -> vllm.SamplingParams(**...): the same sampling as `vllm serve` applies."""
    p = dict(req.params)
    kw: dict[str, Any] = {"temperature": p.get("temperature", 1.0), "max_tokens": p.get("max_tokens", 16)}
    for name in ("top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "n"):
        if name in p:
            kw[name] = p[name]
    fmt = p.get("response_format")
    if fmt:
        if fmt.get("type") == "json_schema":
            kw["structured_outputs"] = {"json": fmt["json_schema"]["schema"]}
        elif fmt.get("type") == "json_object":
            kw["structured_outputs"] = {"json": fmt["schema"]} if fmt.get("schema") else {"json_object": True}
    return kw


def record_from_output(req: Request, out: Any, latency_s: float | None) -> dict:
    """A vllm RequestOutput -> the stored reply record (tokens counted by the engine itself)."""
    c = out.outputs[0]
    return reply_record(req, c.text, c.finish_reason, len(out.prompt_token_ids or []), len(c.token_ids or []),
                        latency_s, engine="vllm_offline")


def _engine(cfg: Config):
    from vllm import LLM

    kw = engine_kwargs(cfg)
    key = tuple(sorted(kw.items()))
    if key not in _ENGINES:
        _ENGINES[key] = LLM(**kw)
    return _ENGINES[key]


def _sampling_params(kw: dict):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    kw = dict(kw)
    if "structured_outputs" in kw:
        kw["structured_outputs"] = StructuredOutputsParams(**kw["structured_outputs"])
    return SamplingParams(**kw)


def run_offline(cfg: Config, store: RequestStore | None, reqs: list[Request],
                on_done: Callable[[], None] | None = None, budget: Budget | None = None,
                engine: Any = None, to_params: Callable[[dict], Any] | None = None,
                lora_path: str | None = None) -> tuple[list[dict], Usage]:
    """Replies for reqs in order: from the store, or generated in one vLLM batch and stored.

    engine/to_params stand in for vllm.LLM and SamplingParams in the mapping's unit test.
    """
    usage = Usage()
    results: dict[str, dict] = {}
    pending: list[Request] = []
    queued: set[str] = set()
    for r in reqs:
        if store is not None and (rec := store.get(r.key)) is not None:
            usage.cache_hits += 1
            results[r.key] = rec
        elif r.key not in results and r.key not in queued:
            if budget is not None and not budget.admit(estimate_tokens(r.message_dicts()),
                                                       dict(r.params).get("max_tokens", 256), 0.0):
                usage.skipped += 1
                results[r.key] = failed_record(r, f"not sent: {budget.exhausted}", skipped=True)
                continue
            queued.add(r.key)
            pending.append(r)
    if pending:
        engine = engine or _engine(cfg)
        lora = None
        if lora_path := lora_path or cfg.teacher.offline.lora_path:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("teacher-adapter", 1, lora_path)
        t0 = time.perf_counter()
        outs = engine.chat([r.message_dicts() for r in pending],
                           [(to_params or _sampling_params)(sampling_kwargs(r)) for r in pending], use_tqdm=False,
                           lora_request=lora)
        wall = time.perf_counter() - t0
        usage.requests_sent += len(pending)
        usage.request_seconds += wall
        for r, out in zip(pending, outs):
            # in one continuous batch every request waits for the engine, not for a turn: its latency is
            # the batch's wall time (what the evaluation harness reports for batched engines too)
            rec = record_from_output(r, out, wall)
            usage.prompt_tokens += rec["usage"]["prompt_tokens"]
            usage.completion_tokens += rec["usage"]["completion_tokens"]
            if budget is not None:
                budget.settle(rec["usage"])
            if store is not None:
                store.put(rec)
            results[r.key] = rec
    for _ in reqs:
        if on_done:
            on_done()
    return [results[r.key] for r in reqs], usage
