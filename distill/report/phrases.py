"""The report's sentences, built from figures with their uncertainty so no sentence claims more than
the figures show: "cheaper" only when every interleaved round agrees and the median ratio is beyond
the measurement's resolution, "beats" only when the paired interval of the difference excludes zero,
and a ratio below 1 is never called "lower"."""
from __future__ import annotations

import statistics

# Cost ratios within 10% of 1 are below what the serving measurement resolves on a shared machine:
# the teacher and the base student under the teacher's own prompt (same weights, same requests)
# measured 3-6% apart, every round agreeing, from the order they ran in alone.
RESOLUTION = 0.10


def times(x: float) -> str:
    """2.8x; 1.04x rather than a misleading 1.0x."""
    return f"{x:.1f}x" if round(x, 1) != 1.0 else f"{x:.2f}x"


def _rounds(row: dict) -> list[float]:
    s = row.get("serving")
    return list(s["usd_per_1k"]) if s else [row["cost_per_1k_usd"]]


def cost_ratio(teacher: dict, model: dict) -> dict | None:
    """Teacher cost / model cost: the median of per-round ratios (round i of one against round i of the
    other, so load that drifted between rounds cancels) and their range. A hosted teacher's price is
    fixed; every round of the model is set against it. None when either cost is zero or unknown."""
    t, m = _rounds(teacher), _rounds(model)
    if len(t) == len(m):
        pairs = list(zip(t, m))
    else:
        pairs = [(a, b) for a in t for b in m]
    if not pairs or any(a <= 0 or b <= 0 for a, b in pairs):
        return None
    ratios = [a / b for a, b in pairs]
    return {"ratio": round(statistics.median(ratios), 3), "low": round(min(ratios), 3), "high": round(max(ratios), 3),
            "rounds": len(ratios)}


def cost_phrase(r: dict | None) -> str:
    """"2.8x cheaper", "1.3x more expensive" or "no measurable cost difference", from cost_ratio(): a
    direction only when every round agrees on it and the median ratio is beyond the measurement's resolution."""
    if r is None:
        return "no measured cost to compare"
    if r["low"] > 1 and r["ratio"] > 1 + RESOLUTION:
        return f"{times(r['ratio'])} cheaper"
    if r["high"] < 1 and r["ratio"] < 1 / (1 + RESOLUTION):
        return f"{times(1 / r['ratio'])} more expensive"
    return "no measurable cost difference"


def size_phrase(x_smaller: float | None) -> str:
    if not x_smaller:
        return "of unknown size relative to the teacher"
    if round(x_smaller, 2) == 1.0:
        return "the same size as the teacher"
    return f"{times(x_smaller)} smaller" if x_smaller > 1 else f"{times(1 / x_smaller)} larger"


def _iv(iv: dict | None) -> str:
    return f" [{iv['low']:g}, {iv['high']:g}]" if iv else ""


def _diff(d: dict) -> str:
    return f"{d['difference']:+g} [{d['low']:+g}, {d['high']:+g}]"


def quality_phrase(model: dict, teacher: dict, metric: str) -> str:
    """"beats the teacher's gleu: 0.843 [0.81, 0.87] vs 0.797 [...], difference +0.046 [+0.012, +0.08]"."""
    v = model.get("vs_teacher")
    mv, tv = model["metrics"][metric], teacher["metrics"][metric]
    if not v:
        return f"scores {mv:g} on {metric} against the teacher's {tv:g} (no interval)"
    return (f"{v['verdict']} the teacher on {metric}: {mv:g}{_iv(model.get('interval'))} vs "
            f"{tv:g}{_iv(teacher.get('interval'))}, difference {_diff(v)}")


def verdict(rep: dict) -> str:
    """The headline: quality with its paired interval, cost from the serving measurement, size."""
    metric = rep["eval"]["primary_metric"]
    distilled = [r for r in rep["models"] if r["role"] == "distilled student"]
    chosen = [r for r in distilled if r.get("chosen")]
    s = (chosen or sorted(distilled, key=lambda r: -r["metrics"][metric]) or [None])[0]
    t = next((r for r in rep["models"] if r["role"] == "teacher"), None)
    if not (s and t):
        return ""
    who = f" {s['name']}" if len(distilled) > 1 else ""
    text = (f"**The distilled student{who} {quality_phrase(s, t, metric)} (95% paired bootstrap over "
            f"{rep['eval']['n']} rows); serving: {cost_phrase(s.get('cost_ratio'))}")
    if s.get("cost_ratio"):
        c = s["cost_ratio"]
        text += (f" (${s['cost_per_1k_usd']:.4f} vs ${t['cost_per_1k_usd']:.4f} per 1k requests; ratio "
                 f"{c['low']:.2f}-{c['high']:.2f} over {c['rounds']} rounds)")
    if s.get("x_smaller") and round(s["x_smaller"], 2) == 1.0:
        text += (".** Teacher and student have the same size here: any saving comes from the student's short "
                 "plain prompt, not from a smaller model.")
    else:
        text += f"; it is {size_phrase(s.get('x_smaller'))}.**"
    return text


def cascade_line(rep: dict) -> str:
    """The cascade in one sentence: how much it routes, what for, and what it reaches at what cost."""
    r = next((m for m in rep["models"] if m.get("cascade")), None)
    if r is None:
        return ""
    c, metric = r["cascade"], rep["eval"]["primary_metric"]
    bar = f"{c['target'] * 100:g}% of the teacher's {metric} ({c['bar']:g})"
    how = f"the lowest threshold reaching {bar}" if c["meets_target"] else f"no threshold reaches {bar}: the best one"
    return (f"\n**Cascade:** the student answers first and sends {c['routed_share']:.0%} of requests on to the teacher "
            f"(mean token logprob under {c['threshold']:.3g}, {how}; chosen on this eval set, so in-sample): "
            f"{quality_phrase(r, _teacher(rep), metric)}; serving vs the teacher alone: {cost_phrase(r.get('cost_ratio'))} "
            f"(${r['cost_per_1k_usd']:.4f} per 1k requests).\n")


def _teacher(rep: dict) -> dict | None:
    return next((m for m in rep["models"] if m["role"] == "teacher"), None)
