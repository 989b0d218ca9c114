"""report.html at scale: a synthetic run of 10,000 eval rows x 5 models rendered and opened in Chromium.

States the file size, the time to render it in Python, and in the browser (network blocked) the time
to first contentful paint, to the load event (the rows table drawn) and to redraw after a search and
after a filter change; the median of --repeat page loads. Prints one JSON object and appends it to
benchmarks/results/report_html.jsonl.

    python benchmarks/report_html.py                 # 10,000 rows x 5 models
    python benchmarks/report_html.py --rows 1000
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _record import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from distill.report.html import render_html  # noqa: E402
from distill.stages.report_page import is_right  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
WORDS = ("the a she he they went goes go to school market every day on sunday with their friends quickly house "
         "book read reads wrote write cat dogs barks bark under over table").split()


def synthetic(n_rows: int, seed: int = 0) -> dict:
    """A rewrite task's page: each row a 12-20 word sentence, each model's answer the reference with a
    few words changed."""
    rng = random.Random(seed)
    models = [{"key": k, "name": k, "role": r} for k, r in (("teacher", "teacher"), ("base_student", "base student"),
              ("base_few_shot", "prompted base student"), ("base_retrieval", "prompted base student"),
              ("student", "distilled student"))]
    rows = []
    for i in range(n_rows):
        ref = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 20))) + "."
        answers = {}
        for m in models:
            w = ref.split()
            for _ in range(rng.choice((0, 0, 1, 2))):
                w[rng.randrange(len(w))] = rng.choice(WORDS)
            answers[m["key"]] = " ".join(w)
        inp = answers["base_student"]
        rows.append({"id": f"row-{i}", "input": inp, "refs": [ref], "answers": answers,
                     "right": {k: is_right(a, [ref]) for k, a in answers.items()}, "routed": False})
    return {"task": "synthetic", "eval_path": "synthetic.jsonl", "n_rows": n_rows, "run_dir": "-",
            "verdict": ["**The distilled student matches the teacher** (synthetic)."], "comparison_head": ["model"],
            "comparison": [{"model": m["name"]} for m in models], "figures": [], "models": models, "rows": rows,
            "student": "student", "student_name": "student", "teacher": "teacher", "labels": [], "diff": True,
            "routed": False, "confusion": [], "funnel": {"generated": 0, "kept": 0, "dropped": 0, "stages": []},
            "losses": [], "bill": {"one_off": [], "one_off_usd": 0.0, "serving_per_1k": {}, "break_even": None}}


def open_in_chromium(path: Path, repeat: int) -> dict:
    from playwright.sync_api import sync_playwright

    runs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            for _ in range(repeat):
                context = browser.new_context()
                context.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort())
                page = context.new_page()
                page.goto(path.resolve().as_uri(), wait_until="load", timeout=120_000)
                fcp = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime")
                load = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
                t0 = time.perf_counter()
                page.fill("#search", "school")
                page.locator("#count").inner_text()
                search = time.perf_counter() - t0
                t0 = time.perf_counter()
                page.select_option("#filter", "student-wrong")
                page.locator("#count").inner_text()
                filt = time.perf_counter() - t0
                runs.append({"first_paint_ms": fcp, "load_ms": load, "search_ms": search * 1000, "filter_ms": filt * 1000})
                context.close()
        finally:
            browser.close()
    return {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    page = synthetic(args.rows)
    t0 = time.perf_counter()
    html = render_html(page)
    render_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "report.html"
        path.write_text(html)
        browser = open_in_chromium(path, args.repeat)
    record("report_html", {"rows": args.rows, "models": len(page["models"]), "file_mb": round(len(html.encode()) / 1e6, 2),
                           "render_seconds": round(render_s, 2), "browser": "Debian chromium, headless",
                           "repeats": args.repeat, **browser})


if __name__ == "__main__":
    main()
