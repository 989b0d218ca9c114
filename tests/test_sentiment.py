"""The second built-in task: review sentiment with a programmatic check. Reviews made by code know
their label, the checker keeps only teacher labels that agree, and the whole path runs offline."""

import pytest

from distill.filters import FilterContext, Row, run_filters
from distill.io import read_jsonl
from distill.tasks import get_task
from distill.tasks.sentiment import make_reviews
from tests.conftest import ROOT


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


# sentiment's whole path runs in test_multitask's tiny run (check_sentiment_path), as one of its two tasks
