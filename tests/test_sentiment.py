"""The second built-in task: review sentiment with a programmatic check. Reviews made by code know
their label, the checker keeps only teacher labels that agree, and the whole path runs offline."""
import subprocess

import pytest

from distill.filters import FilterContext, Row, run_filters
from distill.io import read_json, read_jsonl
from distill.tasks import get_task
from distill.tasks.sentiment import make_reviews
from tests.conftest import ROOT, TINY, distill_cmd


def test_reviews_are_distinct_reproducible_and_know_their_label():
    a, b = make_reviews(1, 300), make_reviews(1, 300)
    assert a == b and len({r["input"] for r in a}) == 300
    assert {r["output"] for r in a} == {"positive", "negative"}
    # the label follows from the sentences: a positive review holds no negative sentence and vice versa
    from distill.tasks.sentiment import NEGATIVE, POSITIVE, SUBJECTS

    def holds(pool, text):
        return any(t.format(s=s)[1:] in text for t in pool for s in SUBJECTS)
    assert all(not holds(NEGATIVE, r["input"]) for r in a if r["output"] == "positive")
    assert all(not holds(POSITIVE, r["input"]) for r in a if r["output"] == "negative")
    held = make_reviews(2, 50, exclude={r["input"] for r in a})
    assert not {r["input"] for r in held} & {r["input"] for r in a}


def test_shipped_seed_and_eval_sets_do_not_overlap():
    seeds = read_jsonl(ROOT / "distill" / "tasks" / "sentiment" / "seeds.jsonl")
    evals = read_jsonl(ROOT / "distill" / "tasks" / "sentiment" / "eval.jsonl")
    assert not {s["input"] for s in seeds} & {e["input"] for e in evals}
    assert {s["output"] for s in seeds} == {"positive", "negative"}
    # the eval set is written from held-out sentences and subjects: phrasings training never shows
    from distill.tasks.sentiment import _bank

    def sentences(bank):
        pos, neg, subjects = bank
        return {t.format(s=s)[:1].upper() + t.format(s=s)[1:] for t in pos + neg for s in subjects}
    train_sents, held_sents = sentences(_bank(False)), sentences(_bank(True))
    assert all(any(h in e["input"] for h in held_sents) for e in evals)
    assert not any(t in e["input"] for e in evals for t in train_sents)
    generated = get_task("sentiment").programmatic_inputs(0, 400, set())
    assert not any(h in g["input"] for g in generated for h in held_sents)


@pytest.mark.parametrize("reply,label", [("positive", "positive"), ("Negative.", "negative"),
                                         ("Sentiment: POSITIVE", "positive"), ("I think so", "I think so")])
def test_answers_are_parsed_to_labels(reply, label):
    assert get_task("sentiment").parse_answer(reply) == label


def test_checker_filter_keeps_only_answers_that_agree_with_the_known_label():
    task = get_task("sentiment")
    rows = [Row("a", "Great.", "positive", "positive", {"source": "teacher"}),
            Row("b", "Awful.", "positive", "negative", {"source": "teacher"}),
            Row("c", "Fine.", "it is positive", "positive", {"source": "teacher"}),
            Row("d", "Seed.", "negative", "negative", {"source": "seed"})]
    kept, dropped, _ = run_filters([("checker", {})], rows, FilterContext(task=task, seeds=[], eval_rows=[]))
    assert [r.id for r in kept] == ["a", "d"]
    assert {d["id"]: d["reason"] for d in dropped} == {"b": "wrong label (positive, expected negative)",
                                                       "c": "output is not a label"}
    m = task.metrics(["positive", "negative", "meh"], ["positive", "positive", "negative"], [])
    assert m == {"accuracy": 33.33, "macro_f1": 33.33, "answered_with_a_label": 66.67}


@pytest.mark.slow
def test_sentiment_runs_end_to_end_offline(tmp_path):
    rd = tmp_path / "run"
    # the progression's many-shot and retrieval rows are test_progression's and test_train_eval's business
    sets = [*TINY, "eval.models=[teacher,base_student,base_zero_shot,base_few_shot,student]"]
    r = subprocess.run(distill_cmd("run", "--config", "configs/sentiment.yaml", "--run-dir", str(rd),
                                   *[a for s in sets for a in ("--set", s)]), cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    gen = read_jsonl(rd / "data" / "generated.jsonl")
    teacher_rows = [g for g in gen if g["meta"]["source"] == "teacher"]
    assert len(teacher_rows) == 12 and all(g["reference"] in ("positive", "negative") for g in teacher_rows)
    stats = read_json(rd / "stats" / "generate.json")
    assert stats["counts"]["parsed_inputs"] == 12 and stats["totals"]["requests_sent"] == 12  # no Self-Instruct requests
    kept = read_jsonl(rd / "data" / "train.jsonl")
    assert all(k["output"] == k["reference"] for k in kept)
    # the student learns from the teacher's answers, not the seeds alone: most of its 12 answers agree
    # with the known label and are kept
    assert sum(k["meta"]["source"] == "teacher" for k in kept) >= 6, [k["meta"]["source"] for k in kept]
    rep = read_json(rd / "report.json")
    assert rep["task"] == "sentiment" and rep["eval"]["primary_metric"] == "accuracy"
    assert {m["role"] for m in rep["models"]} == {"teacher", "base student", "prompted base student", "distilled student"}
    # the prompting baselines, in the same harness: zero-shot with the task's instructions, and the teacher's k-shot prompt
    by_key = {m["key"]: m for m in rep["models"]}
    assert by_key["base_few_shot"]["prompt"] == "the teacher's 6-shot prompt" and "base_zero_shot" in by_key
    assert all(m["interval"] and m["serving"] for m in rep["models"])
