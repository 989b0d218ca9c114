"""The task kinds a folder can declare without Python (`kind:` in task.yaml): each parses replies,
checks rows and picks its default metrics. A Python task subclasses one of them."""
from __future__ import annotations

import json
import re
from collections import Counter
from functools import cached_property

import jsonschema

from distill.records import Row
from distill.tasks.base import Task
from distill.tasks.metrics import confusion

_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s*")
_PREAMBLE = re.compile(r"^(here (are|is)\b|sure\b|certainly\b|of course\b|okay\b|ok\b|note\b)", re.I)


def list_items(text: str, min_words: int = 2) -> list[str]:
    """New inputs from a Self-Instruct reply: one per line or list item; preambles and headings dropped."""
    out = []
    for line in text.splitlines():
        line = _LIST_MARK.sub("", line).strip().strip('"').strip()
        if not line or line.endswith(":") or _PREAMBLE.match(line) or len(line.split()) < min_words:
            continue
        out.append(line)
    return out


class GenerationTask(Task):
    """Free text in, free text out (summaries, replies, rewrites)."""

    name = "generation"
    primary_metric = "chrf"

    def parse_inputs(self, text: str) -> list[str]:
        return list_items(text)

    def parse_answer(self, text: str) -> str:
        return text.strip()

    def metric_names(self) -> list[str]:
        if self.spec.metrics:
            return self.spec.metrics
        if self.spec.kind == "rewrite":  # the field's own yardsticks first: GEC GLEU and SARI
            return ["gleu", "sari", "exact_match", "chrf", "google_bleu"]
        return ["exact_match", "chrf", "rouge_l"]

    def format_problem(self, row: Row) -> str | None:
        if not row.output.strip():
            return "empty output"
        if self.spec.answer_max_words and len(row.output.split()) > self.spec.answer_max_words:
            return f"output longer than {self.spec.answer_max_words} words"
        return None

    def check(self, row: Row) -> str | None:
        ref = row.reference
        if ref is None:
            return None
        return None if row.output.strip() == ref.strip() else "output differs from the known answer"


class ClassificationTask(Task):
    """One label per input, from task.yaml's `labels`."""

    name = "classification"
    primary_metric = "accuracy"

    @property
    def labels(self) -> list[str]:
        return self.spec.labels

    @property
    def answer_schema(self) -> dict | None:
        if not self.spec.structured:
            return None
        return {"type": "object", "properties": {"label": {"type": "string", "enum": self.labels}},
                "required": ["label"], "additionalProperties": False}

    def parse_inputs(self, text: str) -> list[str]:
        return list_items(text)

    def parse_answer(self, text: str) -> str:
        """The earliest label named in the reply, whole words, any case ("Category: Billing." -> "billing");
        a reply naming none is kept as written (and scored wrong)."""
        best = None
        for label in sorted(self.labels, key=len, reverse=True):
            m = re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", text, re.I)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), label)
        return best[1] if best else text.strip()

    def format_problem(self, row: Row) -> str | None:
        return None if row.output in self.labels else "output is not a label"

    def baseline(self, sources: list[str], seeds: list[dict]) -> tuple[str, list[str]]:
        """The majority label of the seeds (the labels' order breaks a tie), for every row."""
        counts = Counter(s["output"] for s in seeds)
        top = max(self.labels, key=lambda lab: (counts[lab], -self.labels.index(lab)))
        return f"always '{top}' (the seeds' majority label)", [top] * len(sources)

    def check(self, row: Row) -> str | None:
        ref = row.reference
        if ref is None:
            return "no known label to check against"
        if row.output not in self.labels:
            return "output is not a label"
        return None if row.output == ref else f"wrong label ({row.output}, expected {ref})"

    def metric_names(self) -> list[str]:
        return self.spec.metrics or ["accuracy", "macro_f1", "answered_with_a_label"]

    def own_metrics(self) -> dict:
        def answered(preds, refs, srcs):
            return round(100 * sum(p in self.labels for p in preds) / max(len(preds), 1), 2)

        return {"answered_with_a_label": answered}

    def breakdown(self, predictions: list[str], references: list[str]) -> dict | None:
        return {"confusion": confusion(predictions, references, self.labels)}


class ExtractionTask(Task):
    """A JSON object per input, checked against task.yaml's `schema` (also sent as structured output)."""

    name = "extraction"
    primary_metric = "field_f1"

    @property
    def answer_schema(self) -> dict:
        return self.spec.json_schema

    def parse_inputs(self, text: str) -> list[str]:
        return list_items(text, min_words=3)

    def parse_answer(self, text: str) -> str:
        """The reply's JSON object, written canonically (sorted keys); a reply without one is kept as written."""
        obj = _first_object(text)
        return json.dumps(obj, sort_keys=True, ensure_ascii=False) if obj is not None else text.strip()

    @cached_property
    def _validator(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(self.answer_schema)  # checked once per row: build it once

    def schema_problem(self, text: str) -> str | None:
        obj = _first_object(text)
        if obj is None:
            return "output is not a JSON object"
        err = jsonschema.exceptions.best_match(self._validator.iter_errors(obj))
        if err is None:
            return None
        where = "/".join(str(p) for p in err.absolute_path)
        return f"output breaks the schema: {where + ': ' if where else ''}{err.message[:120]}"

    def format_problem(self, row: Row) -> str | None:
        return self.schema_problem(row.output)

    def baseline(self, sources: list[str], seeds: list[dict]) -> tuple[str, list[str]]:
        return "always the empty object {}", ["{}"] * len(sources)

    def metric_names(self) -> list[str]:
        return self.spec.metrics or ["field_f1", "field_accuracy", "object_match", "schema_valid"]

    def own_metrics(self) -> dict:
        def schema_valid(preds, refs, srcs):
            return round(100 * sum(self.schema_problem(p) is None for p in preds) / max(len(preds), 1), 2)

        return {"schema_valid": schema_valid}


def _first_object(text: str) -> dict | None:
    """The first JSON object in a reply, also when wrapped in prose or a code fence."""
    start = text.find("{")
    while start != -1:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        return obj if isinstance(obj, dict) else None
    return None


KINDS: dict[str, type[Task]] = {"classification": ClassificationTask, "extraction": ExtractionTask,
                                "generation": GenerationTask, "rewrite": GenerationTask}
