"""Eval sets as public benchmarks ship them: several references per row (a JSONL list, or a source file
plus one reference file per annotator); bad layouts stopped in one line before anything is spent."""
import json

import pytest

from distill.filters import FilterContext, Row
from distill.filters.builtin import decontaminate
from distill.io import DataError, load_benchmark, load_examples, references
from distill.tasks import load_task
from tests.test_bad_input import run_cli

SRC = ["She go to school every day .", "He have two cat .", "They was happy ."]
REFS = [["She goes to school every day .", "He has two cats .", "They were happy ."],
        ["She went to school every day .", "He has two cats .", "They were happy ."],
        ["She goes to school every day .", "He had two cats .", "They were glad ."],
        ["She goes to school each day .", "He has two cats .", "They were happy ."]]


def benchmark(tmp_path, refs=REFS, src=SRC):
    (tmp_path / "test.src").write_text("\n".join(src) + "\n")
    paths = []
    for i, ref in enumerate(refs):
        p = tmp_path / f"test.ref{i}"
        p.write_text("\n".join(ref) + "\n")
        paths.append(p)
    return tmp_path / "test.src", paths


def test_a_benchmark_in_source_and_reference_files_gives_rows_with_every_reference(tmp_path):
    src, refs = benchmark(tmp_path)
    rows = load_benchmark(src, refs)
    assert [r["id"] for r in rows] == ["line-1", "line-2", "line-3"]
    assert rows[1]["input"] == "He have two cat ." and rows[1]["output"] == "He has two cats ."
    assert references(rows[2]) == ["They were happy .", "They were happy .", "They were glad .", "They were happy ."]
    assert rows.where("line-2").endswith("test.src:2")


def test_a_jsonl_output_list_is_several_references(tmp_path):
    p = tmp_path / "eval.jsonl"
    p.write_text(json.dumps({"id": "a", "input": "He go .", "output": ["He goes .", "He went ."]}) + "\n"
                 + json.dumps({"id": "b", "input": "We is .", "output": "We are ."}) + "\n")
    rows = load_examples(p, what="eval set")
    assert rows[0]["output"] == "He goes ." and references(rows[0]) == ["He goes .", "He went ."]
    assert references(rows[1]) == ["We are ."]
    p.write_text(json.dumps({"id": "a", "input": "He go .", "output": ["He goes .", " "]}) + "\n")
    with pytest.raises(DataError, match=r"eval.jsonl:1: field 'output': reference 2 is empty"):
        load_examples(p, what="eval set")


def test_every_metric_of_a_rewrite_task_reads_every_reference():
    """Breaks caught: a metric scoring against the first reference only (the second annotator's equally
    valid correction counted wrong)."""
    task = load_task("grammar")
    src, ref, other = "He go to the market every day .", "He goes to the market every day .", "He went to the market every day ."
    one = task.metrics([other], [[ref]], [src])
    two = task.metrics([other], [[ref, other]], [src])
    for name in ("gleu", "sari", "exact_match", "chrf", "google_bleu"):
        assert two[name] > one[name], name
    assert two["exact_match"] == 100 and two["sari"] > 50


def test_decontamination_looks_at_every_reference():
    ctx = FilterContext(task=load_task("grammar"), seeds=[], eval_rows=[
        {"id": "e", "input": "He have two cat in the small house near the river .", "output": "He has two cats .",
         "references": ["He has two cats .", "He had two cats in the small house near the river today ."]}])
    rows = [Row(id="g", input="x", output="He had two cats in the small house near the river today ."),
            Row(id="k", input="x", output="Nothing in common with any eval row at all here .")]
    verdicts = decontaminate(rows, ctx=ctx)
    assert [v.kept for v in verdicts] == [False, True]


@pytest.mark.parametrize("case,expected", [
    ("missing", "test.ref9: eval set file not found"),
    ("counts", "eval set files differ in line count ("),
    ("empty", "test.ref1:2: empty line"),
    ("no refs", "a benchmark's source file needs its `references`"),
    ("both", "give the eval set as `path` or as `source` + `references`, not both"),
])
def test_a_bad_benchmark_layout_is_one_line_before_anything_is_spent(tmp_path, case, expected):
    refs = [list(r) for r in REFS]
    if case == "counts":
        refs[2] = refs[2][:2]
    if case == "empty":
        refs[1][1] = ""
    src, paths = benchmark(tmp_path, refs)
    if case == "missing":
        paths.append(tmp_path / "test.ref9")
    sets = ["--set", f"eval.source={src}"]
    if case != "no refs":
        sets += ["--set", f"eval.references=[{', '.join(str(p) for p in paths)}]"]
    if case == "both":
        sets += ["--set", f"eval.path={src}"]
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--run-dir", str(rd), *sets)
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    if case == "counts":
        assert "test.src 3" in err and "test.ref2 2" in err
    assert not rd.exists()


def test_a_published_result_on_an_unknown_eval_set_is_one_line(tmp_path):
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--run-dir", str(rd), "--set",
                        "eval.published=[{system: X, set: nope, metric: gleu, value: 1, source: s}]")
    assert code == 2 and "X: set 'nope' is not an eval set of this run (known: main)" in err and len(err.splitlines()) == 1
    assert not rd.exists()


def test_fields_output_may_name_one_column_per_reference(tmp_path):
    p = tmp_path / "eval.csv"
    p.write_text("src,ann1,ann2,note\nHe go .,He goes .,He went .,x\nWe is .,We are .,We were .,y\n")
    rows = load_examples(p, columns={"input": "src", "output": ["ann1", "ann2"], "id": None}, what="eval set")
    assert references(rows[1]) == ["We are .", "We were ."] and rows[1]["output"] == "We are ."
    assert rows[0]["note"] == "x" and "ann2" not in rows[0]
    p.write_text("src,ann1,ann2\nHe go .,He goes .,\n")
    with pytest.raises(DataError, match=r"eval.csv:2: field 'ann2': must be a non-empty string"):
        load_examples(p, columns={"input": "src", "output": ["ann1", "ann2"], "id": None}, what="eval set")
