"""A teacher request and the record stored for its reply (the same schema from every backend)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


class TeacherError(RuntimeError):
    pass


class EmptyReply(TeacherError):
    """A reply with no text (content null or blank): a failure, never an answer to keep or reuse."""


class TeacherFatal(TeacherError):
    """The teacher cannot help this run (a rejected key, an unknown model, no usable reply): a retry
    would only resend the same requests."""


@dataclass(frozen=True)
class Request:
    """One chat completion request; its key is the hash of everything that determines the reply."""

    model: str
    messages: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def make(cls, model: str, messages: list[dict], **params) -> "Request":
        return cls(model, tuple((m["role"], m["content"]) for m in messages), tuple(sorted(params.items())))

    @property
    def key(self) -> str:
        blob = json.dumps([self.model, self.messages, self.params], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def message_dicts(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]

    @property
    def max_tokens(self) -> int:
        return dict(self.params).get("max_tokens", 256)


def estimate_tokens(messages: list[dict]) -> int:
    """Rough prompt size without a tokenizer (about 4 characters a token in English), for budgets."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


def reply_record(req: Request, text: str | None, finish_reason: str | None, prompt_tokens: int | None,
                 completion_tokens: int | None, latency_s: float | None, cached_tokens: int | None = None,
                 **extra) -> dict:
    """The stored record of one finished request: the same schema from every backend (the usage's
    cached_tokens only when the server said how many prompt tokens it read from its prompt cache). A
    reply with no text is a failed record: the store never hands it back as an answer."""
    return {
        "key": req.key,
        "model": req.model,
        "params": dict(req.params),
        "messages": req.message_dicts(),
        "text": text or "",
        "finish_reason": finish_reason,
        "usage": {"prompt_tokens": prompt_tokens or 0, "completion_tokens": completion_tokens or 0,
                  **({"cached_tokens": cached_tokens} if cached_tokens else {})},
        "latency_s": round(latency_s, 4) if latency_s is not None else None,
        "error": None if (text or "").strip() else "EmptyReply: the reply has no text",
        **extra,
    }


def top_logprobs(logprobs) -> dict | None:
    """A reply's `logprobs.content` (an SDK object or the JSON of a batch line) as stored with it:
    the sampled tokens and, per token, its top-k [token, logprob] pairs; None without logprobs."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else getattr(logprobs, "content", None)
    if not content:
        return None

    def get(x, k):
        return x.get(k) if isinstance(x, dict) else getattr(x, k)

    return {"tokens": [get(t, "token") for t in content],
            "top": [[[get(a, "token"), round(get(a, "logprob"), 5)] for a in (get(t, "top_logprobs") or [])]
                    for t in content]}


def failed_record(req: Request, error: str, **extra) -> dict:
    return {"key": req.key, "model": req.model, "params": dict(req.params), "text": None, "error": error, **extra}
