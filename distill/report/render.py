"""report.md: the verdict, the CoEdIT-style table, how each model was priced and timed, data, teacher usage,
training and wall time."""
from __future__ import annotations

from distill.report.phrases import cascade_line, cost_phrase, verdict
from distill.report.progression import section, tokens_text
from distill.report.tables import filter_rows, fmt_params


def markdown_table(rep: dict) -> str:
    metric = rep["eval"]["primary_metric"]
    names = [k for k in rep["models"][0]["metrics"]] if rep["models"] else []
    head = ["model", "role", "prompt", "prompt tokens", "size", *names, f"{metric} 95% CI", f"{metric} minus teacher (95% CI)",
            "cost / 1k req (range)", "serving vs teacher", "latency p50 / p95", "frontier"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rep["models"]:
        ivs = r.get("intervals") or {}
        cells = [r["name"], r["role"], r.get("prompt") or "-", tokens_text(r), fmt_params(r["parameters"]),
                 *[f"{r['metrics'][k]}" + (f" {interval_text(ivs[k])}" if k in ivs and k != metric else "") for k in names],
                 interval_text(r.get("interval")),
                 difference_text(r.get("vs_teacher")), cost_text(r),
                 cost_phrase(r["cost_ratio"]) if r.get("cost_ratio") else "-",
                 f"{r['latency_p50_s']:.2f} s / {r['latency_p95_s']:.2f} s",
                 "**chosen**" if r.get("chosen") else "yes" if r.get("on_frontier") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    base = rep["eval"]["baseline"]
    lines.append(f"| {rep['eval']['baseline_name']} (baseline) | - | - | - | - | " + " | ".join(str(base[k]) for k in names)
                 + " | - | - | $0 | - | - | - |")
    lines += [f"| {p['system']} (reported in {p['source']}) | published | - | - | - | "
              + " | ".join(str(p["value"]) if k == p["metric"] else "-" for k in names) + " | - | - | - | - | - | - |"
              for p in rep["eval"].get("published") or []]
    return "\n".join(lines)


def set_table(es: dict) -> str:
    """One more eval set: quality only (its cost is the headline set's), published rows marked."""
    metric, names = es["primary_metric"], list(es["models"][0]["metrics"]) if es["models"] else []
    head = ["model", "role", "prompt", *names, f"{metric} minus teacher (95% CI)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in es["models"]:
        ivs = r.get("intervals") or {}
        lines.append("| " + " | ".join([r["name"], r["role"], r.get("prompt") or "-",
                                        *[f"{r['metrics'][k]}" + (f" {interval_text(ivs[k])}" if k in ivs else "") for k in names],
                                        difference_text(r.get("vs_teacher"))]) + " |")
    base = es["baseline"]
    lines.append(f"| {es['baseline_name']} (baseline) | - | - | " + " | ".join(str(base[k]) for k in names) + " | - |")
    lines += [f"| {p['system']} (reported in {p['source']}) | published | - | "
              + " | ".join(str(p["value"]) if k == p["metric"] else "-" for k in names) + " | - |"
              for p in es.get("published") or []]
    return "\n".join(lines)


def other_sets(rep: dict) -> str:
    """A section per eval set beside the headline one: its verdict line and its table."""
    out = []
    for es in rep.get("eval_sets") or []:
        how = ", tokenised: inputs detokenised for the models, answers tokenised to score" if es["tokenized"] else ""
        refs = f", {es['references_per_row']} references per row" if es["references_per_row"] > 1 else ""
        student = next((m for m in es["models"] if m["role"] == "distilled student"), None)
        line = ""
        if student and student.get("vs_teacher"):
            d = student["vs_teacher"]
            line = (f"The distilled student {d['verdict']} the teacher on {es['primary_metric']}: "
                    f"{difference_text(d)} (95% paired bootstrap over {es['n']} rows).\n\n")
        out.append(f"### {es['name']}\n\n`{es['path']}` ({es['n']} rows{refs}{how}). {line}{set_table(es)}\n")
    return ("## Other eval sets\n\nQuality only: serving costs are measured on the headline set. Published rows were "
            "reported elsewhere and never enter a verdict.\n\n" + "\n".join(out)) if out else ""


METRIC_NOTES = {
    "gleu": "gleu is the GLEU of grammatical error correction (Napoles et al. 2015/2016, JFLEG's metric; 0-100, "
            "whitespace tokens, case-sensitive, one reference drawn per row 500 times when there are several)",
    "sari": "sari is Xu et al.'s SARI (2016; 0-100, lowercased whitespace tokens, every reference)",
    "google_bleu": "google_bleu is NLTK's Google-BLEU (0-1, no source term: not the GEC GLEU)",
}


def metric_notes(rep: dict) -> str:
    """One line saying which GLEU (and SARI) the table means, when it shows them."""
    names = list(rep["models"][0]["metrics"]) if rep["models"] else []
    notes = [METRIC_NOTES[k] for k in names if k in METRIC_NOTES]
    refs = rep["eval"].get("references_per_row")
    return ("Metrics: " + "; ".join(notes) + (f". Up to {refs} references per eval row." if refs and refs > 1 else ".")
            + " Each metric's 95% interval in brackets.\n") if notes else ""


def interval_text(iv: dict | None) -> str:
    return f"[{iv['low']:g}, {iv['high']:g}]" if iv else "-"


def difference_text(d: dict | None) -> str:
    return f"{d['verdict']}: {d['difference']:+g} [{d['low']:+g}, {d['high']:+g}]" if d else "-"


def cost_text(r: dict) -> str:
    s = r.get("serving")
    text = f"${r['cost_per_1k_usd']:.4f}" + (f" (${s['low']:.4f}-{s['high']:.4f})" if s else "")
    return text + (" ¹" if r.get("cost_note") else "")


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "?"


def bill_lines(bill: dict | None) -> str:
    if not bill:
        return ""
    rows = "\n".join(f"| {s['stage']} | ${s['usd']:.4f} | {s['how']} |" for s in bill["one_off"])
    serving = ", ".join(f"{k} ${v:.4f}" for k, v in bill["serving_per_1k"].items())
    be = bill.get("break_even")
    return (f"""
## The whole bill
| stage (one-off) | cost | how |
|---|---|---|
{rows}
| **total** | **${bill['one_off_usd']:.4f}** | |

Serving per 1k requests (the serving measurement): {serving}.
""" + (f"**Break-even for {be['student']}: {be['message']}.**\n" if be else ""))


def _prices(prices: list[dict] | None) -> str:
    if not prices:
        return ""
    return "\nPrices: " + "; ".join(f"{p['item']} {p['price']} ({p.get('source') or 'source not given'}, "
                                    f"{p.get('as_of') or 'undated'})" for p in prices) + ".\n"


def _judge_line(j: dict | None) -> str:
    if not j:
        return ""
    return (f" Filters that asked the teacher (the judge): {j['requests_sent']} requests ({j['cache_hits']} reused), "
            f"${j['cost_usd']:.4f} ({j['cost_rule']}).")


def _ladder_lines(ladder: dict | None) -> str:
    if not ladder:
        return ""
    def method(v: dict) -> str:  # stats written before methods existed were all sft
        m = v.get("method") or "sft"
        return m if m == "sft" else f"{m} from {v.get('kd_teacher')}"

    def layers(v: dict) -> str:  # which ones, when the run chose them: "16 (0-1, 16-29)"
        idx = v.get("kept_layers")
        if not idx:
            return str(v["keep_layers"] or "all")
        runs = [[idx[0], idx[0]]]
        for i in idx[1:]:
            if i == runs[-1][1] + 1:
                runs[-1][1] = i
            else:
                runs.append([i, i])
        return f"{len(idx)} ({', '.join(str(a) if a == b else f'{a}-{b}' for a, b in runs)})"

    rows = "\n".join(f"| {n} | {fmt_params(v['parameters'])} | {layers(v)} | "
                     f"{'LoRA' if v['lora'] else 'full'} | {method(v)} | {v['steps']} | "
                     f"{_num(v['first_loss'])} -> {_num(v['last_loss'])} | {v['wall_seconds']:.0f} s |" for n, v in ladder.items())
    return ("\n| student | size | layers kept | fine-tuning | method | steps | loss | time |\n|---|---|---|---|---|---|---|---|\n"
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


def rounds_lines(rounds: list[dict] | None) -> str:
    """The generation rounds (generation.rounds > 1): what each added and how the student after it did."""
    if not rounds:
        return ""
    lines = ["## Generation rounds",
             "After each round but the last a student trained on the rows kept so far, less the probe rows, answered "
             "those probe rows; the next round asked for inputs like the ones it got wrong. Round 1's rows include the seeds.",
             "", "| round | rows kept | probe rows the student after it got wrong | its quality [95% CI] |", "|---|---|---|---|"]
    for r in rounds:
        p, q = r.get("probe"), r.get("student")
        missed = f"{p['missed']} of {p['rows']} ({p['missed_pct']}%)" if p else "- (the last round)"
        quality = f"{q['metric']} {q['value']:g} {interval_text(q)}" if q else "-"
        lines.append(f"| {r['round']} | {r['rows_kept']} | {missed} | {quality} |")
    return "\n".join(lines) + "\n"


def pairwise_lines(rep: dict) -> str:
    """eval.judge: per judged model, how often the judge preferred its answer to the comparison answer in
    both orders (win), in neither (loss), or the orders disagreed or it saw no difference (tie)."""
    j = rep.get("pairwise_judge")
    if not j:
        return ""
    names = {m["key"]: m["name"] for m in rep["models"]}
    other = "the teacher's answer" if j["against"] == "teacher" else "the reference"
    lines = ["## Pairwise judge",
             f"Judge: {j['judge']}, each answer against {other} on every eval row, asked twice with the order swapped; "
             "a win or a loss counts only when both orders agree, anything else is a tie (identical answers are ties, "
             f"not asked). {j['requests_sent']} requests sent, {j['cache_hits']} reused from the store, {j['failed']} failed; "
             f"${j['cost_usd']:.4f} ({j['cost_rule']}).", ""]
    if j.get("warning"):
        lines += [f"> **Self-preference:** {j['warning']}.", ""]
    lines += ["| model | wins | ties | losses | win rate % [95% CI] | loss rate % [95% CI] | win - loss [95% CI] |",
              "|---|---|---|---|---|---|---|"]
    for key, r in j["models"].items():
        if not r["n"]:
            continue
        lines.append(f"| {names.get(key, key)} | {r['win']} | {r['tie']} ({r['same_answer']} identical) | {r['loss']} | "
                     f"{r['win_rate']['value']:g} {interval_text(r['win_rate'])} | "
                     f"{r['loss_rate']['value']:g} {interval_text(r['loss_rate'])} | "
                     f"{r['net']['value']:+g} {interval_text(r['net'])} |")
    return "\n".join(lines) + "\n"


def render_markdown(rep: dict, plot: str, progression_plot: str = "") -> str:
    """report.md; `plot` and `progression_plot` are how the figures are shown (the Prefect UI cannot
    load a file of the run directory, so its artifact names the files instead)."""
    d, u = rep["data"], rep["teacher_usage"]
    tr = rep["training"]
    stages = "\n".join(f"| {r['stage']} | {r['in']} | {r['kept']} | {r['dropped']} | {r['top reasons']} |"
                       for r in filter_rows(d["by_stage"]))
    rules = "\n".join(f"- **{r['name']}** ({r['prompt']}; quality pass on {r['engine']}): {r['cost_rule']}"
                      + (f". ¹ {r['cost_note']}" if r.get("cost_note") else "")
                      + (f". Latency: {r['latency_rule']}" if r.get("latency_rule") else "") for r in rep["models"])
    wall = ", ".join(f"{k} {v:.0f} s" for k, v in rep["wall_seconds"].items() if v is not None)
    return f"""# distill report: {rep['task']}

Eval set{f" '{rep['eval']['name']}'" if rep.get('eval_sets') else ''}: `{rep['eval']['path']}` ({rep['eval']['n']} held-out rows, never shown to the teacher{', tokenised: inputs detokenised for the models, answers tokenised to score' if rep['eval'].get('tokenized') else ''}).
{f"{chr(10)}> **Generation was cut short:** {rep['cut_short']}. The student was trained on the data made before the stop.{chr(10)}" if rep.get("cut_short") else ""}
{verdict(rep)}
{(chr(10) + rep['selection']['message'] + chr(10)) if rep.get('selection', {}).get('message') else ''}
{markdown_table(rep)}

{metric_notes(rep)}
{plot}

{cascade_line(rep)}
{section(rep, progression_plot)}
{other_sets(rep)}
{pairwise_lines(rep)}
{bill_lines(rep.get('bill'))}
## How each model was priced and timed
{rules}
{_prices(rep.get('prices'))}
## Data
{d['generated']} rows generated, {d['kept']} kept ({f"{d['kept_with_edit']} with an edit; " if rep['eval'].get('edits') else ''}by source {d['kept_by_source']}), {d['dropped']} dropped (ledger: `data/dropped.jsonl`).

| stage | in | kept | dropped | top reasons |
|---|---|---|---|---|
{stages}

{rounds_lines(rep.get('rounds'))}
## Teacher usage
Adapted to the seeds by {rep['teacher_adaptation']['description']}. Generation: {u.get('requests_sent', 0)} requests sent ({u.get('cache_hits', 0)} reused from the store, {u.get('failed', 0)} failed), {u.get('prompt_tokens', 0)} prompt + {u.get('completion_tokens', 0)} completion tokens, ${u.get('cost_usd', 0):.4f} ({u.get('cost_rule')}).{_judge_line(rep.get('judge_usage'))}

## Training
{tr.get('rows')} rows, {tr.get('steps')} steps ({tr.get('epochs')} epochs), {'LoRA (merged)' if tr.get('lora') else 'full fine-tuning'}, {(tr.get('plan') or {}).get('precision')} on {(tr.get('plan') or {}).get('device')}; loss {_num(tr.get('first_loss'))} -> {_num(tr.get('last_loss'))}.

{_ladder_lines(rep.get('training_by_student'))}{_confusion_lines(rep["models"])}
## Wall time per stage
{wall}
"""
