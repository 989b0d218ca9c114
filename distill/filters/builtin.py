"""Built-in filters. Each returns one Verdict per row, in order; a drop always says why."""
from __future__ import annotations

from datasketch import MinHash, MinHashLSH

from distill.filters import FilterContext, Row, Verdict, register_filter
from distill.text import dedup_key, edit_ratio, normalise


def _field(r: Row, name: str) -> str:
    v = getattr(r, name, None)
    if v is None:
        v = r.meta.get(name, "")
    return v or ""


@register_filter("exact_dedup")
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


def _shingles(text: str, n: int) -> set[bytes]:
    s = dedup_key(text)
    if len(s) <= n:
        return {s.encode()}
    return {s[i:i + n].encode() for i in range(len(s) - n + 1)}


@register_filter("minhash_dedup")
def minhash_dedup(rows: list[Row], *, field: str = "input", threshold: float = 0.7, num_perm: int = 128,
                  ngram: int = 5, seed: int = 1) -> list[Verdict]:
    """Drop near-duplicates with MinHash LSH over character n-grams (near-linear in the number of rows).

    Character shingles, not word 3-grams: one changed word in a ten-word sentence leaves a character
    5-gram Jaccard near 0.7-0.8, while word 3-grams fall to about 0.4 and miss most near-duplicates.
    """
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = MinHash.bulk([_shingles(_field(r, field), ngram) for r in rows], num_perm=num_perm, seed=seed)
    out = []
    for r, m in zip(rows, hashes):
        hits = lsh.query(m)
        if hits:
            out.append(Verdict.drop(f"near-duplicate of {hits[0]} (threshold {threshold})"))
        else:
            lsh.insert(r.id, m)
            out.append(Verdict.keep())
    return out


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
        problem = ctx.task.format_problem(r.to_dict())
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
    """Drop rows sharing a word n-gram with any eval input or output (or equal to one, when shorter than n)."""
    grams: set[tuple[str, ...]] = set()
    whole: set[str] = set()
    for e in ctx.eval_rows:
        for t in (e["input"], e["output"]):
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
