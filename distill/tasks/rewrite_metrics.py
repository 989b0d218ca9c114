"""The rewriting metrics of the field, written from their papers' definitions (no maintained package
computes them offline without a model download): GEC GLEU (Napoles et al., ACL 2015, with the
multi-reference update of 2016: the JFLEG leaderboard's metric) and SARI (Xu et al., TACL 2016).

Both read whitespace tokens as the original scripts do (GLEU case-sensitive, SARI lowercased): a
tokenised benchmark is scored on its own tokens. Each metric is a function of per-row sufficient statistics (`*_rows`), so the
paired bootstrap can resample rows (`distill.tasks.row_stats`).
"""
from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np

ORDER = 4
GLEU_ITERATIONS = 500  # the official script's: each sentence's reference drawn at random, 500 times


def _ngrams(toks: list[str], n: int) -> Counter:
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) + 1 - n))


def gleu_sentence_stats(source: str, hypothesis: str, reference: str) -> list[int]:
    """[hypothesis length, reference length, then per n = 1..4: matches, hypothesis n-grams]: the n-grams
    of the hypothesis found in the reference, less those it keeps from the source that the reference
    changed (source n-grams absent from the reference), floored at 0."""
    s, h, r = source.split(), hypothesis.split(), reference.split()
    out = [len(h), len(r)]
    for n in range(1, ORDER + 1):
        hn, sn, rn = _ngrams(h, n), _ngrams(s, n), _ngrams(r, n)
        changed = Counter({g: c for g, c in sn.items() if g not in rn})
        out += [max(sum((hn & rn).values()) - sum((hn & changed).values()), 0), max(len(h) + 1 - n, 0)]
    return out


def gleu_from_stats(stats) -> float:
    """GLEU of summed statistics: the geometric mean of the four precisions times BLEU's brevity penalty
    (0 when any count is 0, as in the original)."""
    c, r = stats[0], stats[1]
    if any(x == 0 for x in stats):
        return 0.0
    log_prec = sum(math.log(x / y) for x, y in zip(stats[2::2], stats[3::2])) / ORDER
    return math.exp(min(0.0, 1 - r / c) + log_prec)


def reference_draws(refs: list[list[str]]) -> np.ndarray:
    """(iterations, rows): which reference each row is scored against in each iteration, drawn as the
    official script draws them (random.seed(j * 101), then randint per sentence); one iteration when
    every row has a single reference."""
    if all(len(rs) == 1 for rs in refs):
        return np.zeros((1, len(refs)), dtype=int)
    draws = np.zeros((GLEU_ITERATIONS, len(refs)), dtype=int)
    for j in range(GLEU_ITERATIONS):
        random.seed(j * 101)
        draws[j] = [random.randint(0, len(rs) - 1) for rs in refs]
    return draws


def gleu_rows(preds: list[str], refs: list[list[str]], srcs: list[str]) -> np.ndarray:
    """Per row, per iteration, the 10 GLEU statistics against that iteration's reference, flattened:
    (rows, iterations x 10)."""
    draws = reference_draws(refs)
    per_ref = [[gleu_sentence_stats(s, p, r) for r in rs] for p, rs, s in zip(preds, refs, srcs)]
    out = np.asarray([[per_ref[i][draws[j, i]] for j in range(len(draws))] for i in range(len(preds))], dtype=float)
    return out.reshape(len(preds), -1)


def gleu_total(sums: np.ndarray, n: int) -> float:
    """The mean over iterations of the corpus GLEU (`gleu_from_stats` of each), times 100, in numpy."""
    it = sums.reshape(-1, 2 + 2 * ORDER)
    ok = (it > 0).all(axis=1)
    safe = np.where(it > 0, it, 1.0)
    log_prec = np.log(safe[:, 2::2] / safe[:, 3::2]).sum(axis=1) / ORDER
    scores = np.where(ok, np.exp(np.minimum(0.0, 1 - safe[:, 1] / safe[:, 0]) + log_prec), 0.0)
    return 100 * float(scores.mean())


def gleu(preds: list[str], refs: list[list[str]], srcs: list[str]) -> float:
    return round(gleu_total(gleu_rows(preds, refs, srcs).sum(axis=0), len(preds)), 2)


def _sari_ngram(s: Counter, c: Counter, rs: list[Counter]) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) for one n, as Xu et al.'s SARI.py computes them: the
    source's and the candidate's counts multiplied by the number of references, the references'
    counts summed, and 0/0 taken as 0."""
    k, ref = len(rs), sum(rs, Counter())
    s_rep, c_rep = Counter({g: v * k for g, v in s.items()}), Counter({g: v * k for g, v in c.items()})

    keep, keep_all = s_rep & c_rep, s_rep & ref
    keep_good = keep & ref
    keep_p = sum(keep_good[g] / keep[g] for g in keep_good) / len(keep) if keep else 0.0
    keep_r = sum(keep_good[g] / keep_all[g] for g in keep_good) / len(keep_all) if keep_all else 0.0

    dele = s_rep - c_rep
    dele_good = dele - ref
    del_p = sum(dele_good[g] / dele[g] for g in dele_good) / len(dele) if dele else 0.0

    add, add_all = set(c) - set(s), set(ref) - set(s)
    add_good = add & set(ref)
    add_p = len(add_good) / len(add) if add else 0.0
    add_r = len(add_good) / len(add_all) if add_all else 0.0
    return _f1(keep_p, keep_r), del_p, _f1(add_p, add_r)


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def sari_sentence(source: str, prediction: str, references: list[str]) -> float:
    """SARI of one sentence, 0-100: keep F1, deletion precision and addition F1, each the mean over
    n = 1..4, averaged. Lowercased whitespace tokens, as the original script reads them."""
    s, c, rs = source.lower().split(), prediction.lower().split(), [r.lower().split() for r in references]
    parts = [_sari_ngram(_ngrams(s, n), _ngrams(c, n), [_ngrams(r, n) for r in rs]) for n in range(1, ORDER + 1)]
    keep, dele, add = (sum(p[i] for p in parts) / ORDER for i in range(3))
    return 100 * (keep + dele + add) / 3


def sari_rows(preds: list[str], refs: list[list[str]], srcs: list[str]) -> np.ndarray:
    return np.asarray([sari_sentence(s, p, rs) for p, rs, s in zip(preds, refs, srcs)], dtype=float).reshape(-1, 1)


def sari(preds: list[str], refs: list[list[str]], srcs: list[str]) -> float:
    """The corpus SARI: the mean of the sentences' (as the original script and EASSE's sentence-level mean)."""
    return round(float(sari_rows(preds, refs, srcs).mean()), 2) if preds else 0.0
