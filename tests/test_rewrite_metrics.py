"""The rewriting metrics of the field against values worked out by hand from their definitions: GEC GLEU
(Napoles et al. 2015, multi-reference as in their 2016 update) and SARI (Xu et al. 2016); and
Google-BLEU, the metric this project called `gleu` before, shown to differ where it must."""
import math
import random

import numpy as np
import pytest

from distill.report.intervals import scorer
from distill.tasks.metrics import METRICS
from distill.tasks.row_stats import ROW_STATS

SRC = "she go to the big school near the park today"
REF = "she goes to the big school near the park today"
OTHER = "she went to the big school near the park today"  # the same error fixed another way


def gm(*precisions: float) -> float:
    return 100 * math.prod(precisions) ** (1 / len(precisions))


def test_gleu_by_hand_with_one_reference():
    """Breaks caught: no penalty for keeping what the reference changed (the source term), n-grams counted
    by type instead of token, a brevity penalty on equal lengths."""
    gleu = METRICS["gleu"]
    # the source kept as it is: 10 tokens, "go" kept although the reference changed it
    # n=1: 9 matches - 1 kept change = 8 of 10; n=2: 7 - 2 = 5 of 9; n=3: 6 - 2 = 4 of 8; n=4: 5 - 2 = 3 of 7
    assert gleu([SRC], [REF], [SRC]) == pytest.approx(round(gm(8 / 10, 5 / 9, 4 / 8, 3 / 7), 2))
    assert gleu([REF], [REF], [SRC]) == 100.0
    # the reference's edit made another way: no kept change, but "went" matches nothing
    # n=1: 9 of 10; n=2: 7 of 9; n=3: 6 of 8; n=4: 5 of 7
    assert gleu([OTHER], [REF], [SRC]) == pytest.approx(round(gm(9 / 10, 7 / 9, 6 / 8, 5 / 7), 2))
    # a hypothesis shorter than the reference pays BLEU's brevity penalty exp(1 - r/c)
    short = "she goes to the big school near the park"  # 9 tokens: every n-gram matches
    assert gleu([short], [REF], [SRC]) == pytest.approx(round(100 * math.exp(1 - 10 / 9), 2))


def test_gleu_with_two_references_draws_one_per_sentence_as_the_official_script():
    """Breaks caught: several references pooled into one (a union scores higher than any annotator), or a
    mean over references in place of the script's 500 seeded draws."""
    draws = []
    for j in range(500):
        random.seed(j * 101)
        draws.append(random.randint(0, 1))
    share_first = draws.count(0) / 500
    assert 0 < share_first < 1
    expected = share_first * gm(9 / 10, 7 / 9, 6 / 8, 5 / 7) + (1 - share_first) * 100.0
    assert METRICS["gleu"]([OTHER], [[REF, OTHER]], [SRC]) == pytest.approx(round(expected, 2))


def test_sari_by_hand_with_one_and_two_references():
    """Breaks caught: deletion scored as F1 instead of precision, additions counted by token instead of by
    n-gram type, references' counts not summed, the source's not multiplied by their number, 0/0 as 1."""
    sari = METRICS["sari"]
    # source "a b c", reference "a x c". Worked per n (keep F1, deletion precision, addition F1):
    # the source kept: n=1 keep P 2/3 R 1 -> F 0.8, del 0, add 0; n=2..4 all 0  -> (0.8/4)/3
    assert sari(["a b c"], ["a x c"], ["a b c"]) == pytest.approx(round(100 * (0.8 / 4) / 3, 2))
    # the reference: keep 1 at n=1; del 1 and add 1 at n=1..3        -> (1/4 + 3/4 + 3/4)/3
    assert sari(["a x c"], ["a x c"], ["a b c"]) == pytest.approx(round(100 * 1.75 / 3, 2))
    # another edit ("y" for "b"): keep 1 at n=1, del 1 at n=1..3, nothing added is right -> (1/4 + 3/4)/3
    assert sari(["a y c"], ["a x c"], ["a b c"]) == pytest.approx(round(100 * 1.0 / 3, 2))
    # two references, "a x c" and "a b d"; the answer "a x c":
    # n=1: keep P (2/2 + 1/2)/2 = 0.75, R (1 + 1)/3 -> F 0.70588; del (1/2)/1 = 0.5; add P 1 R 1/2 -> F 2/3
    # n=2: keep 0; del (1/2 + 2/2)/2 = 0.75; add P 1 R 2/3 -> F 0.8
    # n=3: keep 0; del 1; add P 1 R 1/2 -> F 2/3
    keep, dele, add = 0.70588235 / 4, (0.5 + 0.75 + 1) / 4, (2 / 3 + 0.8 + 2 / 3) / 4
    assert sari(["a x c"], [["a x c", "a b d"]], ["a b c"]) == pytest.approx(round(100 * (keep + dele + add) / 3, 2))


def test_google_bleu_and_gleu_differ_where_they_must():
    """Google-BLEU has no source term: an answer that leaves the error in scores well on it, while the GEC
    GLEU takes the kept error off. Breaks caught: the two names computing the same metric."""
    # n-grams of 1..4 in hypothesis and reference: 10 + 9 + 8 + 7 = 34 each; 9 + 7 + 6 + 5 = 27 match
    assert METRICS["google_bleu"]([SRC], [REF], [SRC]) == pytest.approx(round(27 / 34, 4))
    assert METRICS["gleu"]([SRC], [REF], [SRC]) == pytest.approx(55.55, abs=0.01)
    # Google-BLEU ranks leaving the error in above fixing it another way; GLEU ranks them the other way
    assert METRICS["google_bleu"]([SRC], [REF], [SRC]) > METRICS["google_bleu"]([OTHER], [REF], [SRC]) - 0.05
    assert METRICS["gleu"]([OTHER], [REF], [SRC]) > METRICS["gleu"]([SRC], [REF], [SRC]) + 20


@pytest.mark.parametrize("name", ["gleu", "sari", "google_bleu", "chrf", "exact_match", "rouge_l"])
def test_every_reference_metric_resamples_from_its_row_statistics_with_several_references(name):
    """The bootstrap's per-row statistics give the metric itself on any resample, several references
    included. Breaks caught: row statistics that read only the first reference."""
    rng = np.random.default_rng(0)
    srcs = [f"she go to school number {i} today" for i in range(12)]
    refs = [[s.replace("go", "goes"), s.replace("go", "went")] for s in srcs]
    preds = [r[i % 2] if i % 3 else s for i, (s, r) in enumerate(zip(srcs, refs))]
    tol = 1e-2 if name != "google_bleu" else 1e-4
    for refs_now in (refs, [r[0] for r in refs]):
        f = scorer(None, name, preds, refs_now, srcs)
        assert float(f(np.arange(len(preds)))) == pytest.approx(METRICS[name](preds, refs_now, srcs), abs=tol)
        if name == "gleu" and refs_now is refs:
            continue  # GLEU draws each row's reference by its position: a resample's rows keep their own draws
        for _ in range(3):
            idx = rng.integers(0, len(preds), size=len(preds))
            p, r, s = [preds[i] for i in idx], [refs_now[i] for i in idx], [srcs[i] for i in idx]
            assert float(f(idx)) == pytest.approx(METRICS[name](p, r, s), abs=tol)
    assert name in ROW_STATS
