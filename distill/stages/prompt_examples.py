"""The examples the prompt-only steps of the progression show: many of them in one fixed prompt, or the
few nearest to each input, retrieved.

Both draw on what the run already has: the seeds and the rows every filter kept. Nothing of any eval
set is in that pool: a row equal to an eval input or reference, or sharing a word n-gram with one, is
left out (the decontamination filter's rule, applied again: the seeds never went through it).
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from distill.filters import FilterContext
from distill.filters.builtin import decontaminate
from distill.io import read_jsonl
from distill.records import Row
from distill.tasks import ClassificationTask, Task

POOL_NGRAM = 6  # without a decontamination filter in the run: the default config's n-gram


def example_pool(task: Task, seeds: list[dict], kept: list[dict], eval_rows: list[dict],
                 decontaminate_params: dict | None = None) -> list[dict]:
    """Seeds, then kept rows, one per input, none of them touching an eval row: [{"input", "output", "kind"}].
    Touching is the run's decontamination filter's rule (its n-gram and fields, `decontaminate_params`),
    else a 6-gram or equality in the input or the answer; a classification's answers are labels every
    eval row shares, so there only inputs count."""
    rows, seen = [], set()
    for r in [*seeds, *kept]:
        if r["input"] not in seen and isinstance(r.get("output"), str):
            seen.add(r["input"])
            rows.append({"input": r["input"], "output": r["output"], "kind": kind(r, task)})
    ctx = FilterContext(task=task, seeds=seeds, eval_rows=eval_rows)
    params = {"ngram": POOL_NGRAM, "fields": ["input"] if isinstance(task, ClassificationTask) else ["input", "output"],
              **(decontaminate_params or {})}
    verdicts = decontaminate([Row(id=str(i), input=r["input"], output=r["output"]) for i, r in enumerate(rows)],
                             ctx=ctx, **params)
    return [r for r, v in zip(rows, verdicts) if v.kept]


def kept_rows(train_file: Path) -> list[dict]:
    """The rows every filter kept (data/train.jsonl), or none before the filter stage has run."""
    return read_jsonl(train_file) if train_file.exists() else []


def kind(row: dict, task: Task | None) -> str:
    """What kind of example a row is (its error type or kind, its label, else edited or not): shots are
    varied over kinds."""
    meta = row.get("meta") or {}
    return (row.get("error_type") or row.get("kind") or meta.get("error_type") or meta.get("kind")
            or (row["output"] if isinstance(task, ClassificationTask) else None)
            or ("none" if row["input"] == row["output"] else "edit"))


def varied(pool: list[dict], seed: str, task: Task | None, first: list[dict] = ()) -> list[dict]:
    """The pool in the order shots are taken: `first` (the teacher's own shots), then one of each kind,
    a second of each, and so on, shuffled under `seed` within each round."""
    chosen = {r["input"] for r in first}
    rest = [r for r in pool if r["input"] not in chosen]
    random.Random(seed).shuffle(rest)
    seen: Counter = Counter()
    ranked = []
    for r in rest:
        k = kind(r, task)
        ranked.append((seen[k], r))
        seen[k] += 1
    ranked.sort(key=lambda rk: rk[0])  # stable: the shuffled order within each round
    return [*first, *(r for _, r in ranked)]


def fitting(ordered: list[dict], k: int, fits: Callable[[list[dict]], bool]) -> list[dict]:
    """The first k examples, fewer when the prompt they make would not fit (the longest prefix that does)."""
    lo, hi = 0, min(k, len(ordered))
    while lo < hi:  # the prompt grows with every example: bisect on the count
        mid = (lo + hi + 1) // 2
        if fits(ordered[:mid]):
            lo = mid
        else:
            hi = mid - 1
    return ordered[:lo]


class Retriever:
    """The k rows of the pool nearest to a text, the nearest last (closest to the question it helps answer)."""

    def __init__(self, pool: list[dict], k: int, embed: Callable[[list[str]], "object"] | None = None):
        self.pool, self.k, self.embed = pool, min(k, len(pool)), embed
        texts = [r["input"] for r in pool]
        if not pool:  # nothing to retrieve: the step is zero-shot (its name says 0 retrieved)
            self.matrix = None
        elif embed is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True)
            self.matrix = self.vectorizer.fit_transform(texts)
        else:
            self.matrix = embed(texts)
        self._cache: dict[str, list[dict]] = {}

    def __call__(self, text: str) -> list[dict]:
        if text not in self._cache:
            self._cache[text] = [self.pool[i] for i in self.nearest(text)]
        return self._cache[text]

    def nearest(self, text: str) -> list[int]:
        import numpy as np

        if self.matrix is None:
            return []
        q = self.vectorizer.transform([text]) if self.embed is None else self.embed([text])
        sims = np.asarray((self.matrix @ q.T).todense() if self.embed is None else self.matrix @ q.T).ravel()
        order = np.argsort(-sims, kind="stable")[: self.k]
        return [int(i) for i in order[::-1]]


def mean_pooled(model_dir: Path, trust_remote_code: bool = False) -> Callable[[list[str]], "object"]:
    """An embedding function: the model's last hidden state averaged over each text's tokens, unit length."""
    import numpy as np
    import torch

    from distill.models.load import load_model

    model, tok = load_model(model_dir, trust_remote_code=trust_remote_code)
    tok.padding_side = "right"

    def embed(texts: list[str]):
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 32):
                enc = tok(texts[i:i + 32], return_tensors="pt", padding=True)
                hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                v = (hidden * mask).sum(1) / mask.sum(1)
                out.append(torch.nn.functional.normalize(v.float(), dim=-1).numpy())
        return np.concatenate(out)

    return embed
