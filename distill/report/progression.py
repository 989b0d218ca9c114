"""Was fine-tuning needed? The progression before fine-tuning (instructions, the teacher's shots, many
shots, retrieved shots; the teacher's own prompts) set against the distilled student, step by step:
quality with intervals, the paired difference to the student, prompt length and serving cost; the
answer names the cheapest step as good as the student (`select.cheapest_sufficient`)."""
from __future__ import annotations

from pathlib import Path

from distill.report.phrases import _diff, _iv, cost_phrase
from distill.report.plot import save_cost_figure

ORDER = ["base_student", "base_zero_shot", "base_few_shot", "base_many_shot", "base_retrieval", "teacher",
         "teacher_many_shot", "teacher_retrieval"]


def steps(rep: dict) -> tuple[list[dict], dict | None]:
    """The prompt-only steps in the progression's order, and the student they are set against."""
    p = rep.get("progression")
    if not p:
        return [], None
    by_key = {r["key"]: r for r in rep["models"]}
    order = sorted(p["steps"], key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER))
    return [by_key[k] for k in order], by_key[p["student"]]


def fine_tuning_needed(rep: dict) -> str:
    """"Was fine-tuning needed?" in one paragraph: the cheapest prompt-only step whose quality is within
    the student's, and what the student saves against it; or that no prompt-only step gets there."""
    p, metric = rep.get("progression"), rep["eval"]["primary_metric"]
    if not p:
        return ""
    rows, s = steps(rep)
    by_key = {r["key"]: r for r in rows}
    sq = f"{s['metrics'][metric]:g}{_iv(s.get('interval'))}"
    if p["step"] is None:
        c = by_key[p["closest"]]
        return (f"**Was fine-tuning needed?** **yes**: no prompt-only step reaches the distilled student's {metric} "
                f"({sq}); the closest, {_step(c)}, differs by {_diff(c['vs_student'][s['key']])} (95% paired bootstrap).")
    c = by_key[p["step"]]
    saving = cost_phrase(c.get("cost_vs_student"))
    costs = f"${s['cost_per_1k_usd']:.4f} vs ${c['cost_per_1k_usd']:.4f} per 1k requests"
    head = (f"{_step(c)} reaches the distilled student's {metric} ({c['metrics'][metric]:g}{_iv(c.get('interval'))} "
            f"vs {sq}, difference {_diff(c['vs_student'][s['key']])}), the cheapest prompt-only step that does")
    if saving.endswith("cheaper"):
        return (f"**Was fine-tuning needed?** **not for quality**: {head}; what fine-tuning bought is serving cost: "
                f"the student is {saving} to serve ({costs}).")
    serving = saving if saving.startswith("no") else f"the student is {saving}"
    return (f"**Was fine-tuning needed?** **no**: {head}, and serving it costs no more than the student ({serving}; "
            f"{costs}): ship the prompt, not the fine-tune.")


def _step(r: dict) -> str:
    return r["name"]  # its name says the step: "SmolLM2-135M-Instruct (base, 6 retrieved)"


def section(rep: dict, plot: str) -> str:
    """The progression's paragraph, its table and its figure."""
    rows, s = steps(rep)
    if not rows:
        return ""
    metric = rep["eval"]["primary_metric"]
    lines = ["| step | prompt | prompt tokens | " + f"{metric} (95% CI) | minus the student (95% CI) | cost / 1k req | "
             "the student serves it |", "|---|---|---|---|---|---|---|"]
    for r in [*rows, s]:
        d = (r.get("vs_student") or {}).get(s["key"])
        lines.append(f"| {r['name']} | {r['prompt']} | {tokens_text(r)} | {r['metrics'][metric]:g}{_iv(r.get('interval'))} | "
                     f"{_diff(d) if d else '-'} | ${r['cost_per_1k_usd']:.4f} | "
                     f"{cost_phrase(r.get('cost_vs_student')) if r is not s else '-'} |")
    return (f"## Was fine-tuning needed? The progression\n\n{fine_tuning_needed(rep)}\n\n" + "\n".join(lines)
            + f"\n\nPrompt tokens per request (mean); where the engine reused a shared prefix from its prompt cache, how many "
              f"of them. Shots come from the seeds and the kept rows, never from an eval set.\n\n{plot}\n")


def tokens_text(r: dict) -> str:
    n, cached = r.get("prompt_tokens"), r.get("cached_tokens")
    if n is None:
        return "-"
    return f"{n}" + (f" ({cached} cached)" if cached else "")


def short_name(r: dict) -> str:
    """A step as the figure labels it: what its name says in brackets ("base, 6-shot"), else its role."""
    inner = r["name"].rpartition("(")[2].rstrip(")") if r["name"].endswith(")") else ""
    if r["role"] == "distilled student":
        return "distilled student"
    return f"teacher, {inner}" if "teacher" in r["role"] and inner else inner or r["role"]


def plot_progression(rep: dict, path: Path) -> None:
    """progression.png: quality (95% CI) against cost per 1k requests, one numbered point per step in
    the progression's order, the student last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows, s = steps(rep)
    if not rows:
        return
    metric = rep["eval"]["primary_metric"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    points: dict[tuple[float, float], list[str]] = {}  # steps at one point (the teacher and its twin) share a label
    for i, r in enumerate([*rows, s]):
        x, y = max(r["cost_per_1k_usd"], 1e-9), r["metrics"][metric]
        color = "tab:blue" if r is s else "tab:red" if "teacher" in r["role"] else "tab:orange"
        iv = r.get("interval")
        if iv:
            ax.errorbar([x], [y], yerr=[[y - iv["low"]], [iv["high"] - y]], fmt="none", ecolor=color, alpha=0.6,
                        capsize=3, zorder=2)
        ax.scatter([x], [y], s=70, color=color, zorder=3)
        points.setdefault((x, y), []).append(f"{i + 1}. {short_name(r)}")
    placed: list[tuple[float, float]] = []
    span = (max(y for _, y in points) - min(y for _, y in points)) or 1
    for (x, y), labels in points.items():  # a label near one already placed goes below it
        near = sum(abs(x / px - 1) < 0.3 and abs(y - py) < 0.06 * span for px, py in placed)
        ax.annotate(" = ".join(labels), (x, y), textcoords="offset points", xytext=(7, 4 - 13 * near), fontsize=7)
        placed.append((x, y))
    xs = [x for x, _ in points]
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 2, max(xs) * 5)
    save_cost_figure(fig, ax, path, metric, f"{rep['task']}: the steps before fine-tuning, and the student (95% CI)")
