"""How generation.rounds splits the teacher budget, and which kept rows probe a round's student.

The teacher requests a one-round run would plan (Self-Instruct requests unless the task makes its
inputs by code, and their answers) are the total: round 1 gets generation.round_share less of it,
each later round an equal part of that share, spent on Self-Instruct requests and their answers.
"""
from __future__ import annotations

import hashlib

from distill.config import Config
from distill.records import Row
from distill.tasks import load_task


def planned_requests(cfg: Config) -> int:
    """Teacher requests of the whole generation as one round would plan them."""
    g = cfg.generation
    answers = g.input_requests * g.inputs_per_request * g.samples_per_input
    by_code = load_task(cfg.task).programmatic_inputs(cfg.seed, 1, set()) is not None
    return answers + (0 if by_code else g.input_requests)


def round_requests(cfg: Config, round_no: int) -> int:
    """Self-Instruct requests of a round (for a task that makes its inputs by code: the inputs asked of
    its code, divided by inputs_per_request, as in one round)."""
    g = cfg.generation
    if g.rounds == 1:
        return g.input_requests
    if round_no == 1:
        return max(1, round(g.input_requests * (1 - g.round_share)))
    later = planned_requests(cfg) * g.round_share / (g.rounds - 1)
    asks = 0 if load_task(cfg.task).makes_inputs_like else 1  # inputs made by code: all of it on answers
    return max(1, int(later // (asks + g.inputs_per_request * g.samples_per_input)))


def round_config(cfg: Config, round_no: int) -> Config:
    """The config a round generates with: its share of the requests (a later round answers at most
    inputs_per_request inputs a request, however many a reply lists)."""
    g, n = cfg.generation, round_requests(cfg, round_no)
    cap = min(n * g.inputs_per_request, g.max_inputs or n * g.inputs_per_request) if round_no > 1 else g.max_inputs
    g = g.model_copy(update={"input_requests": n, "max_inputs": cap})
    return cfg.model_copy(update={"generation": g})


def split_probes(kept: list[Row], round_no: int, n: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(probe rows, rows to train on): the probes are n teacher rows of round round_no - 1 (at most half
    of them, one at least, so the probing student still learns from that round), chosen by a hash of the run's seed
    and the row's id (the same on every re-run); the rest of every kept row before round round_no is
    trained on."""
    before = [r for r in kept if r.meta.get("round", 1) < round_no]
    pool = sorted((r for r in before if r.meta.get("source") != "seed" and r.meta.get("round", 1) == round_no - 1),
                  key=lambda r: hashlib.sha256(f"{seed}:probe:{r.id}".encode()).hexdigest())
    probe_ids = {r.id for r in pool[: min(n, max(1, len(pool) // 2))]}
    return [r for r in before if r.id in probe_ids], [r for r in before if r.id not in probe_ids]
