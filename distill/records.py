"""One row shape for the whole path: generation writes it, filters judge it, task hooks check it,
training turns it into a prompt-completion pair."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]


@dataclass
class Row:
    id: str
    input: str
    output: str | None
    reference: str | None = None
    # "ok"; "failed": the teacher gave no usable answer (error says why); "unasked": never sent, as the
    # filters on inputs drop it (the filter stage records which filter and why)
    status: str = "ok"
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None  # an invalid structured reply, kept for the drop ledger

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_dict(cls, d: dict) -> "Row":
        return cls(id=d["id"], input=d["input"], output=d.get("output"), reference=d.get("reference"),
                   status=d.get("status", "ok"), error=d.get("error"), meta=d.get("meta") or {}, raw=d.get("raw"))

    def to_dict(self) -> dict:
        """Every field (generated.jsonl); the raw reply only when there is one."""
        d = {"id": self.id, "input": self.input, "output": self.output, "reference": self.reference,
             "status": self.status, "error": self.error, "meta": self.meta}
        if self.raw is not None:
            d["raw"] = self.raw
        return d

    def to_kept_dict(self) -> dict:
        """A row that passed every filter (train.jsonl): status and error say nothing there."""
        return {"id": self.id, "input": self.input, "output": self.output, "reference": self.reference,
                "meta": self.meta}

    @classmethod
    def from_seed(cls, s: dict) -> "Row":
        return cls(id=s["id"], input=s["input"], output=s["output"], reference=s["output"],
                   meta={"source": "seed", "error_type": s.get("error_type")})


def prompt_completion(prompt: list[Message], output: str) -> dict:
    """TRL's conversational prompt-completion record: the loss falls on the completion only."""
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": output}]}
