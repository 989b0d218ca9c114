"""What each stage records, as typed models: the stage writes one, the report
reads it back by attribute (RunDir names the files). Unknown fields are kept (a run directory outlives the code that wrote it)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distill.io import DataError, read_json, write_json


class Stats(BaseModel):
    model_config = ConfigDict(extra="allow")

    @classmethod
    def read(cls, path: Path):
        """The stats a stage wrote, or an empty record when it has not run."""
        if not Path(path).exists():
            return cls()
        try:
            return cls.model_validate(read_json(path))
        except ValidationError as e:
            raise DataError(f"{path}: corrupt ({e.errors()[0]['loc']}: {e.errors()[0]['msg']}); delete it and re-run "
                            "the stage that wrote it") from None

    def write(self, path: Path) -> None:
        write_json(path, self.model_dump(mode="json"))


class Usage(Stats):
    """Teacher usage: of one call to the teacher, of one generate invocation, or summed over a run.
    Backends count into it as they send; `merge` adds several up."""

    requests_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed: int = 0
    skipped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_seconds: float = 0.0  # summed latency of the requests sent (for budget estimates)
    errors: dict[str, int] = Field(default_factory=dict)
    fatal: str = ""  # why sending stopped for good ("" = it did not)
    wall_seconds: float = 0.0
    cost_usd: float = 0.0
    cost_rule: str | None = None
    finished_at: str | None = None

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    @classmethod
    def merge(cls, parts: "list[Usage]") -> "Usage":
        """The sum of several usages (errors added up; the first fatal reason; no cost rule or time stamp)."""
        total = cls()
        for p in parts:
            for k in ADDITIVE:
                setattr(total, k, getattr(total, k) + getattr(p, k))
            total.errors = dict(Counter(total.errors) + Counter(p.errors))
            total.fatal = total.fatal or p.fatal
        return total


ADDITIVE = ("requests_sent", "cache_hits", "retries", "failed", "skipped", "prompt_tokens", "completion_tokens",
            "request_seconds", "wall_seconds", "cost_usd")


class GenerateCounts(Stats):
    input_requests: int = 0
    failed_input_requests: int = 0
    parsed_inputs: int = 0
    rows: int = 0
    seed_rows: int = 0
    teacher_rows_ok: int = 0
    teacher_rows_failed: int = 0
    teacher_rows_unasked: int = 0  # never sent: the filters on inputs drop them (the filter stage says which and why)
    few_shot_ids: list[str] = Field(default_factory=list)
    shards: int = 1
    shard_workers: list[str] = Field(default_factory=list)
    cut_short: str | None = None


class GenerateStats(Stats):
    teacher: str | None = None
    counts: GenerateCounts = Field(default_factory=GenerateCounts)
    last: Usage = Field(default_factory=Usage)
    totals: Usage = Field(default_factory=Usage)
    invocations: list[Usage] = Field(default_factory=list)


class FilterStats(Stats):
    generated: int = 0
    failed_generation: int = 0
    kept: int = 0
    kept_by_source: dict[str, int] = Field(default_factory=dict)
    kept_with_edit: int = 0
    dropped: int = 0
    # per filter, in order: {stage, params, in, kept, dropped, seconds, top_reasons}
    stages: list[dict[str, Any]] = Field(default_factory=list)
    wall_seconds: float | None = None
    teacher: dict[str, Any] | None = None  # the judge's usage and cost, when a filter asked the teacher


class TrainStats(Stats):
    """One student's training (train_stats.json), or the stage's (stats/train.json: the first
    student's figures, plus every ladder student under `students`)."""

    base: str | None = None
    output_dir: str | None = None
    name: str | None = None
    keep_layers: int | None = None
    kept_layers: list[int] | None = None  # which ones, when the run chose them (prune: block, or a cut of init_from)
    method: str | None = None  # training.method: sft, logit_kd, on_policy
    kd_teacher: str | None = None  # whose distribution a logit-level method learned
    rows: int | None = None
    steps: int | None = None
    epochs: float | None = None
    resumed_from: str | None = None
    plan: dict[str, Any] = Field(default_factory=dict)
    processes: int | None = None
    lora: bool | None = None
    trainable_parameters: int | None = None
    parameters: int | None = None
    first_loss: float | None = None
    last_loss: float | None = None
    losses: list[float] = Field(default_factory=list)
    train_runtime_s: float | None = None
    wall_seconds: float | None = None
    rank: int | None = None  # set on every process but the main one of a multi-process run
    students: dict[str, "TrainStats"] | None = None


class RoundStats(Stats):
    """A later generation round (stats/round<n>.json): how the student before it did on its probe rows and
    the eval set, and what the round asked and kept."""

    round: int | None = None
    probe_rows: int | None = None  # kept rows of the round before, held out of the probing student's training
    missed: int | None = None  # of those, the ones it got wrong: the round's Self-Instruct examples
    missed_ids: list[str] = Field(default_factory=list)
    by_checker: int | None = None  # misses the task's checker found (the rest: disagreements with the teacher)
    trained_rows: int | None = None  # what the probing student was trained on
    student_quality: dict[str, Any] | None = None  # the probing student on the headline eval set: {metric, value, low, high}
    input_requests: int | None = None  # this round's Self-Instruct requests
    rows_added: int | None = None  # rows of this round in generated.jsonl
    usage: Usage | None = None
    wall_seconds: float | None = None


class MergeStats(Stats):
    """A merged student of a multi-task run (stats/<name>.json): the PEFT combination that made it."""

    name: str | None = None
    method: str | None = None
    weights: dict[str, float] = Field(default_factory=dict)  # task -> weight
    density: float | None = None
    majority_sign: str | None = None
    rank: int | None = None  # of the combined adapter (cat: the ranks summed)
    adapters: dict[str, str] = Field(default_factory=dict)  # task -> adapter folder
    output_dir: str | None = None
    wall_seconds: float | None = None


class ModelResult(Stats):
    """One model on the eval set, through the one harness."""

    name: str
    role: str
    engine: str
    parameters: int | None = None
    prompt: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    n: int = 0
    failed: int = 0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    latency_rule: str = ""  # what the latency figures time (one request alone, or the quality pass's requests in flight)
    throughput_rps: float | None = None
    wall_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens the engine read from its prompt cache, where it says so
    cost_per_1k_usd: float = 0.0  # the serving measurement's median where it ran, else the quality pass's
    cost_rule: str = ""
    quality_pass_cost_per_1k_usd: float | None = None
    cost_note: str | None = None  # e.g. "engines differ", next to the figure in the report
    serving: dict | None = None  # the serving measurement: per-round seconds and cost, median, spread, engine
    interval: dict | None = None  # the primary metric: {"value", "low", "high"} (95%, paired bootstrap)
    intervals: dict[str, dict] | None = None  # every metric with per-row statistics: name -> {"value", "low", "high"}
    vs_teacher: dict | None = None  # {"difference", "low", "high", "verdict"}: this model minus the teacher
    vs_student: dict[str, dict] | None = None  # a prompt-only step minus each distilled student (by key)
    vs_separate: dict | None = None  # a multi-task run's merged or joint student minus the task's own student
    breakdown: dict | None = None  # per-class detail, e.g. {"confusion": {reference: {prediction: count}}}
    cascade: dict | None = None  # the cascade row only: threshold, routed share, target, whether it meets it


class EvalSummary(Stats):
    """The evaluation summary of one eval set (RunDir.eval_summary)."""

    name: str = "main"
    eval_path: str = ""
    tokenized: bool = False
    n: int = 0
    primary_metric: str = ""
    baseline: dict[str, float] = Field(default_factory=dict)  # the trivial answer's metrics (Task.baseline)
    baseline_name: str = "copy the input"
    judge: dict | None = None  # eval.judge on the headline set: the judge, per model win/tie/loss rates, usage, cost

    @model_validator(mode="before")
    @classmethod
    def _earlier_name(cls, data):
        """A summary written before the baseline fit the task kind called it copy_baseline (the copied input)."""
        if isinstance(data, dict) and "copy_baseline" in data:
            data = {**data, "baseline": data.get("baseline") or data["copy_baseline"]}
            data.pop("copy_baseline")
        return data
    models: dict[str, ModelResult] = Field(default_factory=dict)
    wall_seconds: float | None = None
    cost_usd: float | None = None  # what evaluating cost: every quality pass plus the serving measurement
