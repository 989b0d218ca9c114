"""Which models are worth it: the price-performance frontier and the cheapest model meeting the bar."""
from __future__ import annotations


def frontier_keys(models: list[dict], metric: str) -> list[str]:
    """The price-performance frontier: models no other model matches on cost and beats on quality
    (or matches on quality and beats on cost), cheapest first."""
    def q(m):
        return m["metrics"][metric]

    out = [m for m in models
           if not any(o is not m and o["cost_per_1k_usd"] <= m["cost_per_1k_usd"] and q(o) >= q(m)
                      and (o["cost_per_1k_usd"] < m["cost_per_1k_usd"] or q(o) > q(m)) for o in models)]
    return [m["key"] for m in sorted(out, key=lambda m: m["cost_per_1k_usd"])]


def choose_model(models: list[dict], metric: str, target: float | None) -> dict:
    """The cheapest non-teacher model reaching `target` x the teacher's metric, or a plain no.

    Ties on cost go to the better model. With no target (or no teacher) nothing is chosen.
    """
    teacher = next((m for m in models if m["role"] == "teacher"), None)
    if target is None or teacher is None:
        return {"target": target, "bar": None, "chosen": None, "meets": [], "message": ""}
    bar = round(target * teacher["metrics"][metric], 6)
    pool = [m for m in models if m["role"] != "teacher"]
    meets = sorted((m for m in pool if m["metrics"][metric] >= bar),
                   key=lambda m: (m["cost_per_1k_usd"], -m["metrics"][metric]))
    pct = f"{target * 100:g}% of the teacher's {metric} ({bar:g})"
    if meets:
        c = meets[0]
        msg = (f"Ship **{c['name']}**: the cheapest model reaching {pct}, at {c['metrics'][metric]:g} "
               f"and ${c['cost_per_1k_usd']:.4f} per 1k requests.")
    else:
        best = max(pool, key=lambda m: m["metrics"][metric]) if pool else None
        msg = f"**No student reaches {pct}**" + (
            f"; the best, {best['name']}, scores {best['metrics'][metric]:g}. Keep the teacher, or add data "
            f"or a larger student." if best else ".")
    return {"target": target, "bar": bar, "chosen": meets[0]["key"] if meets else None,
            "meets": [m["key"] for m in meets], "message": msg}


def headline_student(models: list[dict], metric: str) -> dict | None:
    """The distilled student the report speaks of: the chosen one, else the best."""
    distilled = [m for m in models if m["role"] == "distilled student"]
    return next((m for m in distilled if m.get("chosen")), None) or (
        max(distilled, key=lambda m: m["metrics"][metric]) if distilled else None)


def cheapest_sufficient(models: list[dict], student: str) -> dict:
    """The progression's answer: the cheapest prompt-only step whose quality is within the student's
    (the paired interval of its difference to the student reaches 0), and the closest step when none
    is. Ties on cost go to the better step, then to the small model (the teacher's twin in the offline
    default is the base student under the teacher's prompt)."""
    steps = [m for m in models if (m.get("vs_student") or {}).get(student)]
    enough = sorted((m for m in steps if m["vs_student"][student]["high"] >= 0),
                    key=lambda m: (m["cost_per_1k_usd"], -m["vs_student"][student]["difference"],
                                   "teacher" in m["role"]))
    closest = max(steps, key=lambda m: m["vs_student"][student]["difference"], default=None)
    return {"student": student, "steps": [m["key"] for m in steps], "step": enough[0]["key"] if enough else None,
            "closest": closest["key"] if closest else None}
