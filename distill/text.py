"""Text helpers shared by tasks and filters."""
from __future__ import annotations

import difflib
import re

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")


def tokens(s: str) -> list[str]:
    """Words and punctuation marks (GLEU and edit ratios are computed over these)."""
    return _TOKEN.findall(s)


def normalise(s: str) -> str:
    """Whitespace folded: the form two answers are compared in."""
    return " ".join(s.split())


def dedup_key(s: str) -> str:
    """Case, punctuation and spacing removed: the form exact duplicates are found in."""
    return " ".join(_WORD.findall(s.lower()))


def tokenize(s: str) -> str:
    """Moses-tokenised English (a space before punctuation, split clitics), as tokenised benchmarks are."""
    from sacremoses import MosesTokenizer

    return MosesTokenizer(lang="en").tokenize(s, return_str=True, escape=False)


def detokenize(s: str) -> str:
    """Ordinary text from Moses-tokenised English: what a model is shown of a tokenised benchmark."""
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang="en").detokenize(s.split())


def edit_ratio(a: str, b: str) -> float:
    """Share of tokens changed between a and b (0 = identical, 1 = nothing shared)."""
    return 1.0 - difflib.SequenceMatcher(None, tokens(a), tokens(b), autojunk=False).ratio()


_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


# an HTTP Authorization value a server may echo back (httpx sends `Basic base64(user:pass)` for a URL's user:pass@)
_AUTH_VALUE = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9+/=._~-]{6,}")


def has_credentials(text: str) -> bool:
    """Whether text holds a URL with `user:pass@` in it."""
    return bool(_URL_CREDENTIALS.search(text))


def scrub(text: str, *secrets: str | None) -> str:
    """Text safe to store or print: `user:pass@` in URLs, Authorization values (Basic or Bearer) and
    every given secret replaced by ***."""
    text = _AUTH_VALUE.sub(r"\1 ***", _URL_CREDENTIALS.sub("***@", text))
    for s in secrets:
        if s and len(s) >= 4:  # a 1-3 character "key" would blank out ordinary words
            text = text.replace(s, "***")
    return text


def raised_at(error: BaseException, filename: str, default_line: int | None = None) -> str:
    """`file:line` of the deepest frame of `filename` in the error's traceback (a syntax error's own
    line counts), else `file:default_line`, else the file alone: where user code went wrong."""
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    if isinstance(error, SyntaxError) and error.lineno and error.filename == filename:
        lines.append(error.lineno)
    line = lines[-1] if lines else default_line
    return f"{filename}:{line}" if line else filename

