"""The report stage: report.json, report.md (a CoEdIT-style table) and frontier.png from the stats and
eval results the earlier stages wrote."""
from __future__ import annotations

from distill.config import Config
from distill.io import read_json, write_json, write_text_atomic
from distill.report import choose_model, frontier_keys, markdown_table, plot_frontier, render_markdown
from distill.rundir import RunDir
from distill.stages.adapt import describe
from distill.stages.context import RunContext

ROLE_ORDER = {"teacher": 0, "base student": 1, "distilled student": 2}


def _stats(rd: RunDir, name: str) -> dict:
    p = rd.stats(name)
    return read_json(p) if p.exists() else {}


def build_report(cfg: Config, rd: RunDir) -> dict:
    summary_path = rd.eval_summary(cfg.eval.path)
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
    gen, filt, train = _stats(rd, "generate"), _stats(rd, "filter"), _stats(rd, "train")
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
        "teacher_adaptation": {"description": describe(cfg), **{k: v for k, v in _stats(rd, "adapt").items()
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


def run(ctx: RunContext) -> dict:
    rd = ctx.run
    rep = build_report(ctx.cfg, rd)
    md = render_markdown(rep, plot=f"![quality vs cost]({rd.frontier_png.name})")
    plot_frontier(rep, rd.frontier_png)
    write_json(rd.report_json, rep)
    write_text_atomic(rd.report_md, md)
    return rep


def views(rep: dict, rd: RunDir) -> tuple[str, str]:
    """(markdown table, the whole report in markdown with the plot named by path): what the console
    and the Prefect artifact show."""
    return markdown_table(rep), render_markdown(rep, plot=f"Quality vs cost plot: `{rd.frontier_png}`")
