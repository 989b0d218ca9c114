"""The local teacher, today's default against the one-request-at-a-time server it replaced, in one run.

Contenders, both serving the bundled SmolLM2-135M-Instruct on this machine at the same time:
- old: llama-cpp-python's server on the Q4_1 GGUF as shipped, one request in flight (its best);
- new: the default config's local teacher (llama-server, its slots in flight, Q8_0 re-encoding).
Requests are the generation stage's own, in a run's proportions: Self-Instruct requests (long sampled
outputs) and answer requests (the 6-shot prompt, short greedy answers). The load drifts by tens of
percent over minutes, so requests go out in blocks, each block sent by both contenders in turn (order
alternating); throughput is tokens over seconds summed across blocks, with the per-block ratios' spread.
Greedy answers of the two are compared request by request (sampled ones cannot be). Prints one JSON
object and appends it to benchmarks/results/local_teacher.jsonl.

    python benchmarks/local_teacher.py [--blocks 4] [--inputs-per-block 24] [--answers-per-block 48] [--set K=V]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from openai import AsyncOpenAI

from distill.config import load_config
from distill.stages.preflight import preflight
from distill.stages.shards import input_plans
from distill.teacher.gguf_server import local_server

sys.path.insert(0, str(Path(__file__).parent))
from _record import record  # noqa: E402
from teacher_saturation import distinct_requests  # noqa: E402


async def send(url: str, reqs, concurrency: int) -> tuple[float, int, list[str]]:
    """(seconds, output tokens, texts) for reqs sent with `concurrency` in flight."""
    client = AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=300)
    sem = asyncio.Semaphore(concurrency)
    texts, tokens = [""] * len(reqs), 0

    async def one(i, r):
        nonlocal tokens
        async with sem:
            resp = await client.chat.completions.create(model=r.model, messages=r.message_dicts(), **dict(r.params))
            texts[i] = resp.choices[0].message.content or ""
            tokens += resp.usage.completion_tokens

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)))
    finally:
        await client.close()
    return time.perf_counter() - t0, tokens, texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--inputs-per-block", type=int, default=24, help="Self-Instruct requests per block")
    ap.add_argument("--answers-per-block", type=int, default=48,
                    help="answer requests per block (a run sends ~2 per input request)")
    ap.add_argument("--set", action="append", default=[],
                    help="config override for the new contender, e.g. teacher.endpoint.local.parallel=16")
    args = ap.parse_args()
    new_cfg = load_config(None, args.set)
    old_cfg = load_config(None, ["teacher.endpoint.local.engine=llama-cpp-python", "teacher.endpoint.local.weights=original"])
    inputs = preflight(new_cfg, ())
    ins = [p[0] for p in input_plans(new_cfg, inputs.task, inputs.seeds)]
    ans = distinct_requests(new_cfg)
    ni, na = args.inputs_per_block, args.answers_per_block
    blocks = [(ins[b * ni:(b + 1) * ni], ans[b * na:(b + 1) * na]) for b in range(args.blocks)]

    totals = {k: {"input": [0.0, 0], "answer": [0.0, 0]} for k in ("old", "new")}
    texts: dict[str, list[str]] = {"old": [], "new": []}
    block_ratios = []
    with local_server(old_cfg.teacher) as old, local_server(new_cfg.teacher) as new:
        servers = {"old": old, "new": new}
        for s in servers.values():  # warm-up: the 6-shot prefix into every slot's cache
            asyncio.run(send(s.base_url, ans[-s.slots:], s.slots))
        for b, (bi, ba) in enumerate(blocks):
            rate = {}
            for k in (("old", "new") if b % 2 == 0 else ("new", "old")):
                s = servers[k]
                si, ti, _ = asyncio.run(send(s.base_url, bi, s.slots))
                sa, ta, out = asyncio.run(send(s.base_url, ba, s.slots))
                totals[k]["input"][0] += si
                totals[k]["input"][1] += ti
                totals[k]["answer"][0] += sa
                totals[k]["answer"][1] += ta
                texts[k] += out
                rate[k] = (ti + ta) / (si + sa)
            block_ratios.append(round(rate["new"] / rate["old"], 2))
            print(f"block {b + 1}/{len(blocks)}: new/old output tokens/s {block_ratios[-1]}", file=sys.stderr)

    def summary(k):
        t = totals[k]
        sec, tok = t["input"][0] + t["answer"][0], t["input"][1] + t["answer"][1]
        return {"server": servers[k].label, "in_flight": servers[k].slots, "seconds": round(sec, 1),
                "output_tokens": tok, "output_tokens_per_s": round(tok / sec, 1),
                "self_instruct_tokens_per_s": round(t["input"][1] / t["input"][0], 1),
                "answer_requests_per_s": round(len(texts[k]) / t["answer"][0], 2)}

    old_s, new_s = summary("old"), summary("new")
    same = sum(a == b for a, b in zip(texts["old"], texts["new"]))
    record("local_teacher", {
        "teacher": new_cfg.teacher.model, "overrides": args.set, "blocks": len(blocks),
        "requests_per_contender": {"self_instruct": sum(len(b[0]) for b in blocks), "answer": len(texts["new"])},
        "old": old_s, "new": new_s,
        "ratio_output_tokens_per_s": round(new_s["output_tokens_per_s"] / old_s["output_tokens_per_s"], 2),
        "ratio_self_instruct_tokens_per_s": round(new_s["self_instruct_tokens_per_s"] / old_s["self_instruct_tokens_per_s"], 2),
        "ratio_answer_requests_per_s": round(new_s["answer_requests_per_s"] / old_s["answer_requests_per_s"], 2),
        "per_block_ratios": block_ratios, "median_block_ratio": statistics.median(block_ratios),
        "greedy_answers_identical": f"{same}/{len(texts['new'])}",
        "greedy_answers_differing": [{"old": a, "new": b} for a, b in zip(texts["old"], texts["new"]) if a != b][:10],
    })


if __name__ == "__main__":
    main()
