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
    """One row per model of the report: size, metrics, share of the teacher, cost, latency."""
    return [{"model": r["name"], "role": r["role"], "parameters": r["parameters"], **r["metrics"],
             "% of teacher": r.get("pct_of_teacher_quality"), "cost per 1k (USD)": r["cost_per_1k_usd"],
             "x cheaper": r.get("x_cheaper"), "latency p50 (s)": r["latency_p50_s"]} for r in rep["models"]]
