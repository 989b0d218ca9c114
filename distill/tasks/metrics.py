"""Metrics by name, from well-kept libraries where one computes them: scikit-learn for labels, sacrebleu
(chrF), rouge-score (ROUGE-L), NLTK (Google-BLEU); the GEC GLEU and SARI from their papers
(`rewrite_metrics.py`). Every function takes (predictions, references, sources) and returns a number on
the scale the report prints; a row's reference may be a list of references (a benchmark's annotators):
metrics that can use several do (exact match: any; chrF, Google-BLEU, GLEU, SARI, ROUGE-L: all), the
label and JSON metrics read the first."""
from __future__ import annotations

import json
from collections.abc import Callable

import distill.tasks.rewrite_metrics as rewrite_metrics
from distill.text import normalise, tokens

Reference = str | list[str]  # one reference, or a row's several
Metric = Callable[[list[str], list[Reference], list[str]], float]


def all_refs(r: Reference) -> list[str]:
    return r if isinstance(r, list) else [r]


def first_refs(refs: list[Reference]) -> list[str]:
    """Each row's first reference: what the single-reference metrics and the task's own metrics read."""
    return [all_refs(r)[0] for r in refs]


def ref_streams(refs: list[Reference]) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference position, None where a row has fewer."""
    k = max((len(all_refs(r)) for r in refs), default=1)
    return [[all_refs(r)[i] if i < len(all_refs(r)) else None for r in refs] for i in range(k)]


def exact_match(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """Share of answers equal to any of the row's references, whitespace folded."""
    hits = sum(any(normalise(p) == normalise(r) for r in all_refs(rs)) for p, rs in zip(preds, refs))
    return round(100 * hits / max(len(preds), 1), 2)


def accuracy(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    from sklearn.metrics import accuracy_score

    return round(100 * accuracy_score(first_refs(refs), preds), 2) if preds else 0.0


def macro_f1(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """Over the labels of the references: an unparseable answer counts as a miss, not as a new class."""
    from sklearn.metrics import f1_score

    refs = first_refs(refs)
    labels = sorted(set(refs))
    return round(100 * f1_score(refs, preds, labels=labels, average="macro", zero_division=0), 2) if preds else 0.0


def confusion(preds: list[str], refs: list[Reference], labels: list[str]) -> dict[str, dict[str, int]]:
    """reference label -> predicted label -> count. Answers outside the label set count in a bucket whose
    name no label can have (a user's label may well be "other"), shown only when some answer is there."""
    from sklearn.metrics import confusion_matrix

    refs, bucket = first_refs(refs), "(not a label)"
    while bucket in labels:
        bucket += "*"
    mapped = [p if p in labels else bucket for p in preds]
    cols = [*labels, *([bucket] if bucket in mapped else [])]
    m = confusion_matrix(refs, mapped, labels=cols)
    return {ref: {c: int(m[i][j]) for j, c in enumerate(cols)} for i, ref in enumerate(labels)}


def chrf(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    from sacrebleu.metrics import CHRF

    return round(CHRF().corpus_score(preds, ref_streams(refs)).score, 2)


def rouge_l(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """Mean ROUGE-L F-measure, each answer against its best reference."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    scores = [scorer.score_multi(all_refs(r), p)["rougeL"].fmeasure for p, r in zip(preds, refs)]
    return round(100 * sum(scores) / max(len(scores), 1), 2)


def google_bleu(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """NLTK's corpus GLEU: Google-BLEU (Wu et al. 2016), the minimum of n-gram precision and recall
    against the reference, with no source term; 0-1. Not the GLEU of grammatical error correction."""
    from nltk.translate.gleu_score import corpus_gleu

    return round(corpus_gleu([[tokens(r) for r in all_refs(rs)] for rs in refs], [tokens(p) for p in preds]), 4)


def gleu(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """The GLEU of grammatical error correction (Napoles et al. 2015/2016; JFLEG's metric), 0-100."""
    return rewrite_metrics.gleu(preds, [all_refs(r) for r in refs], srcs)


def sari(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """SARI (Xu et al. 2016), 0-100: kept, deleted and added n-grams against the source and every reference."""
    return rewrite_metrics.sari(preds, [all_refs(r) for r in refs], srcs)


def _obj(text: str) -> dict | None:
    try:
        v = json.loads(text)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def _leaves(obj: dict, prefix: str = "") -> dict[str, str]:
    """Flattened fields (a.b for nested objects); values compared as normalised JSON text."""
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        elif v is not None and v != "" and v != []:
            out[prefix + k] = normalise(json.dumps(v, sort_keys=True) if not isinstance(v, str) else v)
    return out


def field_counts(preds: list[str], refs: list[str]) -> tuple[int, int, int, int, int]:
    """(fields right, fields predicted, fields in references, field slots compared, slots right)."""
    right = predicted = expected = slots = slot_right = 0
    for p, r in zip(preds, refs):
        pf, rf = _leaves(_obj(p) or {}), _leaves(_obj(r) or {})
        hit = sum(pf.get(k) == v for k, v in rf.items())
        right, predicted, expected = right + hit, predicted + len(pf), expected + len(rf)
        keys = set(pf) | set(rf)
        slots, slot_right = slots + len(keys), slot_right + sum(pf.get(k) == rf.get(k) for k in keys)
    return right, predicted, expected, slots, slot_right


def field_f1(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """Micro F1 over (field, value) pairs: a field counts as found when its value equals the reference's."""
    right, predicted, expected, _, _ = field_counts(preds, first_refs(refs))
    if not right:
        return 0.0
    precision, recall = right / predicted, right / expected
    return round(100 * 2 * precision * recall / (precision + recall), 2)


def field_accuracy(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """Share of field slots (in either object) where prediction and reference agree, empty included."""
    _, _, _, slots, slot_right = field_counts(preds, first_refs(refs))
    return round(100 * slot_right / slots, 2) if slots else 0.0


def object_match(preds: list[str], refs: list[Reference], srcs: list[str]) -> float:
    """Whole-object exact match, field order and whitespace aside."""
    hits = sum((o := _obj(p)) is not None and _leaves(o) == _leaves(_obj(r) or {}) for p, r in zip(preds, first_refs(refs)))
    return round(100 * hits / max(len(preds), 1), 2)


METRICS: dict[str, Metric] = {
    "exact_match": exact_match, "accuracy": accuracy, "macro_f1": macro_f1, "chrf": chrf, "rouge_l": rouge_l,
    "gleu": gleu, "google_bleu": google_bleu, "sari": sari,
    "field_f1": field_f1, "field_accuracy": field_accuracy, "object_match": object_match,
}
