"""The report stage: report.json, report.md (a CoEdIT-style table), report.html (every row, one page),
frontier.png and progression.png from the stats and eval results the earlier stages wrote."""
from __future__ import annotations

from distill.io import read_json, read_jsonl, references, write_json, write_text_atomic
from distill.report import choose_model, frontier_keys, markdown_table, plot_frontier, plot_progression, render_markdown
from distill.report.ledger import ledger, one_off
from distill.report.phrases import cost_ratio
from distill.report.select import cheapest_sufficient, headline_student
from distill.rundir import RunDir
from distill.stages.adapt import describe
from distill.stages.context import RunContext, writes
from distill.stages.report_page import write_page
from distill.stats import EvalSummary, FilterStats, GenerateStats, RoundStats, TrainStats
from distill.teacher import cost_of

ROLE_ORDER = {"teacher": 0, "prompted teacher": 1, "base student": 2, "prompted base student": 3, "distilled student": 4,
              "cascade": 5}


def _stats(rd: RunDir, name: str) -> dict:
    p = rd.stats(name)
    return read_json(p) if p.exists() else {}


def model_rows(ev: EvalSummary) -> list[dict]:
    """One report row per evaluated model, in role order: its quality, cost and latency, and beside the
    teacher its share of the teacher's quality, how much cheaper and how much smaller it is."""
    metric, teacher = ev.primary_metric, ev.models.get("teacher")
    rows = []
    for key, m in sorted(ev.models.items(), key=lambda kv: ROLE_ORDER.get(kv[1].role, 9)):
        row = {"key": key, **m.model_dump(include={
            "name", "role", "engine", "parameters", "metrics", "interval", "intervals", "vs_teacher", "vs_student", "vs_separate",
            "cost_per_1k_usd", "cost_rule", "cost_note", "serving", "quality_pass_cost_per_1k_usd", "latency_p50_s",
            "latency_p95_s", "latency_rule", "throughput_rps", "prompt", "breakdown", "cascade"}),
               "prompt_tokens": round(m.prompt_tokens / m.n) if m.n else None,
               "cached_tokens": round(m.cached_tokens / m.n) if m.n else None}
        if teacher:
            tq = teacher.metrics[metric]
            row["pct_of_teacher_quality"] = round(100 * m.metrics[metric] / tq, 1) if tq else None
            row["cost_ratio"] = cost_ratio(teacher.model_dump(), m.model_dump()) if key != "teacher" else None
            row["x_cheaper"] = row["cost_ratio"]["ratio"] if row["cost_ratio"] else None
            row["x_smaller"] = round(teacher.parameters / m.parameters, 2) if teacher.parameters and m.parameters else None
        rows.append(row)
    return rows


def build_report(ctx: RunContext) -> dict:
    cfg, rd = ctx.cfg, ctx.dir
    summary_path = rd.eval_summary(ctx.eval_path)
    if not summary_path.exists():
        raise FileNotFoundError(f"{summary_path}: not found (run `distill evaluate` first)")
    ev = EvalSummary.read(summary_path)
    metric = ev.primary_metric
    rows = model_rows(ev)
    gen, filt = GenerateStats.read(rd.stats("generate")), FilterStats.read(rd.stats("filter"))
    train, adapt = TrainStats.read(rd.stats("train")), _stats(rd, "adapt")
    frontier = frontier_keys(rows, metric)
    selection = choose_model(rows, metric, cfg.quality_target)
    for r in rows:
        r["on_frontier"] = r["key"] in frontier
        r["chosen"] = r["key"] == selection["chosen"]
    student = headline_student(rows, metric)
    return {
        "progression": progression(rows, student),
        "bill": _bill(ctx, rows, gen, filt, train, adapt, ev),
        "prices": _prices(cfg),
        "task": ctx.task.name, "frontier": frontier,
        "selection": selection,
        "eval": headline_set(ctx, ev),
        "eval_sets": [other_set(ctx, name, rows) for name, rows in ctx.eval_sets.items()],
        "models": rows,
        "data": {
            "generated": filt.generated, "kept": filt.kept, "dropped": filt.dropped,
            "kept_with_edit": filt.kept_with_edit, "kept_by_source": filt.kept_by_source,
            "by_stage": [{k: s[k] for k in ("stage", "in", "kept", "dropped", "top_reasons")} for s in filt.stages],
        },
        "teacher_usage": {"model": cfg.teacher.model, **gen.totals.model_dump(exclude={"errors", "cost_rule", "finished_at"}),
                          "cost_rule": gen.last.cost_rule},
        "teacher_adaptation": {"description": describe(cfg), **{k: v for k, v in adapt.items()
                                                                  if k in ("steps", "first_loss", "last_loss", "wall_seconds")}},
        "judge_usage": filt.teacher,
        "pairwise_judge": ev.judge,
        "cut_short": gen.counts.cut_short,
        "training": train.model_dump(include={"rows", "steps", "epochs", "lora", "first_loss", "last_loss", "plan"}),
        "training_by_student": {v.name or k: v.model_dump(include={
            "keep_layers", "kept_layers", "lora", "method", "kd_teacher", "steps", "parameters", "first_loss", "last_loss",
            "wall_seconds"})
                                for k, v in (train.students or {}).items()},
        "rounds": generation_rounds(ctx, student, metric),
        "wall_seconds": {"generate": gen.totals.wall_seconds if rd.stats("generate").exists() else None,
                         "filter": filt.wall_seconds, "train": train.wall_seconds, "evaluate": ev.wall_seconds},
    }


def generation_rounds(ctx: RunContext, student: dict | None, metric: str) -> list[dict]:
    """Per generation round (generation.rounds > 1): the rows it added to the kept set (round 1's with
    the seeds), then the student trained after it: the share of the next round's probe rows it got
    wrong and its quality on the headline set (the last round's: the evaluated student)."""
    rd, n = ctx.dir, ctx.cfg.generation.rounds
    if n == 1 or not rd.train.exists():
        return []
    kept = [r.get("meta") or {} for r in read_jsonl(rd.train)]
    out = []
    for r in range(1, n + 1):
        nxt = RoundStats.read(rd.stats(f"round{r + 1}")) if r < n else None
        if nxt is not None:
            probe = {"rows": nxt.probe_rows, "missed": nxt.missed,
                     "missed_pct": round(100 * nxt.missed / nxt.probe_rows, 1) if nxt.probe_rows else None}
            quality = nxt.student_quality
        else:
            probe = None
            quality = {"metric": metric, **student["interval"]} if student and student.get("interval") else None
        out.append({"round": r, "rows_kept": sum(m.get("round", 1) == r for m in kept), "probe": probe,
                    "student": quality})
    return out


def progression(rows: list[dict], student: dict | None) -> dict | None:
    """The steps before fine-tuning against the headline student: the cheapest one as good, and what
    the student saves against it (step cost / student cost per round)."""
    if student is None:
        return None
    by_key, p = {r["key"]: r for r in rows}, cheapest_sufficient(rows, student["key"])
    if not p["steps"]:
        return None
    for k in p["steps"]:
        by_key[k]["cost_vs_student"] = cost_ratio(by_key[k], student)
    return p


def headline_set(ctx: RunContext, ev: EvalSummary) -> dict:
    """The headline eval set as the report describes it."""
    return {"name": ev.name, "path": ev.eval_path, "n": ev.n, "primary_metric": ev.primary_metric,
            "tokenized": ev.tokenized, "baseline": ev.baseline, "baseline_name": ev.baseline_name,
            "published": published(ctx.cfg, ev.name), "edits": ctx.task.spec.kind in ("rewrite", "generation"),
            "references_per_row": max((len(references(r)) for r in ctx.eval_rows), default=1)}


def published(cfg, name: str) -> list[dict]:
    """The results reported elsewhere on this eval set, as the config gives them (never in a verdict)."""
    return [p.model_dump() for p in cfg.eval.published if p.set == name]


def other_set(ctx: RunContext, name: str, rows) -> dict:
    """A table of one more eval set (eval.sets): every model's metrics, intervals and difference to the teacher."""
    path = ctx.dir.eval_summary(rows.path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run `distill evaluate` first)")
    ev = EvalSummary.read(path)
    models = [{"key": k, **m.model_dump(include={"name", "role", "prompt", "metrics", "interval", "intervals", "vs_teacher"})}
              for k, m in sorted(ev.models.items(), key=lambda kv: ROLE_ORDER.get(kv[1].role, 9))]
    return {"name": name, "path": ev.eval_path, "n": ev.n, "primary_metric": ev.primary_metric, "tokenized": ev.tokenized,
            "references_per_row": max((len(references(r)) for r in rows), default=1), "baseline": ev.baseline,
            "baseline_name": ev.baseline_name,
            "models": models, "published": published(ctx.cfg, name), "cost_usd": ev.cost_usd}


def _bill(ctx: RunContext, rows: list[dict], gen, filt, train, adapt: dict, ev: EvalSummary) -> dict:
    """Every stage's one-off cost, serving per 1k requests, and the break-even of the headline student."""
    cfg = ctx.cfg

    def hw(seconds: float | None, hardware: str) -> tuple[float, str]:
        c = cost_of(cfg.pricing, hosted=False, model="", hardware=hardware, prompt_tokens=0, completion_tokens=0,
                    seconds=seconds or 0.0)
        return c["usd"], c["rule"].replace("self-hosted ", "")

    trained = {k: v for k, v in (train.students or {}).items()} or ({"": train} if train.wall_seconds else {})
    train_s = sum(v.wall_seconds or 0.0 for v in trained.values())
    judge = filt.teacher or {}
    stages = [one_off("teacher generation", gen.totals.cost_usd, gen.last.cost_rule or "not run"),
              one_off("teacher adaptation", *hw(adapt.get("wall_seconds"), cfg.teacher.hardware))
              if cfg.teacher.adaptation.method == "lora" else one_off("teacher adaptation", 0.0, "few-shot prompt: none"),
              one_off("judge", judge.get("cost_usd"), judge.get("cost_rule") or "no LLM filter"),
              *([one_off("evaluation's pairwise judge", ev.judge["cost_usd"], ev.judge["cost_rule"])] if ev.judge else []),
              one_off("training", *hw(train_s, cfg.student.hardware)),
              one_off("evaluation", (ev.cost_usd or 0.0) + sum(EvalSummary.read(ctx.dir.eval_summary(r.path)).cost_usd or 0.0
                                                               for r in ctx.eval_sets.values()),
                      "every quality pass and the serving measurement")]
    student = headline_student(rows, ev.primary_metric)
    teacher = next((r for r in rows if r["role"] == "teacher"), None)
    return ledger(stages, teacher, student, cfg.pricing.expected_requests_per_day)


def _prices(cfg) -> list[dict]:
    """The prices the report used, with their source and date."""
    used = {cfg.student.hardware, *(s.hardware for s in cfg.students)}
    used |= set() if cfg.teacher.hosted else {cfg.teacher.hardware}
    out = [{"item": f"hardware {k}", "price": f"${p.usd_per_hour:g}/h", "source": p.source, "as_of": p.as_of}
           for k, p in cfg.pricing.hardware.items() if k in used]
    if cfg.teacher.hosted and cfg.teacher.model in cfg.pricing.models:
        p = cfg.pricing.models[cfg.teacher.model]
        out.append({"item": f"hosted {cfg.teacher.model}", "source": p.source, "as_of": p.as_of,
                    "price": f"${p.input_per_1m:g} / ${p.output_per_1m:g} per 1M input / output tokens"})
    return out


@writes
def run(ctx: RunContext) -> dict:
    rd = ctx.dir
    rep = build_report(ctx)
    md = render_markdown(rep, plot=f"![quality vs cost]({rd.frontier_png.name})",
                         progression_plot=f"![the progression]({rd.progression_png.name})")
    plot_frontier(rep, rd.frontier_png)
    plot_progression(rep, rd.progression_png)
    write_json(rd.report_json, rep)
    write_text_atomic(rd.report_md, md)
    write_page(ctx, rep)
    return rep


def views(rep: dict, rd: RunDir) -> tuple[str, str]:
    """(markdown table, the whole report in markdown with the plot named by path): what the console
    and the Prefect artifact show."""
    return markdown_table(rep), render_markdown(rep, plot=f"Quality vs cost plot: `{rd.frontier_png}`",
                                                progression_plot=f"Progression plot: `{rd.progression_png}`")
