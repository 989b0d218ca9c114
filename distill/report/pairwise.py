"""The pairwise judge's arithmetic: one outcome per eval row from two verdicts asked in swapped order,
the win, tie and loss rates with their bootstrap intervals, and the self-preference warning."""
from __future__ import annotations

import re

import numpy as np

from distill.report.intervals import _rounded, interval

OUTCOMES = ("win", "tie", "loss")


def outcome(model_first: str | None, model_second: str | None) -> str:
    """One row: `model_first` is the judge's verdict ("A", "B" or "tie") with the model's answer shown as A,
    `model_second` with it shown as B. A win or a loss counts only when both orders agree; a tie, a
    disagreement (position bias) or a missing verdict is a tie."""
    if model_first == "A" and model_second == "B":
        return "win"
    if model_first == "B" and model_second == "A":
        return "loss"
    return "tie"


def rates(outcomes: list[str], *, seed: int = 0, n_resamples: int = 2000) -> dict:
    """Counts, and the win, tie and loss rates (percent) with their 95% bootstrap intervals; every model is
    resampled on the same rows (the seed), and `net` (win - loss rate) is paired within the model."""
    n = len(outcomes)
    marks = {o: np.array([x == o for x in outcomes], dtype=float) for o in OUTCOMES}

    def share(values: np.ndarray):
        f = (lambda idx: 100 * values[idx].mean(axis=-1)) if n else (lambda idx: np.float64(0.0))
        f.vectorised = True
        return f

    out = {"n": n, **{o: int(marks[o].sum()) for o in OUTCOMES}}
    if not n:
        return out
    for o in OUTCOMES:
        out[f"{o}_rate"] = _rounded(interval(share(marks[o]), n, seed=seed, n_resamples=n_resamples))
    out["net"] = _rounded(interval(share(marks["win"] - marks["loss"]), n, seed=seed, n_resamples=n_resamples))
    return out


def family(model: str) -> str:
    """A model's family, read off its name: the leading letters (gpt-4o-mini -> gpt, SmolLM2-135M -> smollm)."""
    name = model.rsplit("/", 1)[-1].lower()
    m = re.match(r"[a-z]+", name)
    return m.group(0) if m else name


def self_preference(judge: str, teacher: str, against: str) -> str | None:
    """The warning the report prints when the judge may favour what it wrote itself, or what was taught by it."""
    if judge == teacher:
        who = "is the teacher"
    elif family(judge) == family(teacher):
        who = f"is of the teacher's family ({family(judge)})"
    else:
        return None
    return (f"the judge {who}: LLM judges prefer their own answers and their family's (self-preference)"
            + (", and the students learned to write like the teacher" if against == "teacher" else
               ", and the students learned to write like it")
            + "; read these rates as an upper bound on agreement with the teacher's style, not as quality")
