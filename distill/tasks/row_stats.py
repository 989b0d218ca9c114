"""Each built-in metric as per-row sufficient statistics plus a function of their column sums.

Corpus metrics (GLEU, chrF, macro-F1, field F1) are not means of per-row scores, so a bootstrap
cannot resample row scores; it can resample rows' statistics, though: a resample's metric is the
function of the resampled rows' summed statistics, exactly what the metric would compute on those
rows (tests/test_verdict.py checks this against the metric functions). Thousands of resamples then
cost one matrix product instead of thousands of re-scorings.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

import distill.tasks.rewrite_metrics as rewrite_metrics
from distill.tasks import metrics as m
from distill.text import normalise, tokens

# (predictions, references, sources) -> (n rows, k statistics); (sums over rows, n rows) -> metric
RowStats = tuple[Callable[[list[str], list[str], list[str]], np.ndarray], Callable[[np.ndarray, int], float]]


def _share(hits) -> np.ndarray:
    return np.asarray(hits, dtype=float).reshape(-1, 1)


def _pct(s: np.ndarray, n: int) -> float:
    return 100 * s[0] / n if n else 0.0


def _exact(preds, refs, srcs):
    return _share([any(normalise(p) == normalise(r) for r in m.all_refs(rs)) for p, rs in zip(preds, refs)])


def _accuracy(preds, refs, srcs):
    return _share([p == r for p, r in zip(preds, m.first_refs(refs))])


def _label_counts(preds, refs, srcs):
    """Per row, for each reference label: [true positive, false positive, false negative] (one-hot)."""
    refs = m.first_refs(refs)
    labels = sorted(set(refs))
    out = np.zeros((len(preds), 3 * len(labels)))
    for i, (p, r) in enumerate(zip(preds, refs)):
        for j, lab in enumerate(labels):
            out[i, 3 * j:3 * j + 3] = (p == lab and r == lab, p == lab and r != lab, p != lab and r == lab)
    return out


def _macro_f1(s, n):
    tp, fp, fn = s[0::3], s[1::3], s[2::3]
    present = (tp + fn) > 0  # sklearn averages over the labels the (resampled) references contain
    if not present.any():
        return 0.0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return 100 * float(f1[present].mean())


def _chrf_rows(preds, refs, srcs):
    from sacrebleu.metrics import CHRF

    return np.asarray(CHRF()._extract_corpus_statistics(preds, m.ref_streams(refs)), dtype=float)


def _chrf(s, n):
    from sacrebleu.metrics import CHRF

    return CHRF()._compute_score_from_stats([int(round(v)) for v in s]).score


def _rouge_rows(preds, refs, srcs):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return _share([scorer.score_multi(m.all_refs(r), p)["rougeL"].fmeasure for p, r in zip(preds, refs)])


def _google_bleu_rows(preds, refs, srcs):
    """NLTK's corpus GLEU is sum(n-gram matches) / sum(max(hypothesis n-grams, reference n-grams)), each
    row counted against its reference with the best ratio."""
    from nltk.util import everygrams

    out = []
    for p, rs in zip(preds, refs):
        hyp = Counter(everygrams(tokens(p), 1, 4))
        counts = []
        for r in m.all_refs(rs):
            ref = Counter(everygrams(tokens(r), 1, 4))
            if (n_all := max(sum(hyp.values()), sum(ref.values()))) > 0:
                counts.append((sum((hyp & ref).values()), n_all))
        out.append(max(counts, key=lambda c: c[0] / c[1]) if counts else (0, 0))
    return np.asarray(out, dtype=float).reshape(-1, 2)


def _gleu_rows(preds, refs, srcs):
    return rewrite_metrics.gleu_rows(preds, [m.all_refs(r) for r in refs], srcs)


def _sari_rows(preds, refs, srcs):
    return rewrite_metrics.sari_rows(preds, [m.all_refs(r) for r in refs], srcs)


def _field_rows(preds, refs, srcs):
    return np.asarray([m.field_counts([p], [r]) for p, r in zip(preds, m.first_refs(refs))], dtype=float).reshape(-1, 5)


def _field_f1(s, n):
    right, predicted, expected = s[0], s[1], s[2]
    if not right:
        return 0.0
    precision, recall = right / predicted, right / expected
    return 100 * 2 * precision * recall / (precision + recall)


def _object_rows(preds, refs, srcs):
    return _share([m.object_match([p], [r], []) == 100 for p, r in zip(preds, m.first_refs(refs))])


ROW_STATS: dict[str, RowStats] = {
    "exact_match": (_exact, _pct),
    "accuracy": (_accuracy, _pct),
    "macro_f1": (_label_counts, _macro_f1),
    "chrf": (_chrf_rows, _chrf),
    "rouge_l": (_rouge_rows, _pct),
    "google_bleu": (_google_bleu_rows, lambda s, n: s[0] / s[1] if s[1] else 0.0),
    "gleu": (_gleu_rows, rewrite_metrics.gleu_total),
    "sari": (_sari_rows, lambda s, n: s[0] / n if n else 0.0),
    "field_f1": (_field_rows, _field_f1),
    "field_accuracy": (_field_rows, lambda s, n: 100 * s[4] / s[3] if s[3] else 0.0),
    "object_match": (_object_rows, _pct),
}
