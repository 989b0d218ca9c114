"""Generation, following the distillation path.

1. New inputs, Self-Instruct style: each request shows a few sampled seeds and a sampled topic and
   asks the teacher for new inputs. Tasks with an error injector (grammar) turn each clean sentence
   into an input with one seed-like error and keep the clean sentence as the row's reference.
2. Answers: the teacher, adapted to the task with few-shot seeds, answers every input; with k > 1
   samples the majority answer wins (self-consistency) and the votes are kept.

Every request goes through the request store, so a re-run sends only what never finished and row
ids (hashes of the requests that made them) come out identical.
"""
from __future__ import annotations

import hashlib
import os
import random
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from distill.config import Config, resolve_path
from distill.io import load_examples, read_json, write_json, write_jsonl
from distill.progress import progress_bar
from distill.structured import response_format, run_structured
from distill.tasks import Task, get_task
from distill.teacher import Budget, Request, RequestStore, Usage, estimate_tokens, run_requests, teacher_cost
from distill.text import normalise


def few_shot_examples(cfg: Config, seeds: list[dict]) -> list[dict]:
    """The teacher's fixed few-shot seeds: varied error types, at most one left unchanged.

    Fixed (not per-row) so every answer prompt shares one prefix that the server can cache, and so
    the evaluation harness can rebuild exactly the teacher that labelled the data.
    """
    if cfg.teacher.adaptation == "lora":
        return []  # the LoRA-adapted teacher learnt the task from the seeds; it is prompted zero-shot
    rng = random.Random(f"{cfg.seed}:shots")
    pool = seeds[:]
    rng.shuffle(pool)
    # round-robin over kinds (error type, label): one of each kind first, then a second of each, ...
    seen: Counter = Counter()
    ranked = []
    for s in pool:
        kind = s.get("error_type") or s.get("kind") or ("none" if s["input"] == s["output"] else "edit")
        ranked.append((seen[kind], s))
        seen[kind] += 1
    ranked.sort(key=lambda rs: rs[0])  # stable: the shuffled order within each round
    shots, unchanged = [], 0
    for _, s in ranked:
        same = s["input"] == s["output"]
        if same and unchanged >= 1:
            continue
        shots.append(s)
        unchanged += same
        if len(shots) == cfg.teacher.few_shot:
            break
    return shots


def answer_requests(cfg: Config, task: Task, text: str, shots: list[dict]) -> list[Request]:
    msgs = task.teacher_messages(text, shots)
    k = cfg.generation.samples_per_input
    extra = {}
    if task.answer_schema is not None and (fmt := response_format(cfg, task.answer_schema, f"{task.name}_answer")):
        extra["response_format"] = fmt
    if k == 1:
        return [Request.make(cfg.teacher.model, msgs, temperature=cfg.teacher.temperature,
                             max_tokens=cfg.teacher.max_tokens, **extra)]
    return [Request.make(cfg.teacher.model, msgs, temperature=cfg.generation.sample_temperature,
                         max_tokens=cfg.teacher.max_tokens, seed=i, **extra) for i in range(k)]


def vote(task: Task, replies: list[dict]) -> tuple[str | None, dict[str, int], str | None]:
    """Majority answer over k replies: (answer, votes, error). Ties go to the earliest sample.

    A reply cut off by the token limit (finish_reason "length") is no answer: it neither wins nor votes.
    """
    answers, errors = [], []
    for r in replies:
        if r.get("error") is not None:
            errors.append(r["error"])
        elif r.get("finish_reason") == "length":
            errors.append("truncated reply (finish_reason=length)")
        else:
            answers.append(task.parse_answer(r["text"]))
    if not answers:
        return None, {}, errors[0] if errors else "no reply"
    counts = Counter(normalise(a) for a in answers)
    winner = max(counts, key=counts.get)  # max keeps the first of equals: dicts keep insertion order
    return next(a for a in answers if normalise(a) == winner), dict(counts), None


def input_plans(cfg: Config, task: Task, seeds: list[dict]) -> list[tuple[Request, list[str], str]]:
    """The Self-Instruct requests of a run: (request, seed ids shown, topic), fixed by cfg.seed."""
    g = cfg.generation
    rng = random.Random(cfg.seed)
    plans = []
    for i in range(g.input_requests):
        examples = rng.sample(seeds, min(g.seeds_per_prompt, len(seeds)))
        topic = rng.choice(task.topics)
        msgs = task.new_inputs_messages(examples, topic, g.inputs_per_request)
        req = Request.make(cfg.teacher.model, msgs, temperature=g.input_temperature,
                           max_tokens=g.input_max_tokens, seed=cfg.seed * 1_000_003 + i)
        plans.append((req, [e["id"] for e in examples], topic))
    return plans


def plan_generation(cfg: Config) -> dict:
    """What a generate run would ask of the teacher, without asking: for --dry-run.

    Answer counts and completion tokens are upper bounds (every requested input parsed, every reply
    at max_tokens); prompt tokens are estimated at ~4 characters a token.
    """
    task = get_task(cfg.task)
    seeds = load_examples(resolve_path(cfg.seeds_path), what="seed file")
    g, t = cfg.generation, cfg.teacher
    plans = input_plans(cfg, task, seeds)
    shots = few_shot_examples(cfg, seeds)
    answers = g.input_requests * g.inputs_per_request * g.samples_per_input
    if g.max_inputs:
        answers = min(answers, g.max_inputs * g.samples_per_input)
    avg_answer_prompt = sum(estimate_tokens(task.teacher_messages(s["input"], shots)) for s in seeds) / len(seeds)
    prompt_tokens = sum(estimate_tokens(p[0].message_dicts()) for p in plans) + int(answers * avg_answer_prompt)
    completion_tokens = g.input_requests * g.input_max_tokens + answers * t.max_tokens
    seconds = completion_tokens / t.expected_output_tokens_per_s
    cost = teacher_cost(cfg, prompt_tokens, completion_tokens, seconds)
    return {"teacher": t.model, "input_requests": g.input_requests, "answer_requests_at_most": answers,
            "requests_at_most": g.input_requests + answers, "prompt_tokens_est": prompt_tokens,
            "completion_tokens_at_most": completion_tokens, "cost_usd_at_most": cost["usd"], "cost_rule": cost["rule"],
            "max_requests": t.max_requests, "max_cost_usd": t.max_cost_usd}


def make_budget(cfg: Config, spent_requests: int, spent_usd: float, shard: int = 0, shards: int = 1) -> Budget | None:
    """This shard's share of what the run may still spend (the whole remainder with one shard)."""
    t = cfg.teacher
    if t.max_requests is None and t.max_cost_usd is None:
        return None
    max_requests = None
    if t.max_requests is not None:
        left = max(0, t.max_requests - spent_requests)
        max_requests = left // shards + (shard < left % shards)
    max_cost = None if t.max_cost_usd is None else max(0.0, t.max_cost_usd - spent_usd) / shards
    return Budget(max_requests, max_cost, lambda pt, ct, secs: teacher_cost(cfg, pt, ct, secs)["usd"])


# Shards of both phases are plain functions of picklable arguments, so the flow can run them on any
# task runner (Dask workers included); `map_shards` is how it hands them out.
MapShards = Callable[[Callable[..., dict], list[tuple]], list[dict]]


def sequential(fn: Callable[..., dict], calls: list[tuple]) -> list[dict]:
    return [fn(*args) for args in calls]


def _store(run_dir: Path, shard: int, shards: int) -> RequestStore:
    return RequestStore(run_dir / "data" / "requests.jsonl", writer=f"shard{shard}" if shards > 1 else None)


def _worker() -> str:
    """Where a shard ran (host:pid), recorded in the stats of a fanned-out run."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _label(what: str, shard: int, shards: int) -> str:
    return f"teacher: {what}" + (f" [shard {shard + 1}/{shards}]" if shards > 1 else "")


def input_shard(cfg: Config, run_dir: Path, base_url: str, shard: int, shards: int, spent: tuple[int, float]) -> dict:
    """Phase 1 for the Self-Instruct requests shard, shard+shards, ...: candidates keyed by plan index."""
    task = get_task(cfg.task)
    seeds = load_examples(resolve_path(cfg.seeds_path), what="seed file")
    plans = list(enumerate(input_plans(cfg, task, seeds)))[shard::shards]
    budget = make_budget(cfg, *spent, shard, shards)
    store = _store(run_dir, shard, shards)
    try:
        with progress_bar(len(plans), _label("new inputs", shard, shards)) as advance:
            replies, usage = run_requests(cfg, base_url, store, [p[1][0] for p in plans], advance, budget)
    finally:
        store.close()
    found, failed = [], 0
    for (idx, (req, seed_ids, topic)), rep in zip(plans, replies):
        if rep.get("error") is not None:
            failed += 1
            continue
        for j, text in enumerate(task.parse_inputs(rep["text"])):
            found.append([idx, {"id": f"{req.key[:16]}-{j}", "text": text, "seed_ids": seed_ids, "topic": topic}])
    return {"candidates": found, "failed": failed, "usage": usage.as_dict(), "worker": _worker(),
            "cut_short": budget.exhausted if budget else None}


def answer_shard(cfg: Config, run_dir: Path, base_url: str, shard: int, shards: int, spent: tuple[int, float],
                 candidates: list[list]) -> dict:
    """Phase 2: the few-shot teacher answers this shard's [index, candidate] pairs; rows keep the index."""
    task = get_task(cfg.task)
    seeds = load_examples(resolve_path(cfg.seeds_path), what="seed file")
    g = cfg.generation
    shots = few_shot_examples(cfg, seeds)
    rows, answer_reqs = [], []
    for idx, c in candidates:
        r = random.Random(f"{cfg.seed}:{c['id']}")
        reference, error_type, text = None, None, c["text"]
        if c.get("reference") is not None:  # a programmatic input knows its answer
            reference = c["reference"]
        elif r.random() >= g.unchanged_fraction and (hit := task.corrupt(c["text"], r)) is not None:
            text, error_type = hit
            reference = c["text"]
        elif task.has_injector:
            reference, error_type = c["text"], "none"
        reqs = answer_requests(cfg, task, text, shots)
        answer_reqs.append(reqs)
        rows.append([idx, {"id": c["id"], "input": text, "output": None, "reference": reference,
                           "meta": {"source": "teacher", "error_type": error_type, "seed_ids": c["seed_ids"],
                                    "topic": c["topic"], "teacher": cfg.teacher.model,
                                    "request_keys": [q.key for q in reqs]}}])
    flat = [q for reqs in answer_reqs for q in reqs]
    budget = make_budget(cfg, *spent, shard, shards)
    store = _store(run_dir, shard, shards)
    try:
        with progress_bar(len(flat), _label("answers", shard, shards)) as advance:
            if task.answer_schema is not None:
                flat_replies, usage = run_structured(cfg, base_url, store, flat, task.answer_schema, advance, budget)
            else:
                flat_replies, usage = run_requests(cfg, base_url, store, flat, advance, budget)
    finally:
        store.close()
    it = iter(flat_replies)
    for (_, row), reqs in zip(rows, answer_reqs):
        replies = [next(it) for _ in reqs]
        answer, votes, err = vote(task, replies)
        row["output"] = answer
        row["status"] = "ok" if answer is not None and err is None else "failed"
        row["error"] = err
        if row["status"] == "failed" and (raw := [r["raw"] for r in replies if r.get("raw") is not None]):
            row["raw"] = raw[0]  # the invalid structured reply, kept for the ledger
        if len(reqs) > 1:
            row["meta"]["votes"] = votes
    return {"rows": rows, "usage": usage.as_dict(), "worker": _worker(), "cut_short": budget.exhausted if budget else None}


def generate(cfg: Config, run_dir: Path, base_url: str, map_shards: MapShards = sequential) -> dict:
    """Both phases over cfg.generation.shards shards (handed out by map_shards), then one generated.jsonl.

    Rows come out in the same order, with the same ids and texts, whatever the shard count or runner.
    """
    seeds = load_examples(resolve_path(cfg.seeds_path), what="seed file")
    g, n = cfg.generation, cfg.generation.shards
    stats_path = run_dir / "stats" / "generate.json"
    prev = read_json(stats_path).get("totals", {}) if stats_path.exists() else {}
    spent = (prev.get("requests_sent", 0) - prev.get("retries", 0), prev.get("cost_usd", 0.0))
    t_start = time.perf_counter()

    task = get_task(cfg.task)
    evals = load_examples(resolve_path(cfg.eval.path), what="eval set")
    made = task.programmatic_inputs(cfg.seed, g.input_requests * g.inputs_per_request,
                                    {r["input"] for r in seeds + evals})
    if made is not None:  # inputs made by code, with their answers: no Self-Instruct requests
        parts_in = [{"candidates": [], "failed": 0, "usage": Usage().as_dict(), "worker": _worker(), "cut_short": None}]
        candidates = [{"id": "p-" + hashlib.sha256(m["input"].encode()).hexdigest()[:16], "text": m["input"],
                       "reference": m["output"], "seed_ids": [], "topic": ""} for m in made]
    else:
        parts_in = map_shards(input_shard, [(cfg, run_dir, base_url, i, n, spent) for i in range(n)])
        candidates = [c for _, c in sorted((c for p in parts_in for c in p["candidates"]), key=lambda ic: ic[0])]
    usage_in = merge_usage([p["usage"] for p in parts_in])
    if g.max_inputs:
        candidates = candidates[: g.max_inputs]

    sent_in = usage_in.requests_sent - usage_in.retries
    cost_in = teacher_cost(cfg, usage_in.prompt_tokens, usage_in.completion_tokens,
                           time.perf_counter() - t_start if sent_in else 0.0)["usd"]
    spent = (spent[0] + sent_in, spent[1] + cost_in)
    indexed = list(enumerate(candidates))
    parts_ans = map_shards(answer_shard, [(cfg, run_dir, base_url, i, n, spent, indexed[i::n]) for i in range(n)])
    usage_ans = merge_usage([p["usage"] for p in parts_ans])
    rows = [r for _, r in sorted((r for p in parts_ans for r in p["rows"]), key=lambda ir: ir[0])]

    seed_rows = [{"id": s["id"], "input": s["input"], "output": s["output"], "reference": s["output"],
                  "status": "ok", "error": None,
                  "meta": {"source": "seed", "error_type": s.get("error_type")}} for s in seeds]
    all_rows = seed_rows + rows
    write_jsonl(run_dir / "data" / "generated.jsonl", all_rows)

    wall = time.perf_counter() - t_start
    cut = [p["cut_short"] for p in parts_in + parts_ans if p["cut_short"]]
    return _write_stats(cfg, run_dir, usage_in, usage_ans, wall, {
        "input_requests": g.input_requests, "failed_input_requests": sum(p["failed"] for p in parts_in),
        "parsed_inputs": len(candidates), "rows": len(all_rows), "seed_rows": len(seed_rows),
        "teacher_rows_ok": sum(r["status"] == "ok" for r in rows),
        "teacher_rows_failed": sum(r["status"] == "failed" for r in rows),
        "few_shot_ids": [s["id"] for s in few_shot_examples(cfg, seeds)],
        "shards": n, "shard_workers": sorted({p["worker"] for p in parts_in + parts_ans}),
        "cut_short": cut[0] if cut else None,
    })


def merge_usage(parts: list[dict]) -> Usage:
    total = Usage()
    for p in parts:
        for k, v in p.items():
            if k == "errors":
                total.errors = dict(Counter(total.errors) + Counter(v))
            else:
                setattr(total, k, getattr(total, k) + v)
    return total


def _write_stats(cfg: Config, run_dir: Path, usage_in, usage_ans, wall: float, counts: dict) -> dict:
    u = {k: getattr(usage_in, k) + getattr(usage_ans, k)
         for k in ("requests_sent", "cache_hits", "retries", "failed", "skipped", "prompt_tokens", "completion_tokens")}
    u["errors"] = dict(Counter(usage_in.errors) + Counter(usage_ans.errors))
    # Only time spent waiting on requests that were actually sent costs money; a fully cached re-run is free.
    busy = wall if u["requests_sent"] else 0.0
    cost = teacher_cost(cfg, u["prompt_tokens"], u["completion_tokens"], busy)
    this = {**u, "wall_seconds": round(wall, 2), "cost_usd": cost["usd"], "cost_rule": cost["rule"],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = run_dir / "stats" / "generate.json"
    history = read_json(path).get("invocations", []) if path.exists() else []
    history.append(this)
    totals = {k: sum(h.get(k, 0) for h in history) for k in
              ("requests_sent", "cache_hits", "retries", "failed", "skipped", "prompt_tokens", "completion_tokens",
               "wall_seconds", "cost_usd")}
    stats = {"teacher": cfg.teacher.model, "counts": counts, "last": this, "totals": totals, "invocations": history}
    write_json(path, stats)
    return stats
