"""Built-in filters. Each returns one Verdict per row, in order; a drop always says why."""
from __future__ import annotations

import zlib

import numpy as np
from datasketch import MinHashLSH
from rapidfuzz.distance import Levenshtein

from distill.filters.registry import FilterContext, Verdict, register_filter
from distill.io import references
from distill.records import Row
from distill.text import dedup_key, edit_ratio, normalise


def _field(r: Row, name: str) -> str:
    v = getattr(r, name, None)
    if v is None:
        v = r.meta.get(name, "")
    return v or ""


def _known_before_answer(params: dict) -> bool:
    return params.get("field", "input") in ("input", "reference", "id")


@register_filter("exact_dedup", before_answer=_known_before_answer)
def exact_dedup(rows: list[Row], *, field: str = "input") -> list[Verdict]:
    """Drop rows whose `field` equals an earlier row's once case, punctuation and spacing are removed."""
    first: dict[str, str] = {}
    out = []
    for r in rows:
        k = dedup_key(_field(r, field))
        if k in first:
            out.append(Verdict.drop(f"exact duplicate of {first[k]}"))
        else:
            first[k] = r.id
            out.append(Verdict.keep())
    return out


def _word_shingles(w: list[str]) -> list[str]:
    """Words and word pairs: one changed word in n leaves a word-set Jaccard near (n-1)/(n+1), where
    character 5-grams fall below 0.3 in a six-word sentence and word 3-grams below 0.2."""
    return list({*w, *(f"{a} {b}" for a, b in zip(w, w[1:]))}) or [""]


def minhash_signatures(shingle_sets: list[list[str]], num_perm: int = 128, seed: int = 1,
                       chunk_shingles: int = 20_000) -> np.ndarray:
    """MinHash signatures (rows x num_perm) for all rows at once, with numpy.

    Each permutation is h -> a*h + b mod 2^32 (odd a: a bijection) over CRC32 shingle hashes, the
    affine32 scheme of datasketch's MinHash; one datasketch MinHash per row cost about 65 us a row
    at 100k rows. Small chunks keep the (shingles x num_perm) intermediate in cache.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**31, size=num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint32)
    sizes = np.fromiter((len(s) for s in shingle_sets), dtype=np.int64, count=len(shingle_sets))
    flat = np.fromiter((zlib.crc32(x.encode()) for s in shingle_sets for x in s), dtype=np.uint32, count=int(sizes.sum()))
    ends = np.cumsum(sizes)
    sigs = np.empty((len(shingle_sets), num_perm), dtype=np.uint32)
    row = 0
    while row < len(shingle_sets):
        start = ends[row] - sizes[row]
        stop = max(int(np.searchsorted(ends, start + chunk_shingles, side="right")), row + 1)
        # (num_perm x shingles): reducing along contiguous rows is ~8x faster than down columns
        perm = a[:, None] * flat[None, start:ends[stop - 1]] + b[:, None]  # wraps mod 2^32
        sigs[row:stop] = np.minimum.reduceat(perm, (ends[row:stop] - sizes[row:stop]) - start, axis=1).T
        row = stop
    return sigs


def _candidate_pairs(sigs: np.ndarray, bands: int, rows_per_band: int, per_bucket: int) -> np.ndarray:
    """(earlier, later) row pairs that share a MinHash band bucket, deduplicated, sorted by the later row.

    Banding with numpy sorts instead of datasketch's MinHashLSH: that costs a Python dict operation per
    band per row (over six million at 100k rows); this costs one sort per band. A later row is paired
    with the first `per_bucket` members of each of its buckets (the ones likely kept), which bounds the
    work when a bucket is big.
    """
    n = len(sigs)
    rng = np.random.default_rng(0)
    pairs = []
    for b in range(bands):
        band = sigs[:, b * rows_per_band:(b + 1) * rows_per_band].astype(np.uint64)
        coef = rng.integers(1, 2**63 - 1, size=rows_per_band, dtype=np.uint64) | np.uint64(1)
        keys = (band * coef).sum(axis=1)  # wraps mod 2^64: a hash of the band
        order = np.argsort(keys, kind="stable")  # equal keys stay in row order
        k = keys[order]
        start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        size = np.diff(np.r_[start, n])
        group_start = np.repeat(start, size)
        pos = np.arange(n)
        for t in range(per_bucket):
            ok = group_start + t < pos
            pairs.append(np.stack([order[group_start[ok] + t], order[pos[ok]]], axis=1))
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    allp = np.concatenate(pairs)
    allp = np.unique(allp[:, 1].astype(np.int64) * n + allp[:, 0])  # sorted by later row, then earlier
    return np.stack([allp % n, allp // n], axis=1)


@register_filter("minhash_dedup", before_answer=_known_before_answer)
def minhash_dedup(rows: list[Row], *, field: str = "input", threshold: float = 0.65, num_perm: int = 128,
                  candidate_threshold: float = 0.35, min_jaccard: float = 0.2, per_bucket: int = 4,
                  seed: int = 1) -> list[Verdict]:
    """Drop near-duplicates: MinHash LSH proposes candidates, word-level edit similarity decides.

    Candidates are earlier rows likely to share, by MinHash over words and word pairs, a Jaccard of
    `candidate_threshold` (estimated at `min_jaccard` at least). A row is dropped when its words are
    within a word-level Levenshtein similarity of `threshold` of a kept candidate: one changed word in
    ten is 0.9, two in six 0.67, while two sentences that merely share a run of words score low.
    Near-linear in the number of rows.
    """
    toks = [dedup_key(_field(r, field)).split() for r in rows]
    if len(rows) < 2:
        return [Verdict.keep() for _ in rows]
    sigs = minhash_signatures([_word_shingles(t) for t in toks], num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=candidate_threshold, num_perm=num_perm)  # only for its choice of bands x rows
    bands, rows_per_band = lsh.b, lsh.r
    pairs = _candidate_pairs(sigs, bands, rows_per_band, per_bucket)
    # One shared band is weak evidence in a small vocabulary; the share of equal signature values
    # estimates the Jaccard, and discarding pairs far below it is cheap next to the edit distance.
    est = (sigs[pairs[:, 0]] == sigs[pairs[:, 1]]).mean(axis=1)
    pairs = pairs[est >= min_jaccard]
    dropped_by: dict[int, int] = {}
    for i, j in pairs.tolist():
        if j in dropped_by or i in dropped_by:
            continue
        if Levenshtein.normalized_similarity(toks[i], toks[j], score_cutoff=threshold):
            dropped_by[j] = i
    return [Verdict.drop(f"near-duplicate of {rows[dropped_by[k]].id} (similarity >= {threshold})")
            if k in dropped_by else Verdict.keep() for k in range(len(rows))]


@register_filter("length")
def length(rows: list[Row], *, fields: list[str] = ("input", "output"), min_words: int = 3,
           max_words: int = 40) -> list[Verdict]:
    """Drop rows with any of `fields` shorter than min_words or longer than max_words."""
    out = []
    for r in rows:
        verdict = Verdict.keep()
        for f in fields:
            n = len(_field(r, f).split())
            if n < min_words or n > max_words:
                verdict = Verdict.drop(f"{f} has {n} words, outside [{min_words}, {max_words}]")
                break
        out.append(verdict)
    return out


@register_filter("task_format")
def task_format(rows: list[Row], *, ctx: FilterContext) -> list[Verdict]:
    """The task's own format check (for grammar: one sentence, no chatter, not wildly longer than the input)."""
    out = []
    for r in rows:
        problem = ctx.task.format_problem(r)
        out.append(Verdict.drop(problem) if problem else Verdict.keep())
    return out


@register_filter("edit_ratio")
def edit_ratio_filter(rows: list[Row], *, max_ratio: float = 0.5, min_ratio: float = 0.0) -> list[Verdict]:
    """Drop corrections that rewrite too much of the input (share of tokens changed above max_ratio)."""
    out = []
    for r in rows:
        e = edit_ratio(r.input, r.output)
        if e > max_ratio or e < min_ratio:
            out.append(Verdict.drop(f"edit ratio {e:.2f} outside [{min_ratio}, {max_ratio}]"))
        else:
            out.append(Verdict.keep())
    return out


@register_filter("checker")
def checker(rows: list[Row], *, ctx: FilterContext) -> list[Verdict]:
    """Keep only teacher answers the task's programmatic checker accepts (Task.check); seeds pass."""
    out = []
    for r in rows:
        problem = None if r.meta.get("source") == "seed" else ctx.task.check(r)
        out.append(Verdict.drop(problem) if problem else Verdict.keep())
    return out


@register_filter("agrees_with_reference")
def agrees_with_reference(rows: list[Row]) -> list[Verdict]:
    """Where a row knows its answer (the clean sentence an error was injected into), keep only teacher
    answers that restore it exactly. Rows without a reference pass."""
    out = []
    for r in rows:
        if r.reference is None or normalise(r.output) == normalise(r.reference):
            out.append(Verdict.keep())
        elif normalise(r.output) == normalise(r.input):
            out.append(Verdict.drop("teacher left the injected error in place"))
        else:
            out.append(Verdict.drop("teacher answer differs from the reference"))
    return out


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = dedup_key(text).split()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


@register_filter("decontaminate")
def decontaminate(rows: list[Row], *, ctx: FilterContext, ngram: int = 8,
                  fields: list[str] = ("input", "output")) -> list[Verdict]:
    """Drop rows sharing a word n-gram with any eval input or reference (or equal to one, when shorter than n)."""
    grams: set[tuple[str, ...]] = set()
    whole: set[str] = set()
    for e in ctx.eval_rows:
        for t in (e["input"], *references(e)):
            grams |= _ngrams(t, ngram)
            whole.add(dedup_key(t))
    out = []
    for r in rows:
        verdict = Verdict.keep()
        for f in fields:
            t = _field(r, f)
            if dedup_key(t) in whole:
                verdict = Verdict.drop(f"{f} equals an eval row")
                break
            if grams and not grams.isdisjoint(_ngrams(t, ngram)):
                verdict = Verdict.drop(f"{f} shares a {ngram}-gram with the eval set")
                break
        out.append(verdict)
    return out


JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["score"],
    "additionalProperties": False,
}


@register_filter("judge")
def judge(rows: list[Row], *, ctx: FilterContext, min_score: int = 3, max_tokens: int = 16,
          model: str | None = None) -> list[Verdict]:
    """LLM-as-judge: a model (the teacher unless `model` names another one the same endpoint serves)
    rates each row 1-5 against the task's rubric (the task folder's judge.j2) through structured output.
    Rows under min_score are dropped with the score as the reason; a reply still invalid after
    teacher.structured_retries is dropped with its raw text. Kept rows carry meta.judge_score."""
    if ctx.teacher is None:
        raise RuntimeError("filter 'judge' needs a teacher (it runs inside the filter stage)")
    if not rows:
        return []
    replies = ctx.teacher.structured([ctx.task.judge_messages(r.input, r.output) for r in rows], JUDGE_SCHEMA,
                                     "judge", max_tokens=max_tokens, model=model)
    out = []
    for r, rep in zip(rows, replies):
        if rep.get("parsed") is None:
            raw = (rep.get("raw") or "")[:80]
            out.append(Verdict.drop(f"judge gave no valid score: {rep.get('error')}" + (f" (raw: {raw!r})" if raw else "")))
            continue
        score = rep["parsed"]["score"]
        r.meta["judge_score"] = score
        out.append(Verdict.keep() if score >= min_score else Verdict.drop(f"judge score {score} < {min_score}"))
    return out
