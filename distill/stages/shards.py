"""Generation's two phases as shards: plain functions of picklable arguments, so the flow can run them
on any task runner (Dask workers included).

1. New inputs, Self-Instruct style: each request shows a few sampled seeds and a sampled topic and
   asks the teacher for new inputs. Tasks with an error injector (grammar) turn each clean sentence
   into an input with one seed-like error and keep the clean sentence as the row's reference.
2. Answers: the teacher, adapted to the task with few-shot seeds, answers every input the filters on
   inputs keep (`filters.not_to_send`); with k > 1 samples the majority answer wins (self-consistency)
   and the votes are kept.
"""
from __future__ import annotations

import os
import random
import socket
from collections import Counter
from dataclasses import dataclass, field

from distill.config import Config
from distill.progress import progress_bar
from distill.records import Row
from distill.rundir import RunDir
from distill.stats import Usage
from distill.tasks import Task, load_task
from distill.teacher import Request, RequestStore, Teacher, make_budget, response_format
from distill.text import normalise


@dataclass
class ShardJob:
    """What every shard of a generation needs, sent once to wherever shards run."""

    cfg: Config
    dir: RunDir
    teacher: Teacher
    seeds: list[dict]
    shots: list[dict]
    shards: int = 1

    @property
    def task(self) -> Task:
        return load_task(self.cfg.task)

    def store(self, shard: int) -> RequestStore:
        writer = f"shard{shard}" if self.shards > 1 else None
        return RequestStore(self.dir.requests(), writer=writer, journal=self.dir.batches(writer),
                            sending=self.dir.sending(writer))


@dataclass
class ShardResult:
    """What a shard of either phase hands back (or several, merged): the teacher's usage, where it ran,
    why its budget stopped it, and its candidates (phase 1, by plan index) or rows (phase 2, by index)."""

    usage: Usage = field(default_factory=Usage)
    workers: list[str] = field(default_factory=list)
    cut_short: str | None = None
    candidates: list[tuple[int, dict]] = field(default_factory=list)
    failed: int = 0  # phase 1: Self-Instruct requests with no reply
    rows: list[tuple[int, Row]] = field(default_factory=list)

    @classmethod
    def merge(cls, parts: list["ShardResult"]) -> "ShardResult":
        cut = [p.cut_short for p in parts if p.cut_short]
        return cls(usage=Usage.merge([p.usage for p in parts]), workers=[w for p in parts for w in p.workers],
                   cut_short=cut[0] if cut else None, candidates=[c for p in parts for c in p.candidates],
                   failed=sum(p.failed for p in parts), rows=[r for p in parts for r in p.rows])


def answer_requests(cfg: Config, task: Task, text: str, shots: list[dict]) -> list[Request]:
    msgs = task.teacher_messages(text, shots)
    k = cfg.generation.samples_per_input
    extra = {"logprobs": True, "top_logprobs": cfg.teacher.logprobs} if cfg.teacher.logprobs else {}
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


def input_plans(cfg: Config, task: Task, seeds: list[dict], first: int | None = None) -> list[tuple[Request, list[str], str]]:
    """The Self-Instruct requests of a run: (request, seed ids shown, topic), fixed by cfg.seed; only
    the `first` ones when given (a plan estimates from a sample rather than enumerate them all)."""
    g = cfg.generation
    rng = random.Random(cfg.seed)
    plans = []
    for i in range(g.input_requests if first is None else min(first, g.input_requests)):
        examples = rng.sample(seeds, min(g.seeds_per_prompt, len(seeds)))
        topic = rng.choice(task.topics)
        msgs = task.new_inputs_messages(examples, topic, g.inputs_per_request)
        req = Request.make(cfg.teacher.model, msgs, temperature=g.input_temperature,
                           max_tokens=g.input_max_tokens, seed=cfg.seed * 1_000_003 + i)
        plans.append((req, [e["id"] for e in examples], topic))
    return plans


def worker_id() -> str:
    """Where a shard ran (host:pid), recorded in the stats of a fanned-out run."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _label(what: str, shard: int, shards: int) -> str:
    return f"teacher: {what}" + (f" [shard {shard + 1}/{shards}]" if shards > 1 else "")


def input_shard(job: ShardJob, shard: int, spent: tuple[int, float]) -> ShardResult:
    """Phase 1 for the Self-Instruct requests shard, shard+shards, ...: candidates keyed by plan index."""
    task, n = job.task, job.shards
    plans = list(enumerate(input_plans(job.cfg, task, job.seeds)))[shard::n]
    budget = make_budget(job.cfg, *spent, shard, n)
    store = job.store(shard)
    try:
        with progress_bar(len(plans), _label("new inputs", shard, n)) as advance:
            replies, usage = job.teacher.ask([p[1][0] for p in plans], store, budget, advance)
    finally:
        store.close()
    found, failed = [], 0
    for (idx, (req, seed_ids, topic)), rep in zip(plans, replies):
        if rep.get("error") is not None:
            failed += 1
            continue
        for j, text in enumerate(task.parse_inputs(rep["text"])):
            found.append((idx, {"id": f"{req.key[:16]}-{j}", "text": text, "seed_ids": seed_ids, "topic": topic}))
    return ShardResult(usage, [worker_id()], budget.exhausted if budget else None, candidates=found, failed=failed)


def candidate_row(cfg: Config, task: Task, c: dict) -> Row:
    """The row a candidate input makes, before its answer: with the task's error injected (chosen by
    the candidate's id, so the same on every run) and the clean sentence as its reference."""
    r = random.Random(f"{cfg.seed}:{c['id']}")
    reference, error_type, text = None, None, c["text"]
    if c.get("reference") is not None:  # a programmatic input knows its answer
        reference = c["reference"]
    elif r.random() >= cfg.generation.unchanged_fraction and (hit := task.corrupt(c["text"], r)) is not None:
        text, error_type = hit
        reference = c["text"]
    elif task.has_injector:
        reference, error_type = c["text"], "none"
    return Row(id=c["id"], input=text, output=None, reference=reference,
               meta={"source": "teacher", "error_type": error_type, "seed_ids": c["seed_ids"], "topic": c["topic"],
                     "teacher": cfg.teacher.model})


def answer_shard(job: ShardJob, shard: int, spent: tuple[int, float], candidates: list[tuple[int, dict]]) -> ShardResult:
    """Phase 2: the adapted teacher answers this shard's [index, candidate] pairs; rows keep the index."""
    cfg, task, n = job.cfg, job.task, job.shards
    rows, answer_reqs = [], []
    for idx, c in candidates:
        row = candidate_row(cfg, task, c)
        reqs = answer_requests(cfg, task, row.input, job.shots)
        answer_reqs.append(reqs)
        row.meta["request_keys"] = [q.key for q in reqs]
        rows.append((idx, row))
    flat = [q for reqs in answer_reqs for q in reqs]
    budget = make_budget(cfg, *spent, shard, n)
    store = job.store(shard)
    try:
        with progress_bar(len(flat), _label("answers", shard, n)) as advance:
            if task.answer_schema is not None:
                flat_replies, usage = job.teacher.structured(flat, task.answer_schema, store, budget, advance)
            else:
                flat_replies, usage = job.teacher.ask(flat, store, budget, advance)
    finally:
        store.close()
    it = iter(flat_replies)
    for (_, row), reqs in zip(rows, answer_reqs):
        replies = [next(it) for _ in reqs]
        answer, votes, err = vote(task, replies)
        row.output = answer
        row.status = "ok" if answer is not None and err is None else "failed"
        row.error = err
        if row.status == "failed" and (raw := [r["raw"] for r in replies if r.get("raw") is not None]):
            row.raw = raw[0]  # the invalid structured reply, kept for the ledger
        if len(reqs) > 1:
            row.meta["votes"] = votes
    return ShardResult(usage, [worker_id()], budget.exhausted if budget else None, rows=rows)
