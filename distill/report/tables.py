"""The report's tables as rows, built once and shown three ways: report.md, the console and Prefect
artifacts."""
from __future__ import annotations


def fmt_params(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def reasons_text(top_reasons: dict[str, int]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in top_reasons.items())


def filter_rows(stages: list[dict]) -> list[dict]:
    """One row per filter stage: in, kept, dropped and its top reasons."""
    return [{"stage": s["stage"], "in": s["in"], "kept": s["kept"], "dropped": s["dropped"],
             "top reasons": reasons_text(s["top_reasons"])} for s in stages]


def comparison_rows(rep: dict) -> list[dict]:
    """One row per model of the report: size, metrics with the primary one's interval and difference to
    the teacher, cost and how it compares, latency."""
    from distill.report.phrases import cost_phrase

    def iv(d: dict | None, key: str = "") -> str:
        return f"{d.get(key, '')}{' ' if key else ''}[{d['low']:g}, {d['high']:g}]".strip() if d else "-"

    return [{"model": r["name"], "role": r["role"], "prompt": r.get("prompt"), "prompt tokens": r.get("prompt_tokens"),
             "parameters": r["parameters"],
             **r["metrics"], "95% CI": iv(r.get("interval")),
             "vs teacher": f"{r['vs_teacher']['verdict']} {iv(r['vs_teacher'], 'difference')}" if r.get("vs_teacher") else "-",
             "cost per 1k (USD)": r["cost_per_1k_usd"],
             "serving vs teacher": cost_phrase(r["cost_ratio"]) if r.get("cost_ratio") else "-",
             "latency p50 (s)": r["latency_p50_s"]} for r in rep["models"]]
