"""Grammarly-style sentence correction: one sentence in, the corrected sentence out.

A 135M teacher asked to *invent* erroneous sentences mostly writes chatter or correct sentences, so
inputs are made the other way round: the teacher writes clean sentences on sampled topics, the rules
below inject one seed-like error, and the `agrees_with_reference` filter keeps only teacher
corrections that restore the clean sentence.
"""
from __future__ import annotations

import random
import re

from distill.records import Row
from distill.tasks import GenerationTask, register_task

CHATTER = re.compile(
    r"^(here\b|sure\b|certainly\b|of course\b|okay\b|ok\b|note\b|i\b.*\b(corrected|fixed|changed)\b|"
    r"the (correct|corrected|revised|fixed)\b|correct(ed|ion)?\s*(sentence|version)?\s*:|"
    r"(revised|fixed|answer|output|sentence)\s*:|explanation\b)",
    re.I,
)
_LABEL = re.compile(r"^\s*(corrected sentence|correction|corrected|answer|output)\s*:\s*", re.I)
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_NOT_PLAIN = re.compile(r"[:;\"()\[\]{}<>*#_/\\|=]|\d|\b(sentence|sentences|example|grammar)\b", re.I)


# --- error injection ------------------------------------------------------------------------------
_SWAPS = {
    "agreement": {"is": "are", "are": "is", "was": "were", "were": "was", "has": "have", "have": "has",
                  "does": "do", "doesn't": "don't", "don't": "doesn't"},
    "preposition": {"in": "on", "on": "in", "at": "in", "to": "at", "of": "for", "for": "of", "about": "for",
                    "into": "in", "with": "at"},
    "homophone": {"their": "there", "there": "their", "its": "it's", "it's": "its", "your": "you're",
                  "you're": "your", "than": "then", "too": "to", "hear": "here", "here": "hear",
                  "whose": "who's", "they're": "their", "know": "no", "buy": "by", "weather": "whether"},
}
_IRREGULAR_PAST = {"went": "go", "saw": "see", "ate": "eat", "bought": "buy", "took": "take", "made": "make",
                   "came": "come", "wrote": "write", "found": "find", "gave": "give", "told": "tell",
                   "felt": "feel", "left": "leave", "ran": "run", "began": "begin", "drank": "drink",
                   "sang": "sing", "swam": "swim", "thought": "think", "brought": "bring", "caught": "catch",
                   "taught": "teach", "kept": "keep", "slept": "sleep", "met": "meet", "sat": "sit", "won": "win"}
_MISSPELL = {"received": "recieved", "believe": "beleive", "definitely": "definately", "separate": "seperate",
             "beautiful": "beautifull", "tomorrow": "tommorow", "friend": "freind", "friends": "freinds",
             "library": "libary", "government": "goverment", "environment": "enviroment",
             "restaurant": "resturant", "weird": "wierd", "finally": "finaly", "beginning": "begining",
             "necessary": "neccessary", "because": "becuase", "different": "diffrent", "really": "realy",
             "until": "untill", "which": "wich", "island": "iland", "business": "buisness",
             "across": "accross", "quiet": "quite", "piece": "peice", "believed": "beleived"}
_NUMBER_WORDS = r"two|three|four|five|six|seven|eight|nine|ten|many|several|few|some|both"
_FREQ_ADVERBS = r"always|often|never|usually|sometimes|rarely|seldom"
_DETERMINERS = {"the", "a", "an", "this", "that", "these", "those", "my", "your", "our", "their", "his", "her",
                "its", "some", "many", "all", "both", "every", "each", "several", "few", "two", "three"}
_NOT_VERBS_S = {"is", "has", "was", "does", "always", "this", "its", "his", "us", "yes", "as", "thus",
                "also", "less", "across", "unless", "perhaps", "sometimes"}


def _swap_word(text: str, table: dict[str, str], rng: random.Random) -> str | None:
    spots = [m for m in re.finditer(r"[A-Za-z']+", text) if m.group(0).lower() in table]
    if not spots:
        return None
    m = rng.choice(spots)
    w = m.group(0)
    new = table[w.lower()]
    if w[0].isupper():
        new = new[0].upper() + new[1:]
    return text[: m.start()] + new + text[m.end():]


def _strip_s(text: str, spots: list[re.Match], rng: random.Random, group: int) -> str | None:
    """Drop the -s/-es/-ies ending of one matched word: walks -> walk, boxes -> box, cries -> cry."""
    if not spots:
        return None
    m = rng.choice(spots)
    w = m.group(group)
    base = w[:-3] + "y" if w.endswith("ies") else w[:-2] if re.search(r"(sh|ch|x)es$", w) or w == "goes" else w[:-1]
    return text[: m.start(group)] + base + text[m.end(group):]


def _drop_third_person_s(text: str, rng: random.Random) -> str | None:
    spots = [m for m in re.finditer(r"\b([Hh]e|[Ss]he|[Ii]t|[A-Z][a-z]+)\s+([a-z]{3,}s)\b", text)
             if m.group(2) not in _NOT_VERBS_S and not m.group(2).endswith("ss")
             and m.group(1).lower() not in _DETERMINERS]
    return _strip_s(text, spots, rng, 2)


def _past_to_base(text: str, rng: random.Random) -> str | None:
    """Past -> base form: irregular verbs from a table, regular ones only where the stem is unambiguous."""
    def base(w: str) -> str | None:
        if w in _IRREGULAR_PAST:
            return _IRREGULAR_PAST[w]
        if not w.endswith("ed") or len(w) < 6:
            return None
        if w.endswith("ied"):
            return w[:-3] + "y"
        stem = w[:-2]
        if re.search(r"([^aeiou][^aeiou]|[aeo][yw])$", stem) and stem[-1] != stem[-2]:
            return stem  # walked, played, jumped; "stopped" and "liked" are ambiguous, skipped
        return None

    spots = [(m, b) for m in re.finditer(r"\b[a-z]{2,}\b", text) if (b := base(m.group(0)))]
    if not spots:
        return None
    m, b = rng.choice(spots)
    return text[: m.start()] + b + text[m.end():]


def _article(text: str, rng: random.Random) -> str | None:
    spots = [m for m in re.finditer(r"\b([Aa]n?|[Tt]he)\s+([A-Za-z]+)", text)]
    if not spots:
        return None
    m = rng.choice(spots)
    art, word = m.group(1), m.group(2)
    if art.lower() == "the":
        if m.start() == 0:
            return None
        return text[: m.start()] + text[m.start(2):]
    vowel = word[0].lower() in "aeiou"
    new = ("a" if art.lower() == "an" else "an") if vowel or art.lower() == "an" else "an"
    if art[0].isupper():
        new = new.capitalize()
    return text[: m.start(1)] + new + text[m.end(1):]


def _plural(text: str, rng: random.Random) -> str | None:
    spots = [m for m in re.finditer(rf"\b(?:{_NUMBER_WORDS})\s+(?:[a-z]+\s+)?([a-z]{{3,}}s)\b", text, re.I)
             if not m.group(1).endswith("ss")]
    return _strip_s(text, spots, rng, 1)


def _spelling(text: str, rng: random.Random) -> str | None:
    spots = [m for m in re.finditer(r"[A-Za-z]+", text) if m.group(0).lower() in _MISSPELL]
    if spots:
        m = rng.choice(spots)
        new = _MISSPELL[m.group(0).lower()]
        if m.group(0)[0].isupper():
            new = new.capitalize()
        return text[: m.start()] + new + text[m.end():]
    long_words = [m for m in re.finditer(r"\b[a-z]{6,}\b", text)]
    if not long_words:
        return None
    m = rng.choice(long_words)
    w = m.group(0)
    i = rng.randrange(1, len(w) - 2)
    if w[i] == w[i + 1]:
        return None
    typo = w[:i] + w[i + 1] + w[i] + w[i + 2:]
    return text[: m.start()] + typo + text[m.end():]


def _capitalisation(text: str, rng: random.Random) -> str | None:
    options = []
    if text[:1].isupper() and not text.startswith("I "):
        options.append(text[0].lower() + text[1:])
    proper = [m for m in re.finditer(r"(?<=\s)[A-Z][a-z]+\b", text)]
    if proper:
        m = rng.choice(proper)
        options.append(text[: m.start()] + m.group(0).lower() + text[m.end():])
    if " I " in text:
        options.append(text.replace(" I ", " i ", 1))
    return rng.choice(options) if options else None


def _word_order(text: str, rng: random.Random) -> str | None:
    spots = list(re.finditer(rf"\b({_FREQ_ADVERBS})\s+([a-z]+)\b", text))
    if not spots:
        return None
    m = rng.choice(spots)
    return text[: m.start()] + f"{m.group(2)} {m.group(1)}" + text[m.end():]


INJECTORS = {
    "agreement": lambda t, r: _drop_third_person_s(t, r) or _swap_word(t, _SWAPS["agreement"], r),
    "tense": _past_to_base,
    "article": _article,
    "preposition": lambda t, r: _swap_word(t, _SWAPS["preposition"], r),
    "plural": _plural,
    "spelling": _spelling,
    "homophone": lambda t, r: _swap_word(t, _SWAPS["homophone"], r),
    "capitalisation": _capitalisation,
    "word_order": _word_order,
}


@register_task("grammar")
class Grammar(GenerationTask):
    """task.yaml sets the kind (rewrite), the metrics and the data; this adds the error injector."""

    def parse_inputs(self, text: str) -> list[str]:
        """Single plain sentences of 5-20 words from a Self-Instruct reply; chatter, labels and lists dropped.

        Salvages the two commonest near-misses of a small teacher: a list item ending in a comma, and
        a sentence followed by " - an explanation".
        """
        out = []
        for line in text.splitlines():
            line = _LIST_MARK.sub("", line).strip().strip('"').strip()
            if not line or CHATTER.match(line) or line.endswith(":"):
                continue
            head = line.split(" - ")[0].strip()
            if head != line or head.endswith(","):
                line = head.rstrip(",;") + ("" if head[-1:] in ".!?" else ".")
            for sent in _SENTENCE_SPLIT.split(line):
                sent = sent.strip()
                n = len(sent.split())
                if (5 <= n <= 20 and sent[-1] in ".!?" and sent[0].isupper() and not _NOT_PLAIN.search(sent)
                        and not CHATTER.match(sent)):
                    out.append(sent)
        return out

    def parse_answer(self, text: str) -> str:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        first = lines[0] if lines else ""
        first = _LABEL.sub("", first).strip()
        if len(first) > 1 and first[0] == first[-1] and first[0] in "\"'`":
            first = first[1:-1].strip()
        return first

    def corrupt(self, text: str, rng: random.Random) -> tuple[str, str] | None:
        kinds = list(INJECTORS)
        rng.shuffle(kinds)
        for kind in kinds:
            new = INJECTORS[kind](text, rng)
            if new and new != text:
                return new, kind
        return None

    def format_problem(self, row: Row) -> str | None:
        out, src = row.output, row.input
        if not out.strip():
            return "empty output"
        if "\n" in out:
            return "output spans several lines"
        if CHATTER.match(out):
            return "output starts with chatter"
        if len(re.findall(r"[.!?](?:\s|$)", out)) > 1 and len(re.findall(r"[.!?](?:\s|$)", src)) <= 1:
            return "output has more than one sentence"
        if len(out.split()) > 2 * len(src.split()) + 3:
            return "output much longer than input"
        return None
