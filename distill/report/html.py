"""report.html: the whole run on one self-contained page (inline CSS, JS, data and figures; no network).

The page is rendered from a plain dict (`render_html`) with jinja2's autoescaping on; the eval rows
travel as JSON inside a `<script type="application/json">` element, with `<`, `>` and `&` written as
JSON escapes so no text can close the element, and the page's script puts every string into the
document as text nodes. An input or answer holding `<script>` shows as those characters.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"


def render_html(page: dict) -> str:
    """The page from its data: task, eval_path, n_rows, run_dir, verdict (lines of text with **bold**),
    comparison_head and comparison (rows), figures, models, rows, student, teacher, labels, diff,
    routed, confusion, funnel, losses and bill (see `stages/report_page.py`, which gathers them)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["bold"] = bold
    data = {"models": page["models"], "rows": page["rows"], "student": page["student"], "teacher": page["teacher"],
            "diff": page["diff"]}
    return env.get_template("report.html.j2").render(**page, data_json=Markup(script_json(data)))


def script_json(data) -> str:
    """JSON safe inside a <script> element: no `<`, `>` or `&` (so no `</script>` or `<!--`) left as such."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def bold(text: str) -> Markup:
    """A report sentence, escaped, with its markdown **bold** as <strong>."""
    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text))))


def png_data(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def loss_curve(name: str, losses: list[float], steps: int | None, width: int = 560, height: int = 160) -> dict:
    """An SVG polyline of the logged training losses (x: logging points, y: loss from its min to its max)."""
    lo, hi = min(losses), max(losses)
    span, n = (hi - lo) or 1.0, max(len(losses) - 1, 1)
    pts = " ".join(f"{8 + (width - 16) * i / n:.1f},{8 + (height - 16) * (hi - v) / span:.1f}" for i, v in enumerate(losses))
    return {"name": name, "steps": steps or len(losses), "first": f"{losses[0]:.3g}", "last": f"{losses[-1]:.3g}",
            "top": f"{hi:.3g}", "bottom": f"{lo:.3g}", "points": pts, "width": width, "height": height}


def shaded_confusion(name: str, role: str, conf: dict[str, dict[str, int]]) -> dict:
    """A confusion table with each cell's share of the largest count, for its background."""
    cols = list(next(iter(conf.values())))
    top = max((v for row in conf.values() for v in row.values()), default=0) or 1
    return {"name": name, "role": role, "cols": cols,
            "rows": [(ref, [(row[c], round(0.75 * row[c] / top, 3)) for c in cols]) for ref, row in conf.items()]}
