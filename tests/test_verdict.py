"""The verdict's arithmetic on fixed figures: per-row statistics that reproduce every metric, the
interval logic (clear win, clear loss, overlap), the phrases, the whole bill and the break-even."""
import random

import numpy as np
import pytest

from distill.report.intervals import compare, difference, interval, scorer, verdict_word
from distill.report.ledger import break_even, ledger, one_off
from distill.report.phrases import cost_phrase, cost_ratio, size_phrase, times, verdict
from distill.tasks.metrics import METRICS
from distill.tasks.row_stats import ROW_STATS


def _texts(seed: int, n: int = 60):
    rng = random.Random(seed)
    words = "the cat sat on a mat and dog ran to it quickly , .".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(n)]
    preds = [r if rng.random() < 0.4 else " ".join(rng.choices(words, k=rng.randint(0, 10))) for r in refs]
    return preds, refs


def _labels(seed: int, n: int = 60):
    rng = random.Random(seed)
    refs = [rng.choice(["pos", "neg", "neutral"]) for _ in range(n)]
    return [r if rng.random() < 0.6 else rng.choice(["pos", "neg", "neutral", "???"]) for r in refs], refs


def _objects(seed: int, n: int = 40):
    rng = random.Random(seed)
    refs = [f'{{"name": "{rng.choice("abc")}", "qty": {rng.randint(1, 3)}}}' for _ in range(n)]
    preds = [r if rng.random() < 0.5 else f'{{"name": "{rng.choice("abc")}"}}' if rng.random() < 0.8 else "no json"
             for r in refs]
    return preds, refs


@pytest.mark.parametrize("name", sorted(ROW_STATS))
def test_row_statistics_reproduce_each_metric_on_any_subset(name):
    """Catches a decomposition that differs from the metric (e.g. averaging per-row GLEU instead of summing
    counts, or macro-F1 over labels absent from the resample)."""
    preds, refs = (_labels if name in ("accuracy", "macro_f1") else
                   _objects if name.startswith(("field", "object")) else _texts)(3)
    f = scorer(None, name, preds, refs, refs)
    rng = np.random.default_rng(0)
    for idx in [np.arange(len(refs)), *(rng.integers(0, len(refs), len(refs)) for _ in range(5))]:
        p, r = [preds[i] for i in idx], [refs[i] for i in idx]
        assert float(f(idx)) == pytest.approx(METRICS[name](p, r, r), abs=1e-2 if name != "google_bleu" else 1e-4)


def _exact(right: list[bool]) -> list[str]:
    return ["x" if ok else "y" for ok in right]


def test_verdict_clear_win_clear_loss_and_overlap():
    """Constructed per-row scores: the student right on 90% vs the teacher's 50% beats it, the reverse falls
    short, and a net one-row difference in 200 matches (the interval straddles zero).

    Break caught: a verdict read off the point estimates (the net one-row difference would "beat" the
    teacher)."""
    n = 200
    refs = ["x"] * n
    teacher = [i % 2 == 0 for i in range(n)]
    good, bad = [i % 10 != 0 for i in range(n)], [i % 10 == 0 for i in range(n)]
    close = teacher[:]
    close[0], close[1], close[3] = False, True, True  # two rows better, one worse
    scorers = {k: scorer(None, "exact_match", _exact(v), refs, refs)
               for k, v in {"teacher": teacher, "good": good, "bad": bad, "close": close}.items()}
    out = compare(scorers, n, against="teacher")
    assert out["good"]["vs_teacher"]["verdict"] == "beats" and out["good"]["vs_teacher"]["low"] > 0
    assert out["bad"]["vs_teacher"]["verdict"] == "falls short of" and out["bad"]["vs_teacher"]["high"] < 0
    assert out["close"]["vs_teacher"]["verdict"] == "matches"
    assert out["close"]["vs_teacher"]["low"] < 0 < out["close"]["vs_teacher"]["high"]
    assert "vs_teacher" not in out["teacher"]
    t = out["teacher"]["interval"]
    assert t["value"] == 50.0 and 40 < t["low"] < 50 < t["high"] < 60


def test_pairing_makes_the_difference_tighter_than_the_two_intervals():
    """Two models right on nearly the same rows: unpaired intervals overlap widely, the paired difference
    does not straddle zero. Catches resampling each model on its own rows."""
    n = 300
    rng = random.Random(1)
    a = [rng.random() < 0.6 for _ in range(n)]
    b = [x or (i % 12 == 0) for i, x in enumerate(a)]  # b = a plus some rows
    refs = ["x"] * n
    fa, fb = (scorer(None, "exact_match", _exact(v), refs, refs) for v in (a, b))
    ia, ib = interval(fa, n), interval(fb, n)
    assert ia["high"] > ib["low"]  # side by side, they overlap
    d = difference(fb, fa, n)
    assert d["verdict"] == "beats" and d["low"] > 0


def test_verdict_words():
    assert verdict_word(0.01, 0.2) == "beats"
    assert verdict_word(-0.2, -0.01) == "falls short of"
    assert verdict_word(-0.1, 0.1) == verdict_word(0.0, 0.0) == "matches"


def _row(key, per_round, **kw):
    return {"key": key, "name": key, "cost_per_1k_usd": float(np.median(per_round)),
            "serving": {"usd_per_1k": per_round, "low": min(per_round), "high": max(per_round)}, **kw}


@pytest.mark.parametrize("teacher,model,phrase", [
    ([0.012, 0.015, 0.013], [0.004, 0.005, 0.0045], "3.0x cheaper"),
    ([0.010, 0.013, 0.011], [0.0125, 0.0165, 0.0140], "1.3x more expensive"),  # ratio 0.79: never "0.8x lower"
    ([0.005, 0.006, 0.0055], [0.010, 0.012, 0.011], "2.0x more expensive"),  # ratio 0.5: never "0.5x lower"
    ([0.010, 0.010, 0.010], [0.010, 0.010, 0.010], "no measurable cost difference"),  # exactly 1
    ([0.010, 0.012, 0.011], [0.011, 0.011, 0.010], "no measurable cost difference"),  # rounds disagree
    ([0.013, 0.026, 0.0195], [0.010, 0.020, 0.015], "1.3x cheaper"),  # drift cancels round by round
    ([0.0105, 0.0210, 0.01575], [0.010, 0.020, 0.015], "no measurable cost difference"),  # 5%: below resolution
])
def test_cost_phrase_above_at_and_below_one(teacher, model, phrase):
    r = cost_ratio(_row("t", teacher), _row("m", model))
    text = cost_phrase(r)
    assert text == phrase
    assert "lower" not in text and not text.startswith("0.")


def test_cost_ratio_pairs_rounds_and_handles_fixed_and_zero_prices():
    # drift: every model twice as slow in round 2; per-round ratios stay 2, the medians' ratio too
    r = cost_ratio(_row("t", [0.02, 0.04, 0.02]), _row("m", [0.01, 0.02, 0.01]))
    assert r == {"ratio": 2.0, "low": 2.0, "high": 2.0, "rounds": 3}
    hosted = {"key": "t", "name": "t", "cost_per_1k_usd": 0.03, "serving": None}
    r = cost_ratio(hosted, _row("m", [0.01, 0.015, 0.02]))
    assert r["ratio"] == 2.0 and r["low"] == 1.5 and r["high"] == 3.0
    assert cost_ratio(hosted, {"key": "m", "name": "m", "cost_per_1k_usd": 0.0}) is None
    assert cost_phrase(None) == "no measured cost to compare"


def test_size_and_times_phrases():
    assert size_phrase(1.0) == "the same size as the teacher"
    assert size_phrase(4.0) == "4.0x smaller"
    assert size_phrase(0.5) == "2.0x larger"  # never "the same size" for a larger student
    assert times(1.04) == "1.04x" and times(2.84) == "2.8x"


def test_headline_names_the_verdict_and_never_says_lower():
    rep = {"eval": {"primary_metric": "gleu", "n": 171}, "models": [
        _row("teacher", [0.010, 0.012, 0.011], role="teacher", metrics={"gleu": 0.8}, parameters=100,
             interval={"value": 0.8, "low": 0.76, "high": 0.84}),
        _row("student", [0.0125, 0.0165, 0.0140], role="distilled student", metrics={"gleu": 0.7}, x_smaller=2.0,
             interval={"value": 0.7, "low": 0.66, "high": 0.74},
             vs_teacher={"difference": -0.1, "low": -0.13, "high": -0.07, "verdict": "falls short of"})]}
    rep["models"][1]["cost_ratio"] = cost_ratio(rep["models"][0], rep["models"][1])
    text = verdict(rep)
    assert "falls short of the teacher on gleu" in text and "1.3x more expensive" in text
    assert "lower" not in text and "2.0x smaller" in text


def test_break_even_on_fixed_figures():
    """$0.50 one-off, teacher $0.30 / student $0.05 per 1k: $0.00025 saved a request -> 2,000 requests,
    0.2 days at 10,000 a day."""
    be = break_even(0.50, 0.30, 0.05, 10_000)
    assert be["requests"] == 2000 and be["days"] == 0.2 and be["saving_per_1k_usd"] == 0.25
    assert "after 2,000 requests (4.8 hours at 10,000 requests a day)" in be["message"]
    assert break_even(0.50, 0.30, 0.05, None)["days"] is None
    never = break_even(0.50, 0.30, 0.31, 10_000)  # the student costs more per request: never pays back
    assert never["requests"] is None and never["days"] is None and never["message"].startswith("never")
    assert break_even(0.50, 0.30, 0.30, 10_000)["requests"] is None  # equal cost: never either


def test_ledger_sums_every_stage():
    stages = [one_off("teacher generation", 0.40, "x"), one_off("teacher adaptation", 0.0, "none"),
              one_off("judge", None, "no LLM filter"), one_off("training", 0.07, "y"), one_off("evaluation", 0.03, "z")]
    t = {"name": "teacher", "cost_per_1k_usd": 0.30}
    s = {"name": "student", "cost_per_1k_usd": 0.05}
    out = ledger(stages, t, s, 10_000)
    assert out["one_off_usd"] == 0.5 and [x["stage"] for x in out["one_off"]][2] == "judge"
    assert out["break_even"]["requests"] == 2000 and out["serving_per_1k"] == {"teacher": 0.30, "student": 0.05}
    assert ledger(stages, t, None, 10_000)["break_even"] is None
