"""The verdict and the comparison table on the terminal, where `distill run` ends."""
from __future__ import annotations

from distill.report.phrases import verdict
from distill.report.progression import fine_tuning_needed
from distill.report.tables import comparison_rows


def show(rep: dict, console) -> None:
    from rich.markdown import Markdown
    from rich.table import Table

    metric = rep["eval"]["primary_metric"]
    table = Table(title=f"{rep['task']}: {rep['eval']['n']} held-out rows, {metric} with 95% intervals", title_justify="left")
    cols = ["model", "role", metric, "95% CI", "vs teacher", "cost per 1k (USD)", "serving vs teacher"]
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in comparison_rows(rep):
        table.add_row(*[f"{r[c]:.4f}" if c == "cost per 1k (USD)" else str(r[c]) for c in cols])
    console.print(table)
    for text in (verdict(rep), fine_tuning_needed(rep), (rep.get("selection") or {}).get("message")):
        if text:
            console.print(Markdown(text))
    be = (rep.get("bill") or {}).get("break_even")
    if be:
        console.print(Markdown(f"**Break-even** ({be['student']}): {be['message']}."))


def show_report(rep: dict, path) -> None:
    """The verdict and the table on stdout, then where the whole report is."""
    from rich.console import Console

    show(rep, Console(width=max(Console().width, 140)))
    print(f"report: {path}")
