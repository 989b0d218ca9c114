"""The price-performance report, rendered from the report dict the report stage builds:
`select.py` (frontier, the cheapest model meeting the bar), `tables.py` (rows shared by every view),
`render.py` (report.md), `plot.py` (frontier.png), `progression.py` (was fine-tuning needed?,
progression.png), `intervals.py` (paired bootstrap), `phrases.py`
(sentences no stronger than the figures), `ledger.py` (the whole bill and the break-even)."""
from distill.report.phrases import verdict
from distill.report.plot import plot_frontier
from distill.report.progression import plot_progression
from distill.report.render import markdown_table, render_markdown
from distill.report.select import choose_model, frontier_keys
from distill.report.tables import comparison_rows, filter_rows, fmt_params, reasons_text

__all__ = ["plot_frontier", "plot_progression", "markdown_table", "render_markdown", "verdict", "choose_model", "frontier_keys",
           "comparison_rows", "filter_rows", "fmt_params", "reasons_text"]
