"""report.html's data, gathered from the run directory: the report, every model's predictions on the
headline eval set, the drop ledger joined to the generated rows, and the training losses. The page
itself is `distill.report.html`."""
from __future__ import annotations

from collections import defaultdict

from distill.filters import reason_kind
from distill.io import read_jsonl, write_text_atomic
from distill.report.html import loss_curve, png_data, render_html, shaded_confusion
from distill.report.phrases import verdict
from distill.report.progression import fine_tuning_needed
from distill.report.select import headline_student
from distill.report.tables import comparison_rows, fmt_params
from distill.stages.context import RunContext
from distill.stats import TrainStats
from distill.tasks import ClassificationTask

SAMPLES_PER_REASON = 3


def write_page(ctx: RunContext, rep: dict) -> None:
    write_text_atomic(ctx.dir.report_html, render_html(page_data(ctx, rep)))


def page_data(ctx: RunContext, rep: dict) -> dict:
    rd, task = ctx.dir, ctx.task
    preds = {m["key"]: read_jsonl(p) for m in rep["models"] if (p := rd.predictions(ctx.eval_path, m["key"])).exists()}
    models = [{"key": m["key"], "name": m["name"], "role": m["role"]} for m in rep["models"] if m["key"] in preds]
    student = (rep.get("progression") or {}).get("student") or (headline_student(rep["models"], rep["eval"]["primary_metric"])
                                                                 or {}).get("key")
    comparison = [{**r, "parameters": fmt_params(r["parameters"])} for r in comparison_rows(rep)]
    return {
        "task": rep["task"], "eval_path": rep["eval"]["path"], "n_rows": rep["eval"]["n"], "run_dir": str(rd),
        "verdict": [t for t in (verdict(rep), (rep.get("selection") or {}).get("message"), fine_tuning_needed(rep)) if t],
        "comparison_head": list(comparison[0]) if comparison else [], "comparison": comparison,
        "figures": [{"alt": alt, "data": png_data(p)} for alt, p in (("quality vs cost", rd.frontier_png),
                                                                     ("the progression", rd.progression_png)) if p.exists()],
        "models": models, "rows": eval_rows(preds), "student": student if student in preds else None,
        "student_name": next((m["name"] for m in models if m["key"] == student), "the student"),
        "teacher": "teacher" if "teacher" in preds else None,
        "labels": list(task.labels) if isinstance(task, ClassificationTask) else [],
        "diff": task.spec.kind in ("rewrite", "generation"), "routed": "cascade" in preds,
        "confusion": [shaded_confusion(m["name"], m["role"], m["breakdown"]["confusion"]) for m in rep["models"]
                      if (m.get("breakdown") or {}).get("confusion") and m["role"] != "base student"],
        "funnel": funnel(ctx, rep["data"]), "rounds": rep.get("rounds") or [], "losses": losses(ctx), "bill": rep["bill"],
        "judge": pairwise_rows(rep),
    }


def pairwise_rows(rep: dict) -> dict | None:
    """eval.judge's table: the judge, its warning, and per judged model its outcomes and rates."""
    j = rep.get("pairwise_judge")
    if not j:
        return None
    names = {m["key"]: m["name"] for m in rep["models"]}
    return {"judge": j["judge"], "against": j["against"], "warning": j.get("warning"),
            "rows": [{"name": names.get(k, k), **r} for k, r in j["models"].items() if r["n"]]}


def eval_rows(preds: dict[str, list[dict]]) -> list[dict]:
    """One record per eval row: its input, references, each model's answer and whether it equals a reference."""
    if not preds:
        return []
    first = next(iter(preds.values()))
    rows = []
    for i, p in enumerate(first):
        refs = [str(r) for r in p.get("references") or [p["reference"]]]
        answers = {k: str(v[i]["prediction"]) for k, v in preds.items()}
        rows.append({"id": str(p["id"]), "input": str(p["input"]), "refs": refs, "answers": answers,
                     "right": {k: is_right(a, refs) for k, a in answers.items()},
                     "routed": bool(preds["cascade"][i].get("routed")) if "cascade" in preds else False})
    return rows


def is_right(answer: str, refs: list[str]) -> bool:
    """The page's right or wrong: the answer equals a reference, spaces at either end aside."""
    return answer.strip() in {r.strip() for r in refs}


def funnel(ctx: RunContext, data: dict) -> dict:
    """The filter stages with bar widths, and per drop reason a few of the rows it dropped (from the ledger)."""
    rd = ctx.dir
    generated = {r["id"]: r for r in read_jsonl(rd.generated)} if rd.generated.exists() else {}
    samples: dict[tuple[str, str], list[str]] = defaultdict(list)
    for d in read_jsonl(rd.dropped) if rd.dropped.exists() else []:
        got = samples[(d["stage"], reason_kind(d["reason"]))]
        if len(got) < SAMPLES_PER_REASON and d["id"] in generated:
            r = generated[d["id"]]
            got.append(f"{r['input']}  ->  {r.get('output') or '(no answer)'}   [{d['reason']}]")
    top = max((s["in"] for s in data["by_stage"]), default=0) or 1
    stages = [{**s, "kept_px": round(300 * s["kept"] / top), "dropped_px": round(300 * s["dropped"] / top),
               "reasons": [(k, n, samples.get((s["stage"], k), [])) for k, n in s["top_reasons"].items()]}
              for s in data["by_stage"]]
    return {"generated": data["generated"], "kept": data["kept"], "dropped": data["dropped"], "stages": stages}


def losses(ctx: RunContext) -> list[dict]:
    """Each trained student's logged training losses, as a curve."""
    out = []
    for name, student, _ in ctx.cfg.student_candidates():
        path = ctx.dir.student_stats(name)
        if path.exists() and (st := TrainStats.read(path)).losses:
            out.append(loss_curve(student.name, st.losses, st.steps))
    return out
