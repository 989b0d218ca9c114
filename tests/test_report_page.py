"""report.html: one self-contained page with every eval row, opened in the real Chromium with the
network blocked; untrusted text stays text."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from distill.io import read_json, read_jsonl, write_jsonl
from distill.report.html import bold, render_html, script_json
from distill.stages.report_page import is_right
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, TINY, distill_cmd

HOSTILE = "She go </textarea><script>alert(1)</script> to school."


def _page(rows):
    return {"task": "t", "eval_path": "e.jsonl", "n_rows": len(rows), "run_dir": "runs/x",
            "verdict": ["**The distilled student beats** <b>the teacher</b>"], "comparison_head": ["model"],
            "comparison": [{"model": "<i>m</i>"}], "figures": [], "models": [{"key": "teacher", "name": "T", "role": "teacher"}],
            "rows": rows, "student": None, "student_name": "s", "teacher": "teacher", "labels": [], "diff": True,
            "routed": False, "confusion": [], "funnel": {"generated": 1, "kept": 1, "dropped": 0, "stages": []}, "rounds": [],
            "losses": [], "bill": {"one_off": [], "one_off_usd": 0.0, "serving_per_1k": {}, "break_even": None},
            "judge": None}


def test_the_page_carries_hostile_text_as_data_and_its_markdown_bold_as_markup():
    """Breaks caught: a row's `</script>` closing the data element (the rest would run as script), text
    put into the page unescaped, the verdict's markdown shown as asterisks."""
    row = {"id": "r1", "input": HOSTILE, "refs": ["<!-- x"], "answers": {"teacher": "a & b"}, "right": {"teacher": False},
           "routed": False}
    page = _page([row])
    iv = {"value": 50.0, "low": 0.0, "high": 100.0}
    page["judge"] = {"judge": "<b>judge</b>", "against": "teacher", "warning": "the judge is the teacher",
                     "rows": [{"name": HOSTILE, "win": 1, "tie": 0, "loss": 1, "win_rate": iv, "loss_rate": iv, "net": iv}]}
    html = render_html(page)
    assert '<section id="judge">' in html and "&lt;b&gt;judge&lt;/b&gt; compared" in html
    assert html.count("<script") == 2 and "alert(1)</script>" not in html and "<!-- x" not in html
    data = html.split('<script id="data" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["rows"][0]["input"] == HOSTILE
    assert "<strong>The distilled student beats</strong> &lt;b&gt;the teacher&lt;/b&gt;" in html
    assert "&lt;i&gt;m&lt;/i&gt;" in html
    assert json.loads(script_json({"a": "</script>&<"})) == {"a": "</script>&<"}
    assert str(bold("a **b** <c>")) == "a <strong>b</strong> &lt;c&gt;"


def test_right_means_equal_to_a_reference_up_to_outer_spaces():
    assert is_right(" He goes. ", ["He went.", "He goes."]) and not is_right("he goes.", ["He goes."])


def test_view_prints_the_pages_path_and_names_a_run_without_one(tmp_path):
    """Breaks caught: `distill view` silent where no browser can open (the path is the way to the page),
    a traceback for a run without a page."""
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BROWSER": "true"}  # `true`: a browser that opens nothing
    r = subprocess.run(distill_cmd("view", str(run)), capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {run / 'report.html'}: no report.html "
                                                                   "(run `distill report` first)"], r.stderr
    (run / "report.html").write_text("<!doctype html><title>x</title>")
    r = subprocess.run(distill_cmd("view", str(run)), capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == str(run / "report.html"), r.stdout + r.stderr




def _shown_ids(page) -> list[str]:
    """Every row the table shows under the current filter, page by page."""
    ids = []
    while True:
        ids += page.locator("#rows tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
        label = page.locator("#page").inner_text()  # "page i of n"
        i, n = (int(x) for x in label.split()[1::2])
        if i == n:
            return ids
        page.click("#next")


@pytest.mark.slow
def test_the_offline_defaults_page_in_chromium_with_the_network_blocked(tmp_path):
    """The offline default (tiny) with a hostile eval row: the verdict, all 60 rows over two pages, the
    "student wrong, teacher right" filter exactly as the predictions files say, the loss curve, the
    funnel, and the hostile input shown as text with no dialog raised. The run's console shows one
    progress bar per stage (issue 36, first run)."""
    from playwright.sync_api import sync_playwright

    rows = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "eval.jsonl")[:59]
    rows.append({"id": "hostile", "input": HOSTILE, "output": "She goes </textarea><script>alert(1)</script> to school."})
    write_jsonl(tmp_path / "eval.jsonl", rows)
    rd = tmp_path / "run"
    sets = [*TINY, "eval.max_rows=60", f"eval.path={tmp_path / 'eval.jsonl'}", "eval.models=[teacher,base_few_shot,student]"]
    r = subprocess.run(distill_cmd("run", "--run-dir", str(rd), *[a for s in sets for a in ("--set", s)]), cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    # issue 36 (first run): one progress bar per stage; no step dictionaries, library bars or deprecation notices
    out = r.stdout + r.stderr
    assert "train: steps" in out and "{'loss'" not in out and "Warning" not in out, out[-3000:]
    assert not any(x in out for x in ("Loading weights", "Tokenizing train dataset", "Creating parquet")), out[-3000:]
    page_file = rd / "report.html"
    assert page_file.stat().st_size > 10_000
    preds = {k: read_jsonl(rd / "eval" / "eval" / f"{k}.jsonl") for k in ("teacher", "student")}

    def right(k, i):
        return preds[k][i]["prediction"].strip() == preds[k][i]["reference"].strip()

    expect = [p["id"] for i, p in enumerate(preds["student"]) if right("teacher", i) and not right("student", i)]
    reverse = [p["id"] for i, p in enumerate(preds["student"]) if right("student", i) and not right("teacher", i)]
    assert expect or reverse  # a 4-step student and the 6-shot teacher differ somewhere on 60 rows
    losses = read_json(rd / "student" / "train_stats.json")["losses"]
    stages = read_json(rd / "report.json")["data"]["by_stage"]

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`make test` does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            asked = []
            context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                          else (asked.append(route.request.url), route.abort()))
            page = context.new_page()
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            assert "The distilled student" in page.locator("#verdict").inner_text()
            assert page.locator("#count").inner_text() == "60 of 60 rows"
            assert _shown_ids(page) == [x["id"] for x in preds["student"]]
            page.select_option("#filter", "student-wrong")
            assert _shown_ids(page) == expect
            page.select_option("#filter", "teacher-wrong")
            assert _shown_ids(page) == reverse
            page.select_option("#filter", "all")
            page.fill("#search", "alert(1)")
            assert page.locator("#count").inner_text() == "1 of 60 rows"
            cell = page.locator("#rows tbody tr[data-id=hostile] td").nth(1)
            assert cell.inner_text() == HOSTILE and cell.locator("script").count() == 0
            points = page.locator("svg.loss polyline").first.get_attribute("points").split()
            assert len(points) == len(losses) and page.locator("svg.loss").first.is_visible()
            assert page.locator("#funnel tr.stage").count() == len(stages)
            assert page.locator("#comparison img").count() == 2
            page.screenshot(path=str(tmp_path / "report-html.png"), full_page=True)
            assert dialogs == [] and asked == []
        finally:
            browser.close()


def test_a_classification_page_has_the_label_filter_the_heatmap_and_the_routed_filter():
    """Breaks caught: the label filter or the confusion heatmap missing for a classification task, the
    cascade's routed filter missing when the run has a cascade, a heatmap shade not the cell's share of
    the largest count."""
    from distill.report.html import shaded_confusion

    page = _page([{"id": "r1", "input": "x", "refs": ["bug"], "answers": {"teacher": "bug"}, "right": {"teacher": True},
                   "routed": True}])
    page |= {"labels": ["bug", "billing"], "diff": False, "routed": True,
             "confusion": [shaded_confusion("T", "teacher", {"bug": {"bug": 4, "billing": 1},
                                                             "billing": {"bug": 0, "billing": 2}})]}
    html = render_html(page)
    assert '<select id="label"><option value="">any</option><option>bug</option><option>billing</option></select>' in html
    assert '<option value="routed">' in html and 'id="confusion"' in html
    assert "rgba(58,123,213,0.75)\">4<" in html and "rgba(58,123,213,0.188)\">1<" in html
