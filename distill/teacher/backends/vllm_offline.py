"""In-process vLLM (`teacher.backend: vllm_offline`): the GPU fast path, no server in between.

vLLM's LLM.chat takes every pending request at once and batches them continuously on the GPU.
Requests and replies go through the same request store and record schema as the OpenAI-protocol
path, so rows, ids and usage accounting do not depend on the backend. `vllm` is an optional extra
(`pip install .[vllm]`); nothing else in the project imports it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from distill.config import Config
from distill.teacher.cached import Session
from distill.teacher.request import Request, reply_record

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
    if o.lora_path or cfg.teacher.adaptation.method == "lora":
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


@dataclass
class VllmOfflineBackend:
    """engine/to_params stand in for vllm.LLM and SamplingParams in the mapping's unit tests."""

    cfg: Config
    lora_path: str | None = None
    engine: str = "vLLM in-process"
    llm: Any = field(default=None, repr=False)
    to_params: Callable[[dict], Any] | None = field(default=None, repr=False)

    def send(self, reqs: list[Request], session: Session) -> None:
        pending = [r for r in reqs if session.admit(r)]
        if not pending:
            return
        llm = self.llm or _engine(self.cfg)
        lora = None
        if lora_path := self.lora_path or self.cfg.teacher.offline.lora_path:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("teacher-adapter", 1, lora_path)
        t0 = time.perf_counter()
        outs = llm.chat([r.message_dicts() for r in pending],
                        [(self.to_params or _sampling_params)(sampling_kwargs(r)) for r in pending], use_tqdm=False,
                        lora_request=lora)
        wall = time.perf_counter() - t0
        session.usage.requests_sent += len(pending)
        session.usage.request_seconds += wall
        for r, out in zip(pending, outs):
            # in one continuous batch every request waits for the engine, not for a turn: its latency is
            # the batch's wall time (what the evaluation harness reports for batched engines too)
            session.finish(r, record_from_output(r, out, wall))
