"""95% intervals for each model's primary metric and for the student-minus-teacher difference: a
paired bootstrap over eval rows (scipy.stats.bootstrap, BCa), the same resampled rows for every model.

Corpus metrics are recomputed on every resample from per-row statistics (`distill.tasks.row_stats`);
a task's own metric that has none is recomputed from its predictions (slower, fewer resamples).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from distill.tasks.row_stats import ROW_STATS

Scorer = Callable[[np.ndarray], np.ndarray]  # row indices (..., n) -> the metric on those rows (...)
WORDS = ("beats", "matches", "falls short of")


def scorer(task, metric: str, preds: list[str], refs: list[str], srcs: list[str]) -> Scorer:
    """The metric as a vectorised function of which rows are drawn."""
    if metric in ROW_STATS:
        rows, total = ROW_STATS[metric]
        stats = rows(preds, refs, srcs)

        def f(idx: np.ndarray) -> np.ndarray:
            flat = idx.reshape(-1, idx.shape[-1])
            counts = np.zeros((len(flat), len(stats)))  # how often each resample drew each row
            np.add.at(counts, (np.repeat(np.arange(len(flat)), flat.shape[1]), flat.ravel()), 1)
            sums = (counts @ stats).reshape(*idx.shape[:-1], stats.shape[1])
            return np.apply_along_axis(total, -1, sums, idx.shape[-1])
        f.vectorised = True
        return f
    p, r, s = np.asarray(preds, dtype=object), np.asarray(refs, dtype=object), np.asarray(srcs, dtype=object)

    def g(idx: np.ndarray) -> np.ndarray:
        return np.apply_along_axis(lambda ix: task.metrics(list(p[ix]), list(r[ix]), list(s[ix]))[metric], -1, idx)
    return g


def interval(f: Scorer, n: int, *, seed: int = 0, n_resamples: int = 2000, level: float = 0.95) -> dict:
    """{"value", "low", "high"}: the metric on all rows and its bootstrap interval.

    The seed fixes which rows each resample draws, so every model (and every difference) calls this
    with the same seed and is resampled on the same rows: that pairing is what makes a difference's
    interval narrower than the two models' intervals side by side.
    """
    from scipy.stats import bootstrap

    point = float(f(np.arange(n)))
    if n < 2:
        return {"value": point, "low": point, "high": point}
    ci = None
    for method in ("BCa", "percentile"):  # BCa is undefined when every resample scores the same
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((np.arange(n),), lambda idx, axis=-1: f(idx), vectorized=True, n_resamples=n_resamples,
                            confidence_level=level, method=method, batch=200, rng=np.random.default_rng(seed))
        ci = res.confidence_interval
        if np.isfinite(ci.low) and np.isfinite(ci.high):
            break
    low, high = (ci.low, ci.high) if np.isfinite(ci.low) and np.isfinite(ci.high) else (point, point)
    return {"value": point, "low": float(low), "high": float(high)}


def verdict_word(low: float, high: float) -> str:
    """A difference's interval above zero beats, below zero falls short, straddling it matches."""
    if low > 0:
        return "beats"
    if high < 0:
        return "falls short of"
    return "matches"


def difference(f: Scorer, g: Scorer, n: int, *, seed: int = 0, n_resamples: int = 2000) -> dict:
    """{"difference", "low", "high", "verdict"}: f minus g, paired (the same resampled rows for both)."""
    b = n_resamples if getattr(f, "vectorised", False) else min(n_resamples, 500)
    d = interval(lambda idx: f(idx) - g(idx), n, seed=seed, n_resamples=b)
    return {**_rounded({"difference": d["value"], "low": d["low"], "high": d["high"]}),
            "verdict": verdict_word(d["low"], d["high"])}


def compare(scorers: dict[str, Scorer], n: int, *, against: str | None, seed: int = 0,
            n_resamples: int = 2000) -> dict[str, dict]:
    """Per model: its interval, and (for every model but `against`) the paired interval of its difference
    to `against` with the verdict word."""
    out = {}
    for key, f in scorers.items():
        b = n_resamples if getattr(f, "vectorised", False) else min(n_resamples, 500)
        rec = {"interval": _rounded(interval(f, n, seed=seed, n_resamples=b))}
        if against is not None and key != against and against in scorers:
            rec["vs_teacher"] = difference(f, scorers[against], n, seed=seed, n_resamples=n_resamples)
        out[key] = rec
    return out


def metric_intervals(task, names: list[str], preds: list[str], refs: list, srcs: list[str], *, seed: int = 0,
                     n_resamples: int = 2000) -> dict[str, dict]:
    """The 95% interval of every named metric that has per-row statistics (the report prints each
    metric with its interval, not only the primary one)."""
    n = len(preds)
    return {name: _rounded(interval(scorer(task, name, preds, refs, srcs), n, seed=seed, n_resamples=n_resamples))
            for name in names if name in ROW_STATS}


def _rounded(iv: dict) -> dict:
    """Four decimals on a 0-1 scale, two on a 0-100 one (the precision the metrics themselves print)."""
    digits = 2 if max(abs(v) for v in iv.values()) > 1.5 else 4
    return {k: round(v, digits) for k, v in iv.items()}
