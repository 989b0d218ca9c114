"""report.md: the verdict, the CoEdIT-style table, how each model was priced, data, teacher usage,
training and wall time."""
from __future__ import annotations

from distill.report.tables import filter_rows, fmt_params


def markdown_table(rep: dict) -> str:
    metric = rep["eval"]["primary_metric"]
    names = [k for k in rep["models"][0]["metrics"]] if rep["models"] else []
    head = ["model", "role", "size", "x smaller", *names, f"% of teacher {metric}", "cost / 1k req", "x cheaper",
            "latency p50 / p95", "frontier"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rep["models"]:
        cells = [r["name"], r["role"], fmt_params(r["parameters"]), _x(r.get("x_smaller")),
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
    rows = "\n".join(f"| {n} | {fmt_params(v['parameters'])} | {v['keep_layers'] or 'all'} | "
                     f"{'LoRA' if v['lora'] else 'full'} | {v['steps']} | {_num(v['first_loss'])} -> {_num(v['last_loss'])} | "
                     f"{v['wall_seconds']:.0f} s |" for n, v in ladder.items())
    return ("\n| student | size | layers kept | fine-tuning | steps | loss | time |\n|---|---|---|---|---|---|---|\n"
            + rows + "\n")


def _confusion_lines(models: list[dict]) -> str:
    """Per-label confusion of the teacher and the distilled students (classification tasks)."""
    out = []
    for r in models:
        conf = (r.get("breakdown") or {}).get("confusion")
        if not conf or r["role"] == "base student":
            continue
        cols = list(next(iter(conf.values())))
        out += [f"\n**{r['name']}** ({r['role']}): rows are the reference label, columns the answer\n",
                "| reference | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        out += [f"| {ref} | " + " | ".join(str(row[c]) for c in cols) + " |" for ref, row in conf.items()]
    return ("\n## Confusion by label\n" + "\n".join(out) + "\n") if out else ""


def render_markdown(rep: dict, plot: str) -> str:
    """report.md; `plot` is how the plot is shown (the Prefect UI cannot load a file of the run
    directory, so its artifact names the file instead)."""
    d, u = rep["data"], rep["teacher_usage"]
    tr = rep["training"]
    stages = "\n".join(f"| {r['stage']} | {r['in']} | {r['kept']} | {r['dropped']} | {r['top reasons']} |"
                       for r in filter_rows(d["by_stage"]))
    rules = "\n".join(f"- **{r['name']}** ({r['engine']}, {r['prompt']}): {r['cost_rule']} for "
                      f"{rep['eval']['n']} requests" for r in rep["models"])
    wall = ", ".join(f"{k} {v:.0f} s" for k, v in rep["wall_seconds"].items() if v is not None)
    return f"""# distill report: {rep['task']}

Eval set: `{rep['eval']['path']}` ({rep['eval']['n']} held-out rows, never shown to the teacher).
{f"{chr(10)}> **Generation was cut short:** {rep['cut_short']}. The student was trained on the data made before the stop.{chr(10)}" if rep.get("cut_short") else ""}
{verdict(rep)}
{(chr(10) + rep['selection']['message'] + chr(10)) if rep.get('selection', {}).get('message') else ''}
{markdown_table(rep)}

{plot}

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

{_ladder_lines(rep.get('training_by_student'))}{_confusion_lines(rep["models"])}
## Wall time per stage
{wall}
"""
