"""The cascade: the student answers every request; when its confidence (the mean log-probability of its
answer's tokens) is under a threshold, the request goes on to the teacher. The threshold is the lowest
that brings the cascade to the quality bar on the eval set, so the cascade routes as little as it can.

The cascade is priced as what it runs: the student on every request plus the teacher on the routed
share, round by round of the serving measurement. Its threshold is chosen on the same rows it is
scored on, so its quality is an in-sample figure (the report says so).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import numpy as np

from distill.io import references
from distill.stats import ModelResult


def choose_threshold(confidence: list[float], quality: Callable[[np.ndarray], float], bar: float) -> dict:
    """{"threshold", "routed_share", "quality", "meets"}: rows with confidence < threshold are routed.

    The smallest routed share whose quality reaches `bar`; when none does, the best quality (ties to
    the smaller share). `quality(routed)` scores the cascade for a boolean mask of routed rows.
    """
    conf = np.asarray(confidence, dtype=float)
    if not len(conf):
        return {"threshold": 0.0, "routed_share": 0.0, "quality": float(quality(conf < 0)), "meets": True}
    # the lowest confidence routes nothing, just above the highest routes everything (finite: JSON has no inf)
    candidates = [*sorted(set(conf.tolist())), float(np.nextafter(conf.max(), math.inf))]
    best = None
    for t in candidates:
        routed = conf < t
        q = float(quality(routed))
        rec = {"threshold": t, "routed_share": round(float(routed.mean()), 4), "quality": q,
               "meets": q >= bar}
        if rec["meets"]:
            return rec
        if best is None or q > best["quality"]:
            best = rec
    return best


def cascade_result(task, metric: str, student: ModelResult, teacher: ModelResult, s_ans: list[dict],
                   t_ans: list[dict], s_preds: list[str], t_preds: list[str], rows: list[dict], bar: float,
                   target: float) -> tuple[ModelResult, list[str], list[dict]]:
    """(the cascade's result, its predictions, its answers) on the eval rows."""
    refs, srcs = [references(r) for r in rows], [r["input"] for r in rows]

    def mixed(routed):
        return [t if r else s for s, t, r in zip(s_preds, t_preds, routed)]

    choice = choose_threshold([a["confidence"] for a in s_ans], lambda m: task.metrics(mixed(m), refs, srcs)[metric], bar)
    routed = [a["confidence"] < choice["threshold"] for a in s_ans]
    preds = mixed(routed)
    answers = [{**s, "routed": r, "latency_s": s["latency_s"] + (t["latency_s"] if r else 0.0)}
               for s, t, r in zip(s_ans, t_ans, routed)]
    lat = sorted(a["latency_s"] for a in answers)
    share = choice["routed_share"]
    thr = choice["threshold"]
    res = ModelResult(
        name=f"{student.name} -> {teacher.name}", role="cascade", engine=f"{student.engine}, then {teacher.engine}",
        parameters=(student.parameters or 0) + (teacher.parameters or 0) or None,
        prompt=f"student first; {share:.0%} routed to the teacher (mean token logprob < {thr:.3g})",
        metrics=task.metrics(preds, refs, srcs), n=len(rows), failed=sum(a["error"] is not None for a in answers),
        latency_p50_s=round(statistics.median(lat), 4) if lat else 0.0,
        latency_p95_s=round(lat[min(len(lat) - 1, math.ceil(0.95 * len(lat)) - 1)], 4) if lat else 0.0,
        latency_rule="the quality pass's: the student's time to reply, plus the teacher's for a routed row",
        breakdown=task.breakdown(preds, [r["output"] for r in rows]),
        cascade={"confidence": "mean token logprob of the student's answer", "threshold": thr,
                 "routed_share": share, "target": target, "bar": round(bar, 6), "meets_target": choice["meets"],
                 "chosen_on": "this eval set (in-sample)"})
    return res, preds, answers


def price(res: ModelResult, student: ModelResult, teacher: ModelResult) -> None:
    """Cost per 1k requests: the student's on every request plus the teacher's on the routed share, per
    serving round when both were measured in the same rounds, else from their single figures."""
    share = res.cascade["routed_share"]
    s, t = student.serving, teacher.serving
    if s and t and len(s["usd_per_1k"]) == len(t["usd_per_1k"]):
        per = [a + share * b for a, b in zip(s["usd_per_1k"], t["usd_per_1k"])]
        res.serving = {**s, "usd_per_1k": [round(x, 7) for x in per], "cost_per_1k_usd": round(statistics.median(per), 7),
                       "low": round(min(per), 7), "high": round(max(per), 7), "routed_share": share}
        res.cost_per_1k_usd = res.serving["cost_per_1k_usd"]
    else:
        res.cost_per_1k_usd = round(student.cost_per_1k_usd + share * teacher.cost_per_1k_usd, 7)
    res.cost_rule = (f"the student on every request (${student.cost_per_1k_usd:.4f}/1k) plus the teacher on "
                     f"{share:.0%} of them (${teacher.cost_per_1k_usd:.4f}/1k), round by round")
