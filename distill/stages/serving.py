"""Serving cost, measured on purpose rather than read off the quality pass's wall time.

Every self-hosted model is served by one engine with one batching policy (transformers, in bf16 where
the CPU computes it natively, else fp32; the same batch size and token limit), after a warm-up batch,
in several rounds; each round serves every model in turn, the order rotated (and every other round
reversed) from round to round. Load on a shared machine drifts by tens of percent over minutes, so a
model measured in its own window would carry the load of that window; interleaved, the drift lands on
every model alike and the per-round ratios between models hold still. Each model's cost per 1k
requests is the median over rounds, with the rounds' range as its spread. With one thread per replica
the clock is that thread's CPU time: the core-seconds a replica bills, free of the time the scheduler
handed to other processes on a shared machine; and the replicas the machine is priced for run side by
side, as they would serve, each thread taking the next model of the round, which measures a round in
about 1/replicas of the wall time. The same weights under the same prompts are measured once. The
prompt prefix a model's requests share (system prompt and shots) is computed once, at warm-up, and
reused, as serving engines' prompt caches (vLLM, SGLang, llama.cpp) do: a long fixed prompt is paid
for its own tokens' attention, not recomputed per request. Latency is timed last, apart from cost: each
model serves the same requests one at a time (batch of one, warm, prefix cached), so it is the time a
request takes on an idle replica, with no queue and no batch to share.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from distill.config import Config, Pricing, resolve_path
from distill.models.infer import engine_name, generate_batched
from distill.models.load import default_gguf, gguf_as_hf, load_model
from distill.rundir import RunDir


@dataclass
class Served:
    key: str
    path: Path  # transformers weights
    messages: list[list[dict]]  # the requests, each in this model's own prompt
    hardware: str  # key of pricing.hardware


def teacher_weights(cfg: Config, rd: RunDir) -> tuple[Path | None, str]:
    """The teacher as a transformers directory and what its weights are, or None (and why) when it
    cannot be served here: a hosted teacher is priced per token; a remote server's weights are not here."""
    t = cfg.teacher
    if t.hosted:
        return None, "hosted: priced per token"
    if t.adaptation.method == "lora":
        return rd.teacher_merged, "the LoRA-adapted teacher's merged weights"
    if t.backend == "openai" and t.endpoint.launch_local:
        gguf = resolve_path(t.endpoint.local.gguf) if t.endpoint.local.gguf else default_gguf()
        return gguf_as_hf(gguf), f"{gguf.name} dequantised (the quality pass used the GGUF on llama.cpp)"
    return None, "its own endpoint (not served here): cost from the quality pass's wall time, on another engine"


def replicas(threads: int | None) -> tuple[int | None, int]:
    """(torch threads per replica or None to leave torch's default, replicas the machine serves at once)."""
    import torch

    if threads is None or torch.cuda.is_available():
        return None, 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return threads, max(1, cores // threads)


def measure(served: list[Served], pricing: Pricing, *, rounds: int, batch_size: int, max_new_tokens: int,
            threads: int | None = 1, precision: str = "auto", trust_remote_code: bool = False, latency_requests: int = 8,
            log=print) -> dict[str, dict]:
    """Per model key: seconds and cost per 1k requests per round, the median and the spread."""
    import torch

    from distill.models.load import cpu_bf16

    if not served:
        return {}
    # the same weights under the same prompts bill the same seconds: measured once (in the offline default
    # the teacher is the base student under its own k-shot prompt)
    first: dict[tuple, Served] = {}
    twin = {s.key: first.setdefault((s.path, json.dumps(s.messages, sort_keys=True)), s).key for s in served}
    per_replica, n_replicas = replicas(threads)
    before = torch.get_num_threads()
    if per_replica is not None:
        torch.set_num_threads(per_replica)
    try:
        # one thread: its CPU seconds are the core-seconds a replica bills, and time the scheduler gave
        # to other processes is not in them; with a thread pool only wall time sees all the work
        clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
        side_by_side = n_replicas if clock is time.thread_time else 1
        dtype = torch.bfloat16 if precision == "auto" and cpu_bf16() else torch.float32
        seconds, cached, latency = _rounds(list(first.values()), rounds, batch_size, max_new_tokens, trust_remote_code,
                                           dtype, clock, side_by_side, log, latency_requests)
        engine = engine_name(batch_size, dtype) + (f" x {n_replicas} replicas" if n_replicas > 1 else "")
    finally:
        torch.set_num_threads(before)
    out = {}
    for s in served:
        price = pricing.hardware[s.hardware].usd_per_hour
        out[s.key] = {"engine": engine, "clock": "thread CPU seconds" if clock is time.thread_time else "wall seconds",
                      "rounds": rounds, "requests": len(s.messages), "replicas": n_replicas,
                      "cached_tokens": cached[twin[s.key]],
                      "hardware": s.hardware, "usd_per_hour": price, "seconds": [round(x, 3) for x in seconds[twin[s.key]]],
                      **per_1k_cost(seconds[twin[s.key]], len(s.messages), price, n_replicas),
                      "latency_s": [round(x, 4) for x in latency[twin[s.key]]],
                      **({"measured_as": twin[s.key]} if twin[s.key] != s.key else {})}
    return out


def per_1k_cost(seconds: list[float], requests: int, usd_per_hour: float, replicas: int = 1) -> dict:
    """Cost per 1k requests, per round and as median and range, from one replica's busy seconds for
    `requests` requests in each round, on a machine billed at usd_per_hour that serves `replicas` such
    replicas side by side (each bills its share of the hour)."""
    per_1k = [secs / replicas / 3600 * usd_per_hour / requests * 1000 for secs in seconds]
    return {"usd_per_1k": [round(x, 7) for x in per_1k], "cost_per_1k_usd": round(statistics.median(per_1k), 7),
            "low": round(min(per_1k), 7), "high": round(max(per_1k), 7)}


def _rounds(served: list[Served], rounds: int, batch_size: int, max_new_tokens: int, trust_remote_code: bool,
            dtype, clock, side_by_side: int, log,
            latency_requests: int) -> tuple[dict[str, list[float]], dict[str, int], dict[str, list[float]]]:
    """Per model: the seconds of each round, the length of the shared prompt prefix it cached, and the
    latency of each of its first `latency_requests` requests served alone (a batch of one, after the
    rounds: warm, the prefix cached)."""
    loaded = {}
    for s in served:  # models that share weights (the base student under three prompts) load once
        if s.path not in loaded:
            loaded[s.path] = load_model(s.path, trust_remote_code=trust_remote_code, dtype=dtype)

    caches: dict[str, dict] = {s.key: {} for s in served}  # each model's prompt cache, filled at warm-up

    def serve(s: Served, messages: list[list[dict]], tokens: int) -> float:
        model, tok = loaded[s.path]  # read-only in eval mode: two threads may decode with one model at once
        t0 = clock()  # in the thread that does the work: its own CPU seconds
        generate_batched(model, tok, messages, batch_size=batch_size, max_new_tokens=tokens, prefix_cache=caches[s.key])
        return clock() - t0

    def alone(s: Served, tokens: int) -> list[float]:
        model, tok = loaded[s.path]
        answers = generate_batched(model, tok, s.messages[:latency_requests], batch_size=1, max_new_tokens=tokens,
                                   prefix_cache=caches[s.key])
        return [a["latency_s"] for a in answers]

    seconds: dict[str, list[float]] = {s.key: [] for s in served}
    with ThreadPoolExecutor(side_by_side) as pool:
        # warm-up: first-call allocations and kernel selection stay out of the figures (a few tokens do
        # it: every later decoding step has a new shape anyway); it also computes each model's shared
        # prompt prefix, which a serving engine keeps in its prompt cache from then on
        list(pool.map(lambda s: serve(s, s.messages[:batch_size], min(8, max_new_tokens)), served))
        for r in range(rounds):
            order = served[r % len(served):] + served[:r % len(served)]
            if r % 2:  # reversed too, so a model does not always follow the same one (caches, allocator state)
                order.reverse()
            for s, secs in zip(order, pool.map(lambda s: serve(s, s.messages, max_new_tokens), order)):
                seconds[s.key].append(secs)
            log(f"serving round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in seconds.items()))
        # latency: what one request waits on an idle replica, with no queue and no batch to share
        latency = dict(zip((s.key for s in served), pool.map(lambda s: alone(s, max_new_tokens), served)))
    return seconds, {k: max((len(p) for p in c), default=0) for k, c in caches.items()}, latency
