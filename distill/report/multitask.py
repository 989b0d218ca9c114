"""The multi-task report: per task every model with its interval (the separate, merged and joint students
with their paired difference to the separate one), then what serving each way costs a month, and the
cheapest way that meets every task's bar. Pure functions over the per-task reports."""
from __future__ import annotations

import math

from distill.report.phrases import _diff

HOURS_PER_MONTH = 730
DAYS_PER_MONTH = 30
MACHINE_RULE = ("each deployment keeps at least one replica loaded around the clock, and as many as its traffic keeps "
                "busy: a model's busy hours are its requests x its measured cost per request / the hourly price; one "
                "model serving every task adds the tasks' busy hours")


def way_keys(ways: list[str], merges: list[str]) -> dict[str, str]:
    """Way name -> the model key it has in each task's evaluation."""
    out = {"separate": "student"} if "separate" in ways else {}
    out |= {name: f"student:{name}" for name in merges} if "merged" in ways else {}
    return out | ({"joint": "student:joint"} if "joint" in ways else {})


def task_table(name: str, rep: dict, keys: dict[str, str], target: float) -> dict:
    """One task: its metric, its bar (target x the teacher's primary metric), and every model's figures."""
    metric = rep["eval"]["primary_metric"]
    by_key = {m["key"]: m for m in rep["models"]}
    teacher = by_key.get("teacher")
    bar = target * teacher["metrics"][metric] if teacher else None
    way_of = {k: w for w, k in keys.items()}
    rows = []
    for m in rep["models"]:
        if m["role"] == "distilled student" and m["key"] not in way_of:
            continue
        iv = m.get("interval") or {"value": m["metrics"][metric]}
        rows.append({"key": m["key"], "way": way_of.get(m["key"]), "name": m["name"], "role": m["role"],
                     "value": iv["value"], "low": iv.get("low"), "high": iv.get("high"),
                     "vs_separate": m.get("vs_separate"), "cost_per_1k_usd": m["cost_per_1k_usd"],
                     "meets_bar": bar is not None and iv["value"] >= bar})
    return {"task": name, "metric": metric, "n": rep["eval"]["n"], "target": target, "bar": bar, "rows": rows}


def serving_bill(tables: list[dict], keys: dict[str, str], usd_per_hour: float, requests_per_day: dict[str, float],
                 hardware: str) -> list[dict]:
    """Per way: how many models it deploys, the replicas its traffic needs (MACHINE_RULE), what that costs
    a month, and whether it meets every task's bar."""
    out = []
    for way in keys:
        per = [next(r for r in t["rows"] if r["way"] == way) for t in tables]
        busy = [requests_per_day[t["task"]] * DAYS_PER_MONTH * r["cost_per_1k_usd"] / 1000 / usd_per_hour if usd_per_hour
                else 0.0 for t, r in zip(tables, per)]
        if way == "separate":
            deployments, replicas = len(tables), sum(max(1, math.ceil(b / HOURS_PER_MONTH)) for b in busy)
        else:
            deployments, replicas = 1, max(1, math.ceil(sum(busy) / HOURS_PER_MONTH))
        monthly = replicas * usd_per_hour * HOURS_PER_MONTH
        requests = sum(requests_per_day[t["task"]] for t in tables) * DAYS_PER_MONTH
        out.append({"way": way, "deployments": deployments, "replicas": replicas, "hardware": hardware,
                    "busy_hours_per_month": round(sum(busy), 3), "usd_per_month": round(monthly, 2),
                    "usd_per_1k_requests": round(monthly / requests * 1000, 6) if requests else None,
                    "meets_every_bar": all(r["meets_bar"] for r in per),
                    "worst_share_of_bar": min((r["value"] / t["bar"] for t, r in zip(tables, per) if t["bar"]), default=None)})
    return out


def cheapest(bill: list[dict]) -> dict | None:
    """The way that meets every task's bar at the lowest monthly cost (a tie: the one furthest above its bars)."""
    ok = [b for b in bill if b["meets_every_bar"]]
    return min(ok, key=lambda b: (b["usd_per_month"], -(b["worst_share_of_bar"] or 0))) if ok else None


def verdict(bill: list[dict], tables: list[dict]) -> str:
    """The report's one sentence: which way to deploy, or that none meets every bar."""
    best = cheapest(bill)
    separate = next((b for b in bill if b["way"] == "separate"), None)
    if best is None:
        misses = []
        for t in tables:
            missed = [r["way"] for r in t["rows"] if r["way"] and not r["meets_bar"]]
            if missed:
                misses.append(f"{t['task']} (bar {_bar(t['bar'])}): {', '.join(missed)}")
        return "No way meets every task's bar: " + "; ".join(misses) + "."
    vs = (f", against ${separate['usd_per_month']:,.2f} for the {separate['deployments']} separate students"
          if separate and separate is not best else "")
    return (f"The cheapest way that meets every task's bar: **{best['way']}**, {best['deployments']} deployment"
            f"{'s' if best['deployments'] > 1 else ''} on {best['replicas']} {best['hardware']} replica"
            f"{'s' if best['replicas'] > 1 else ''}, ${best['usd_per_month']:,.2f} a month{vs}.")


def _bar(bar: float | None) -> str:
    return "none (no teacher)" if bar is None else f"{bar:.4g}"


def markdown(rep: dict) -> str:
    """report.md of a multi-task run."""
    lines = [f"# Multi-task distillation: {', '.join(t['task'] for t in rep['tasks'])}", "", rep["verdict"], ""]
    for t in rep["tasks"]:
        lines += [f"## {t['task']}: {t['metric']} on {t['n']} eval rows (bar {_bar(t['bar'])}: "
                  f"{t['target']:g} x the teacher's)", "",
                  "| model | way | " + t["metric"] + " [95% CI] | vs separate [95% CI] | meets bar | $ per 1k requests |",
                  "|---|---|---|---|---|---|"]
        for r in t["rows"]:
            ci = f" [{r['low']:g}, {r['high']:g}]" if r["low"] is not None else ""
            lines.append(f"| {r['name']} | {r['way'] or r['role']} | {r['value']:g}{ci} | "
                         f"{_diff(r['vs_separate']) if r['vs_separate'] else '-'} | "
                         f"{'yes' if r['meets_bar'] else 'no'} | {r['cost_per_1k_usd']:.6f} |")
        lines.append("")
    lines += ["## Serving: one model or one per task", "",
              f"Traffic: {', '.join(f'{k} {v:,.0f}' for k, v in rep['requests_per_day'].items())} requests a day. "
              f"Replicas: {MACHINE_RULE}.", "",
              "| way | deployments | replicas | busy hours a month | $ a month | $ per 1k requests | meets every bar |",
              "|---|---|---|---|---|---|---|"]
    for b in rep["serving"]:
        lines.append(f"| {b['way']} | {b['deployments']} | {b['replicas']} x {b['hardware']} | {b['busy_hours_per_month']:g} | "
                     f"{b['usd_per_month']:,.2f} | {b['usd_per_1k_requests']:.6f} | {'yes' if b['meets_every_bar'] else 'no'} |")
    merges = rep.get("merges") or []
    if merges:
        lines += ["", "## How the merged students were made", ""]
        lines += [f"- {m['name']}: PEFT add_weighted_adapter `{m['method']}`, weights "
                  f"{', '.join(f'{k} {v:g}' for k, v in m['weights'].items())}"
                  + (f", density {m['density']:g}" if m.get("density") is not None else "")
                  + f", combined rank {m['rank']}" for m in merges]
    if rep.get("joint"):
        j = rep["joint"]
        lines += ["", f"The joint student: {j['rows']} rows ({j['balance']}: "
                  f"{', '.join(f'{k} {v}' for k, v in j['rows_by_task'].items())}), {j['steps']} steps."]
    return "\n".join(lines) + "\n"
