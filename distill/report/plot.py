"""frontier.png: quality against cost per 1k requests, the frontier, the target and the chosen model."""
from __future__ import annotations

from pathlib import Path

from distill.io import atomic_path
from distill.report.tables import fmt_params as _fmt_params


def plot_frontier(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    metric = rep["eval"]["primary_metric"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = {"teacher": "tab:red", "base student": "tab:gray", "prompted base student": "tab:orange",
              "distilled student": "tab:blue", "cascade": "tab:purple"}
    placed: list[tuple[float, float]] = []
    for r in rep["models"]:
        x = max(r["cost_per_1k_usd"], 1e-9)
        y = r["metrics"][metric]
        iv, sv = r.get("interval"), r.get("serving")
        if iv or sv:  # the quality interval (95%) and the cost range over serving rounds
            ax.errorbar([x], [y], yerr=[[y - iv["low"]], [iv["high"] - y]] if iv else None,
                        xerr=[[x - max(sv["low"], 1e-9)], [sv["high"] - x]] if sv else None,
                        fmt="none", ecolor=colors.get(r["role"], "tab:green"), alpha=0.6, capsize=3, zorder=2)
        ax.scatter([x], [y], s=80, color=colors.get(r["role"], "tab:green"), zorder=3)
        # a model at nearly the same point as one already labelled gets its label above, not on top
        near = sum(abs(x / px - 1) < 0.15 and abs(y - py) < 0.05 * (abs(py) or 1) for px, py in placed)
        ax.annotate(f"{r['name']}\n({_fmt_params(r['parameters'])})", (x, y), textcoords="offset points",
                    xytext=(8, -14 + 26 * near), fontsize=8)
        placed.append((x, y))
    by_key = {r["key"]: r for r in rep["models"]}
    front = [by_key[k] for k in rep.get("frontier", []) if k in by_key]
    if len(front) > 1:
        ax.plot([max(r["cost_per_1k_usd"], 1e-9) for r in front], [r["metrics"][metric] for r in front],
                color="tab:blue", alpha=0.4, linewidth=1.5, zorder=2, label="frontier")
    chosen = by_key.get((rep.get("selection") or {}).get("chosen"))
    if chosen:
        ax.scatter([max(chosen["cost_per_1k_usd"], 1e-9)], [chosen["metrics"][metric]], s=260, marker="*",
                   color="gold", edgecolor="black", zorder=4, label="chosen")
    bar = (rep.get("selection") or {}).get("bar")
    if bar is not None:
        ax.axhline(bar, color="tab:green", linestyle=":", linewidth=1.2,
                   label=f"target: {rep['selection']['target'] * 100:g}% of teacher")
    if len(front) > 1 or chosen or bar is not None:
        ax.legend(loc="best", fontsize=7, framealpha=0.9)
    copy = rep["eval"]["baseline"][metric]
    ax.axhline(copy, color="lightgray", linestyle="--", linewidth=1)
    ax.text(ax.get_xlim()[0], copy, f" baseline: {rep['eval']['baseline_name']}", va="bottom", fontsize=7, color="gray")
    ax.set_xscale("log")
    xs = [max(r["cost_per_1k_usd"], 1e-9) for r in rep["models"]]
    if xs:
        ax.set_xlim(min(xs) / 2.5, max(xs) * 4)
    ys = [r["metrics"][metric] for r in rep["models"]] + [copy] + ([bar] if bar is not None else []) + [
        v for r in rep["models"] if r.get("interval") for v in (r["interval"]["low"], r["interval"]["high"])]
    span = max(ys) - min(ys) or 1
    ax.set_ylim(min(ys) - 0.1 * span, max(ys) + 0.12 * span)
    # label the 2s and 5s between decades too: runs rarely span more than one or two decades
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"${v:g}" if f"{v:.0e}"[0] in "25" else ""))
    save_cost_figure(fig, ax, path, metric, f"{rep['task']}: quality (95% CI) vs serving cost (range over rounds)")


def save_cost_figure(fig, ax, path: Path, metric: str, title: str) -> None:
    """The axes every quality-vs-cost figure shares (dollars on x, the metric on y), the figure written whole."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:g}"))
    ax.set_xlabel("cost per 1k requests (USD, log scale)")
    ax.set_ylabel(metric.upper() if len(metric) <= 5 else metric)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
