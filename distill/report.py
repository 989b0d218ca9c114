"""The price-performance report: report.json, report.md (a CoEdIT-style table) and frontier.png."""
from __future__ import annotations

from pathlib import Path

from distill.adapt import describe
from distill.config import Config
from distill.evaluate import eval_dir
from distill.io import read_json, write_json, write_text_atomic

ROLE_ORDER = {"teacher": 0, "base student": 1, "distilled student": 2}


def _stats(run_dir: Path, name: str) -> dict:
    p = run_dir / "stats" / f"{name}.json"
    return read_json(p) if p.exists() else {}


def _fmt_params(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


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


def build_report(cfg: Config, run_dir: Path) -> dict:
    summary_path = eval_dir(cfg, run_dir) / "summary.json"
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path}: not found (run `distill evaluate` first)")
    ev = read_json(summary_path)
    metric = ev["primary_metric"]
    models = ev["models"]
    teacher = models.get("teacher")
    rows = []
    for key, m in sorted(models.items(), key=lambda kv: ROLE_ORDER.get(kv[1]["role"], 9)):
        q = m["metrics"][metric]
        row = {"key": key, "name": m["name"], "role": m["role"], "engine": m["engine"],
               "parameters": m["parameters"], "metrics": m["metrics"],
               "cost_per_1k_usd": m["cost_per_1k_usd"], "cost_rule": m["cost_rule"],
               "latency_p50_s": m["latency_p50_s"], "latency_p95_s": m["latency_p95_s"],
               "throughput_rps": m["throughput_rps"], "prompt": m["prompt"]}
        if teacher:
            tq, tc, tp = teacher["metrics"][metric], teacher["cost_per_1k_usd"], teacher["parameters"]
            row["pct_of_teacher_quality"] = round(100 * q / tq, 1) if tq else None
            row["x_cheaper"] = round(tc / m["cost_per_1k_usd"], 2) if m["cost_per_1k_usd"] else None
            row["x_smaller"] = round(tp / m["parameters"], 2) if tp and m["parameters"] else None
        rows.append(row)
    gen, filt, train = _stats(run_dir, "generate"), _stats(run_dir, "filter"), _stats(run_dir, "train")
    frontier = frontier_keys(rows, metric)
    selection = choose_model(rows, metric, cfg.quality_target)
    for r in rows:
        r["on_frontier"] = r["key"] in frontier
        r["chosen"] = r["key"] == selection["chosen"]
    return {
        "task": cfg.task,
        "frontier": frontier,
        "selection": selection,
        "eval": {"path": ev["eval_path"], "n": ev["n"], "primary_metric": metric, "copy_baseline": ev["copy_baseline"]},
        "models": rows,
        "data": {
            "generated": filt.get("generated"), "kept": filt.get("kept"), "dropped": filt.get("dropped"),
            "kept_with_edit": filt.get("kept_with_edit"), "kept_by_source": filt.get("kept_by_source"),
            "by_stage": [{k: s[k] for k in ("stage", "in", "kept", "dropped", "top_reasons")} for s in filt.get("stages", [])],
        },
        "teacher_usage": {"model": cfg.teacher.model, **gen.get("totals", {}),
                          "cost_rule": (gen.get("last") or {}).get("cost_rule")},
        "teacher_adaptation": {"description": describe(cfg), **{k: v for k, v in _stats(run_dir, "adapt").items()
                                                                  if k in ("steps", "first_loss", "last_loss", "wall_seconds")}},
        "judge_usage": filt.get("teacher"),
        "cut_short": (gen.get("counts") or {}).get("cut_short"),
        "training": {k: train.get(k) for k in ("rows", "steps", "epochs", "lora", "first_loss", "last_loss", "plan")},
        "training_by_student": {v.get("name", k): {x: v.get(x) for x in ("keep_layers", "lora", "steps", "parameters",
                                                                        "first_loss", "last_loss", "wall_seconds")}
                                for k, v in (train.get("students") or {}).items()},
        "wall_seconds": {"generate": gen.get("totals", {}).get("wall_seconds"), "filter": filt.get("wall_seconds"),
                         "train": train.get("wall_seconds"), "evaluate": ev.get("wall_seconds")},
    }


def markdown_table(rep: dict) -> str:
    metric = rep["eval"]["primary_metric"]
    names = [k for k in rep["models"][0]["metrics"]] if rep["models"] else []
    head = ["model", "role", "size", "x smaller", *names, f"% of teacher {metric}", "cost / 1k req", "x cheaper",
            "latency p50 / p95", "frontier"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rep["models"]:
        cells = [r["name"], r["role"], _fmt_params(r["parameters"]), _x(r.get("x_smaller")),
                 *[f"{r['metrics'][k]}" for k in names],
                 f"{r['pct_of_teacher_quality']}%" if r.get("pct_of_teacher_quality") is not None else "-",
                 f"${r['cost_per_1k_usd']:.4f}", _x(r.get("x_cheaper")),
                 f"{r['latency_p50_s']:.2f} s / {r['latency_p95_s']:.2f} s",
                 "**chosen**" if r.get("chosen") else "yes" if r.get("on_frontier") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    copy = rep["eval"]["copy_baseline"]
    lines.append("| copy the input (baseline) | - | - | - | " + " | ".join(str(copy[k]) for k in names)
                 + " | - | $0 | - | - | - |")
    return "\n".join(lines)


def _x(v) -> str:
    return f"{v:.1f}x" if v else "-"


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "?"


def verdict(rep: dict) -> str:
    """One sentence a reader can act on: quality kept and money saved by the distilled student."""
    metric = rep["eval"]["primary_metric"]
    by_role = {r["role"]: r for r in rep["models"]}
    distilled = [r for r in rep["models"] if r["role"] == "distilled student"]
    chosen = [r for r in distilled if r.get("chosen")]
    s = (chosen or sorted(distilled, key=lambda r: -r["metrics"][metric]) or [None])[0]
    t, b = by_role.get("teacher"), by_role.get("base student")
    if not (s and t):
        return ""
    who = f" {s['name']}" if len(distilled) > 1 else ""
    text = (f"**The distilled student{who} reaches {s['pct_of_teacher_quality']}% of the teacher's {metric} "
            f"({s['metrics'][metric]} vs {t['metrics'][metric]}) at {_x(s.get('x_cheaper'))} lower cost per 1k requests")
    if b:
        text += f", up from {b['metrics'][metric]} for the base student before distillation"
    text += ".**"
    if s.get("x_smaller") and s["x_smaller"] <= 1.0:
        text += (" Teacher and student have the same size here (the offline default distils a model into "
                 "itself): the saving comes from the student's short plain prompt and batched serving, "
                 "not from a smaller model.")
    return text


def _judge_line(j: dict | None) -> str:
    if not j:
        return ""
    return (f" Filters that asked the teacher (the judge): {j['requests_sent']} requests ({j['cache_hits']} reused), "
            f"${j['cost_usd']:.4f} ({j['cost_rule']}).")


def _ladder_lines(ladder: dict | None) -> str:
    if not ladder:
        return ""
    rows = "\n".join(f"| {n} | {_fmt_params(v['parameters'])} | {v['keep_layers'] or 'all'} | "
                     f"{'LoRA' if v['lora'] else 'full'} | {v['steps']} | {_num(v['first_loss'])} -> {_num(v['last_loss'])} | "
                     f"{v['wall_seconds']:.0f} s |" for n, v in ladder.items())
    return ("\n| student | size | layers kept | fine-tuning | steps | loss | time |\n|---|---|---|---|---|---|---|\n"
            + rows + "\n")


def render_markdown(rep: dict) -> str:
    d, u = rep["data"], rep["teacher_usage"]
    tr = rep["training"]
    stages = "\n".join(f"| {s['stage']} | {s['in']} | {s['kept']} | {s['dropped']} | "
                       + "; ".join(f"{k}: {v}" for k, v in s["top_reasons"].items()) + " |" for s in d["by_stage"])
    rules = "\n".join(f"- **{r['name']}** ({r['engine']}, {r['prompt']}): {r['cost_rule']} for "
                      f"{rep['eval']['n']} requests" for r in rep["models"])
    wall = ", ".join(f"{k} {v:.0f} s" for k, v in rep["wall_seconds"].items() if v is not None)
    return f"""# distill report: {rep['task']}

Eval set: `{rep['eval']['path']}` ({rep['eval']['n']} held-out rows, never shown to the teacher).
{f"{chr(10)}> **Generation was cut short:** {rep['cut_short']}. The student was trained on the data made before the stop.{chr(10)}" if rep.get("cut_short") else ""}
{verdict(rep)}
{(chr(10) + rep['selection']['message'] + chr(10)) if rep.get('selection', {}).get('message') else ''}
{markdown_table(rep)}

![quality vs cost](frontier.png)

## How each model was priced
{rules}

## Data
{d['generated']} rows generated, {d['kept']} kept ({d['kept_with_edit']} with an edit; by source {d['kept_by_source']}), {d['dropped']} dropped (ledger: `data/dropped.jsonl`).

| stage | in | kept | dropped | top reasons |
|---|---|---|---|---|
{stages}

## Teacher usage
Adapted to the seeds by {rep['teacher_adaptation']['description']}. Generation: {u.get('requests_sent', 0)} requests sent ({u.get('cache_hits', 0)} reused from the store, {u.get('failed', 0)} failed), {u.get('prompt_tokens', 0)} prompt + {u.get('completion_tokens', 0)} completion tokens, ${u.get('cost_usd', 0):.4f} ({u.get('cost_rule')}).{_judge_line(rep.get('judge_usage'))}

## Training
{tr.get('rows')} rows, {tr.get('steps')} steps ({tr.get('epochs')} epochs), {'LoRA (merged)' if tr.get('lora') else 'full fine-tuning'}, {(tr.get('plan') or {}).get('precision')} on {(tr.get('plan') or {}).get('device')}; loss {_num(tr.get('first_loss'))} -> {_num(tr.get('last_loss'))}.

{_ladder_lines(rep.get('training_by_student'))}
## Wall time per stage
{wall}
"""


def plot_frontier(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    metric = rep["eval"]["primary_metric"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    colors = {"teacher": "tab:red", "base student": "tab:gray", "distilled student": "tab:blue"}
    for r in rep["models"]:
        x = max(r["cost_per_1k_usd"], 1e-9)
        y = r["metrics"][metric]
        ax.scatter([x], [y], s=80, color=colors.get(r["role"], "tab:green"), zorder=3)
        ax.annotate(f"{r['name']}\n({_fmt_params(r['parameters'])})", (x, y), textcoords="offset points",
                    xytext=(8, -14), fontsize=8)
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
    copy = rep["eval"]["copy_baseline"][metric]
    ax.axhline(copy, color="lightgray", linestyle="--", linewidth=1)
    ax.text(ax.get_xlim()[0], copy, " copy-the-input baseline", va="bottom", fontsize=7, color="gray")
    ax.set_xscale("log")
    xs = [max(r["cost_per_1k_usd"], 1e-9) for r in rep["models"]]
    if xs:
        ax.set_xlim(min(xs) / 2.5, max(xs) * 4)
    ys = [r["metrics"][metric] for r in rep["models"]] + [copy] + ([bar] if bar is not None else [])
    span = max(ys) - min(ys) or 1
    ax.set_ylim(min(ys) - 0.1 * span, max(ys) + 0.12 * span)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:g}"))
    # label the 2s and 5s between decades too: runs rarely span more than one or two decades
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"${v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel("cost per 1k requests (USD, log scale)")
    ax.set_ylabel(metric.upper() if len(metric) <= 5 else metric)
    ax.set_title(f"{rep['task']}: quality vs cost")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def report_stage(cfg: Config, run_dir: Path) -> dict:
    rep = build_report(cfg, run_dir)
    md = render_markdown(rep)
    plot_frontier(rep, run_dir / "frontier.png")
    write_json(run_dir / "report.json", rep)
    write_text_atomic(run_dir / "report.md", md)
    rep["markdown_table"] = markdown_table(rep)
    rep["markdown"] = md
    return rep
