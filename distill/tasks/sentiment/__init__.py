"""Review sentiment, a classification task with a programmatic answer check (not text editing).

Reviews are assembled by code from sentences of known polarity (plus neutral filler), so every input
knows its label. The few-shot teacher labels them; the `checker` filter keeps only labels that agree
with the known one, so the student learns from correct, label-only answers.
"""
from __future__ import annotations

import random
import re

from distill.tasks import ClassificationTask, register_task

LABELS = ("positive", "negative")
SUBJECTS = ["the hotel", "this phone", "the pizza", "the service", "this jacket", "the new laptop", "the movie",
            "the restaurant", "this blender", "the headphones", "the tour guide", "the delivery", "this book",
            "the coffee", "the hairdresser", "the app", "the hiking boots", "the rental car", "the concert", "the museum"]
POSITIVE = ["{s} was excellent.", "I loved {s}.", "{s} exceeded my expectations.", "{s} works perfectly.",
            "I would happily recommend {s}.", "{s} was worth every penny.", "Everything about {s} was great.",
            "{s} made my day.", "I am very happy with {s}.", "{s} was a pleasant surprise."]
NEGATIVE = ["{s} was a disappointment.", "I hated {s}.", "{s} broke after two days.", "{s} was a waste of money.",
            "I would not recommend {s}.", "{s} was rude and slow.", "Nothing about {s} worked.",
            "{s} ruined my evening.", "I am very unhappy with {s}.", "I want my money back for {s}."]
FILLER = ["I bought it last week.", "We went there on a Tuesday.", "My sister told me about it.",
          "It arrived in a blue box.", "I used it every day for a month.", "We were a group of four.",
          "The price was about average.", "I had read a few reviews first."]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# The held-out eval set is written from sentences and subjects that seeds and generated inputs never
# use, so the student is scored on phrasings it never saw, not on recombinations of its training data.
HELD_OUT = 3


def _bank(held_out: bool) -> tuple[list[str], list[str], list[str]]:
    if held_out:
        return POSITIVE[-HELD_OUT:], NEGATIVE[-HELD_OUT:], SUBJECTS[-5:]
    return POSITIVE[:-HELD_OUT], NEGATIVE[:-HELD_OUT], SUBJECTS[:-5]


def _review(label: str, r: random.Random, held_out: bool) -> str:
    pos, neg, subjects = _bank(held_out)
    s = r.choice(subjects)
    pool = pos if label == "positive" else neg
    parts = [_cap(t.format(s=s)) for t in r.sample(pool, r.randint(1, 2))]
    if r.random() < 0.6:
        parts.insert(r.randint(0, len(parts)), r.choice(FILLER))
    return " ".join(parts)


def make_reviews(seed: int | str, n: int, exclude: set[str] = frozenset(), held_out: bool = False) -> list[dict]:
    """n distinct reviews (input, output label, kind), fixed by seed, none of them in exclude;
    held_out=True writes them from the sentences and subjects kept back for the eval set."""
    r = random.Random(seed)
    out, seen = [], set(exclude)
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        label = r.choice(LABELS)
        text = _review(label, r, held_out)
        if text not in seen:
            seen.add(text)
            out.append({"input": text, "output": label, "kind": label})
    return out


def reviews_like(examples: list[dict], seed: int | str, n: int, exclude: set[str] = frozenset()) -> list[dict]:
    """n distinct reviews like the examples (input and known label): each example's sentences about another
    subject of the training bank, filler added or left out, with the example's label; fixed by seed."""
    r, subjects = random.Random(seed), _bank(False)[2]
    out, seen = [], set(exclude)
    for tries in range(100 * n):
        if len(out) == n or not examples:
            break
        ex = examples[tries % len(examples)]
        text = ex["input"]
        for s in sorted(SUBJECTS, key=len, reverse=True):
            text = re.sub(rf"\b{re.escape(s)}\b", r.choice(subjects), text, flags=re.I)
        parts = [p for p in re.split(r"(?<=[.!?])\s+", text) if p and p not in FILLER]
        if r.random() < 0.6:
            parts.insert(r.randint(0, len(parts)), r.choice(FILLER))
        text = " ".join(_cap(p) for p in parts)
        if text not in seen:
            seen.add(text)
            label = ex.get("reference") or ex["output"]  # the known label where the example has one
            out.append({"input": text, "output": label, "kind": label})
    return out


@register_task("sentiment")
class Sentiment(ClassificationTask):
    """task.yaml sets the labels, metrics and data; this makes the inputs, each with its known label."""

    def programmatic_inputs(self, seed: int, n: int, exclude: set[str]) -> list[dict]:
        return make_reviews(f"{seed}:inputs", n, exclude)

    def inputs_like(self, examples: list[dict], seed: int | str, n: int, exclude: set[str]) -> list[dict]:
        return reviews_like(examples, f"{seed}:like", n, exclude)

    def parse_inputs(self, text: str) -> list[str]:
        return []  # reviews are made by code (make_reviews, reviews_like), not by the teacher
