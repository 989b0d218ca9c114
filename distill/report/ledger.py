"""The whole bill: what distilling cost once (every stage), what each model costs per request, and
after how many requests the student has paid for its distillation."""
from __future__ import annotations

import math


def one_off(stage: str, usd: float | None, how: str) -> dict:
    return {"stage": stage, "usd": round(usd or 0.0, 6), "how": how}


def break_even(one_off_usd: float, teacher_per_1k: float, student_per_1k: float,
               requests_per_day: float | None) -> dict:
    """Requests (and days at the expected traffic) until the per-request saving repays the one-off cost.

    A student that costs as much as the teacher per request, or more, never pays back: requests and
    days are None and the message says so.
    """
    saving_per_request = (teacher_per_1k - student_per_1k) / 1000
    if saving_per_request <= 0:
        return {"saving_per_1k_usd": round(saving_per_request * 1000, 7), "requests": None, "days": None,
                "message": "never: serving the student costs as much as the teacher or more, so the one-off "
                           f"${one_off_usd:.4f} is not paid back"}
    requests = math.ceil(one_off_usd / saving_per_request)
    days = requests / requests_per_day if requests_per_day else None
    when = f" ({_days(days)} at {requests_per_day:,.0f} requests a day)" if days is not None else ""
    return {"saving_per_1k_usd": round(saving_per_request * 1000, 7), "requests": requests,
            "days": round(days, 3) if days is not None else None,
            "message": f"after {requests:,} requests{when}, the ${saving_per_request * 1000:.4f} saved per 1k "
                       f"requests has paid the one-off ${one_off_usd:.4f}"}


def _days(d: float) -> str:
    if d < 1 / 24:
        return f"{d * 24 * 60:.0f} minutes"
    if d < 1:
        return f"{d * 24:.1f} hours"
    return f"{d:,.1f} days"


def ledger(stages: list[dict], teacher: dict | None, student: dict | None, requests_per_day: float | None) -> dict:
    """{"one_off": stages, "one_off_usd", "serving_per_1k": {model: usd}, "break_even"} from report rows."""
    total = round(sum(s["usd"] for s in stages), 6)
    out = {"one_off": stages, "one_off_usd": total, "serving_per_1k": {}, "break_even": None}
    for r in (teacher, student):
        if r:
            out["serving_per_1k"][r["name"]] = r["cost_per_1k_usd"]
    if teacher and student:
        out["break_even"] = {"student": student["name"],
                             **break_even(total, teacher["cost_per_1k_usd"], student["cost_per_1k_usd"], requests_per_day)}
    return out
