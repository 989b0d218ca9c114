"""Teacher saturation: the generation stage's throughput against the same teacher's ceiling.

The ceiling is a bare async load generator (openai.AsyncOpenAI, nothing else) sending the same
requests at the concurrency that serves it best. The project's path is the generation stage's own
client (`run_requests`: TeacherClient with retries, budget checks, concurrency limit, and the
append-only request store that fsyncs every reply). Same requests, same server, greedy decoding,
so both produce the same tokens. Prints one JSON object and appends it to
benchmarks/results/teacher_saturation.jsonl.

    python benchmarks/teacher_saturation.py [N_REQUESTS]     # local llama.cpp teacher (offline default)
    python benchmarks/teacher_saturation.py 400 --base-url http://gpu-box:8000/v1 --model teacher
    python benchmarks/teacher_saturation.py 512 --vllm-python .venv-vllm/bin/python --concurrency 16 32 64
        # a vLLM CPU server started here (`make vllm-env`), serving the same SmolLM2 weights

A VM's speed drifts by 20-30% over minutes, more than the gap being measured, so nothing is timed
as one long round: the requests go out in blocks, each block sent by every contender in turn
(the order rotating from block to block), and each contender's throughput is its tokens over its
seconds summed across blocks. Drift then hits all contenders alike. The spread of the per-block
ratios is reported with the ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from openai import AsyncOpenAI

from distill.config import load_config
from distill.stages.context import few_shot_examples
from distill.stages.preflight import preflight
from distill.stages.shards import answer_requests
from distill.teacher import RequestStore, Teacher
from distill.teacher.backends.openai import OpenAIBackend
from distill.teacher.gguf_server import local_server

sys.path.insert(0, str(Path(__file__).parent))
from _record import record  # noqa: E402


def distinct_requests(cfg) -> list:
    """One answer request (the bulk of generation) per distinct seed-like input: eval set + seeds."""
    inputs = preflight(cfg, ())
    task, seeds, evals = inputs.task, inputs.seeds, inputs.eval_rows
    shots = few_shot_examples(cfg, seeds, task)
    texts = list(dict.fromkeys(e["input"] for e in evals + seeds))
    return [answer_requests(cfg, task, t, shots)[0] for t in texts]


def blocks_of(reqs: list, n: int, size: int) -> list[list]:
    """n requests in blocks of `size` (at most len(reqs)); requests repeat only across blocks, never inside one."""
    size = min(size, len(reqs))
    out, i = [], 0
    while sum(map(len, out)) < n:
        take = min(size, n - sum(map(len, out)))
        out.append([reqs[(i + j) % len(reqs)] for j in range(take)])
        i += take
    return out


async def bare(base_url: str, key: str, reqs, concurrency: int) -> tuple[float, int]:
    """The ceiling's load generator: (seconds, output tokens)."""
    client = AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0)
    sem = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(r):
        nonlocal tokens
        async with sem:
            resp = await client.chat.completions.create(model=r.model, messages=r.message_dicts(), **dict(r.params))
            tokens += resp.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in reqs))
    secs = time.perf_counter() - t0
    await client.close()
    return secs, tokens


def project(cfg, base_url: str, reqs) -> tuple[float, int]:
    """The generation stage's path, over a fresh store (so no request is answered from cache)."""
    with tempfile.TemporaryDirectory() as d:
        store = RequestStore(Path(d) / "requests.jsonl")
        t0 = time.perf_counter()
        try:
            _, usage = Teacher(cfg, OpenAIBackend(cfg, base_url)).run(reqs, store)
        finally:
            store.close()
        secs = time.perf_counter() - t0
    if usage.failed:
        raise RuntimeError(f"{usage.failed} requests failed: {usage.errors}")
    return secs, usage.completion_tokens


def interleave(runners: dict[str, Callable[[list], tuple[float, int]]], blocks: list[list]) -> dict:
    """Send every block through every runner, rotating the order per block; totals and per-block rates."""
    names = list(runners)
    totals = {n: {"seconds": 0.0, "tokens": 0, "requests": 0, "block_rates": []} for n in names}
    for b, block in enumerate(blocks):
        for n in names[b % len(names):] + names[:b % len(names)]:
            secs, tokens = runners[n](block)
            t = totals[n]
            t["seconds"] += secs
            t["tokens"] += tokens
            t["requests"] += len(block)
            t["block_rates"].append(tokens / secs)
    for t in totals.values():
        t["requests_per_s"] = round(t["requests"] / t["seconds"], 3)
        t["output_tokens_per_s"] = round(t["tokens"] / t["seconds"], 1)
        t["seconds"] = round(t["seconds"], 2)
    return totals


def client_overhead(cfg, n: int = 200) -> dict:
    """Where the gap goes: per-request cost of each client against an instant fake server.

    bare = the SDK alone; client = the stage's client with no store (retries, budget, records);
    store = the request store's share (append + fsync per reply) on top of that.
    """
    from distill.testing.fake_openai import FakeOpenAI

    with FakeOpenAI(models=[cfg.teacher.model]) as fake:
        fcfg = cfg.model_copy(deep=True)
        ep = fcfg.teacher.endpoint
        ep.launch_local, ep.base_url, ep.max_concurrency = False, fake.base_url, 1
        reqs = distinct_requests(fcfg)[:n]
        n = len(reqs)

        def no_store():
            t0 = time.perf_counter()
            Teacher(fcfg, OpenAIBackend(fcfg, fake.base_url)).run(reqs)
            return time.perf_counter() - t0

        asyncio.run(bare(fake.base_url, "none", reqs[:20], 1))  # warm-up: imports, connection set-up
        bare_s = min(asyncio.run(bare(fake.base_url, "none", reqs, 1))[0] for _ in range(3))
        client_s = min(no_store() for _ in range(3))
        stored_s = min(project(fcfg, fake.base_url, reqs)[0] for _ in range(3))
    ms = 1000 / n
    return {"bare_ms_per_request": round(bare_s * ms, 2), "client_ms_per_request": round(client_s * ms, 2),
            "store_ms_per_request": round(max(0.0, stored_s - client_s) * ms, 2),
            "project_ms_per_request": round(stored_s * ms, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=240, help="requests per contender")
    ap.add_argument("--base-url")
    ap.add_argument("--model")
    ap.add_argument("--vllm-python", help="start a vLLM CPU server with this interpreter (tests/vllm_cpu.py)")
    ap.add_argument("--concurrency", type=int, nargs="*", default=[1, 2, 4], help="ceiling concurrencies to try")
    ap.add_argument("--block", type=int, default=0,
                    help="requests per block (0: 12, or 4x the largest concurrency if that is more)")
    ap.add_argument("--set", action="append", default=[], help="config override for the project's path")
    args = ap.parse_args()
    overrides = list(args.set)
    if args.base_url:
        overrides += ["teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={args.base_url}"]
    if args.model:
        overrides.append(f"teacher.model={args.model}")
    if args.vllm_python:
        from distill.teacher.gguf_server import free_port
        from distill.testing.vllm_cpu import SERVED_NAME, vllm_server

        overrides += ["teacher.endpoint.launch_local=false", "teacher.endpoint.base_url=http://unused/v1",
                      f"teacher.model={SERVED_NAME}"]
        server_name = "vLLM CPU server (vllm-cpu 0.32.0, float32, eager)"
    cfg = load_config(None, overrides)
    reqs = distinct_requests(cfg)
    key = cfg.api_key() or "none"
    block = min(args.block or max(12, 4 * max(args.concurrency)), len(reqs))
    if args.vllm_python:
        server = vllm_server(Path(args.vllm_python), free_port(), Path(tempfile.mkdtemp()) / "vllm.log")
    else:
        ep = cfg.teacher.endpoint
        server = local_server(cfg.teacher) if ep.launch_local else nullcontext(ep.base_url)
    with server as url:
        if not isinstance(url, str):
            url, server_name = url.base_url, url.label
        elif not args.vllm_python:
            server_name = url
        def bare_at(c: int):
            return lambda blk: asyncio.run(bare(url, key, blk, c))

        asyncio.run(bare(url, key, reqs[:4], 1))  # warm-up: load, prefix cache
        # the ceiling's best concurrency, itself found over interleaved blocks (a third of the budget)
        sweep = interleave({f"bare@{c}": bare_at(c) for c in args.concurrency},
                           blocks_of(reqs[::-1], max(block, args.n // 3), block))
        best_c = max(args.concurrency, key=lambda c: sweep[f"bare@{c}"]["output_tokens_per_s"])
        pcfg = cfg.model_copy(deep=True)
        pcfg.teacher.endpoint.max_concurrency = best_c
        duel = interleave({"project": lambda blk: project(pcfg, url, blk), "ceiling": bare_at(best_c)},
                          blocks_of(reqs, args.n, block))
    ours, ceil = duel.pop("project"), duel.pop("ceiling")
    per_block = sorted(p / c for p, c in zip(ours.pop("block_rates"), ceil.pop("block_rates")))
    for s in sweep.values():
        s.pop("block_rates")
    record("teacher_saturation", {
        "teacher": cfg.teacher.model, "server": server_name,
        "requests_per_contender": ours["requests"], "block": block, "blocks": len(per_block),
        "best_concurrency": best_c, "concurrency_sweep": sweep, "ceiling": ceil, "project": ours,
        "saturation_ratio": round(ours["output_tokens_per_s"] / ceil["output_tokens_per_s"], 3),
        "block_ratio_quartiles": [round(statistics.quantiles(per_block, n=4)[i], 3) for i in range(3)]
        if len(per_block) > 1 else [round(per_block[0], 3)] * 3,
        "client_overhead": client_overhead(cfg)})


if __name__ == "__main__":
    main()
