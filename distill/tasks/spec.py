"""`task.yaml`: what a task folder says about itself. Every field has help text; unknown keys are refused
with one line naming the file, line and field (the same rules as the run config)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill.config import ConfigError
from distill.io import yaml_load

KINDS = ("classification", "extraction", "generation", "rewrite")


class TaskError(ConfigError):
    """A task folder problem, phrased as one line naming the file (and line and field where known)."""


class Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: str = Field("input", description="Column of the seed and eval files holding a task input.")
    output: str | list[str] = Field("output", description="Column holding the expected output (a label, a JSON object or text); a list of columns = several references per row.")
    id: str | None = Field("id", description="Column holding a row id; rows without one get a stable id from their content.")


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="The task's name in reports; default: the folder's name.")
    kind: Literal["classification", "extraction", "generation", "rewrite"] = Field("generation", description="classification: one label per input; extraction: a JSON object per input, checked against `schema`; generation / rewrite: free text (rewrite also scores edits with GLEU).")
    description: str = Field("", description="One line on what the task does (shown in `distill tasks` and the dataset card).")
    labels: list[str] = Field(default_factory=list, description="classification: the label set; replies are parsed to one of these.")
    json_schema: dict[str, Any] | None = Field(None, alias="schema", description="extraction: the JSON schema each answer must satisfy (also sent as structured output where the server supports it).")
    fields: Fields = Field(default_factory=Fields, description="Column names in the seed and eval files, e.g. {input: source, output: target, id: null}.")
    seeds: str | None = Field("seeds.jsonl", description="Seed set (JSONL, CSV or parquet), relative to the task folder; a config's seeds_path overrides it.")
    eval: str | None = Field("eval.jsonl", description="Held-out eval set, relative to the task folder; a config's eval.path overrides it.")
    metrics: list[str] | None = Field(None, description="Metrics to report (default per kind: classification accuracy, macro_f1; extraction field_f1, field_accuracy, object_match, schema_valid; generation exact_match, chrf, rouge_l; rewrite gleu, sari, exact_match, chrf, google_bleu). gleu is the GEC GLEU of published tables (Napoles et al.); google_bleu is NLTK's Google-BLEU.")
    primary_metric: str | None = Field(None, description="The metric quality bars and verdicts use (default: accuracy, field_f1, chrf, gleu by kind; gleu = the GEC GLEU).")
    python: str | None = Field(None, description="A Task subclass for what YAML cannot say: `task.py:MyTask` (a file in the folder) or `package.module:MyTask`. Default: task.py when the folder has one.")
    structured: bool = Field(False, description="classification: constrain the teacher's generation answers to the label set through structured output ({\"label\": one of labels}) where the server supports it; off = the reply is parsed for a label.")
    answer_max_words: int | None = Field(None, ge=1, description="generation: drop generated rows whose output is longer than this (the task_format filter).")

    @model_validator(mode="after")
    def _kind_needs(self):
        if self.kind == "classification" and len(self.labels) < 2:
            raise ValueError("classification needs at least two labels")
        if self.kind == "extraction" and not self.json_schema:
            raise ValueError("extraction needs a JSON schema (key 'schema')")
        return self


def read_spec(path: Path) -> TaskSpec:
    """Parse task.yaml; errors name the file, line and field."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml_load(text) or {}
    except FileNotFoundError:
        raise TaskError(f"{path}: task file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise TaskError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: top level must be a mapping")
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = [str(x) for x in e["loc"]]
        line = _line_of_key(text, loc[0]) if loc else ""
        msg = e["msg"].replace("Extra inputs are not permitted", "unknown key").removeprefix("Value error, ")
        field = ".".join(loc) or "task"
        raise TaskError(f"{path}{line}: field '{field}': {msg}") from None


def _line_of_key(text: str, key: str) -> str:
    for n, line in enumerate(text.splitlines(), 1):
        if line.split(":", 1)[0].strip() == key:
            return f":{n}"
    return ""
