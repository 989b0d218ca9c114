"""The multi-task config: several tasks, each with its own single-task config, distilled into students of
one base three ways: a student per task (separate), the per-task LoRA adapters merged into one (merged),
one student trained on every task's kept rows (joint)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.config.load import ConfigError, _yaml_line, find_config, read_yaml, validated
from distill.config.teacher import Strict

# PEFT's add_weighted_adapter combination types. cat is exact task arithmetic (the adapters side by side,
# rank r1 + r2); linear, ties, dare_* and magnitude_prune act on the A and B factors separately; the *_svd
# ones act on each adapter's whole delta weight, then factor the result back to svd_rank.
MergeMethod = Literal["cat", "svd", "linear", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd",
                      "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd"]
DENSITY = ("ties", "dare", "magnitude_prune")  # the methods that prune (density applies)
SAME_RANK = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")  # PEFT adds the factors: ranks must match
Way = Literal["separate", "merged", "joint"]


class TaskEntry(Strict):
    config: str = Field(..., description="The task's own config (relative to this file, or a shipped config's name such as default or sentiment): its task, seeds, generation, filters, training and eval, as for `distill run`.")
    set: list[str] = Field(default_factory=list, description="Overrides of that config (key.path=value), as --set takes them.")


class Merge(Strict):
    method: MergeMethod = Field("cat", description="PEFT's combination type (add_weighted_adapter): cat = task arithmetic, exact (W + sum of weight x each adapter's delta); ties / dare_linear / dare_ties / magnitude_prune prune and combine the adapters' A and B factors; their *_svd forms prune the whole deltas, then factor the sum back to svd_rank; linear sums the factors (cross terms included: an approximation).")
    weights: list[float] | None = Field(None, description="One weight per task, in the order of `tasks`; null = 1.0 each (each adapter's delta added whole).")
    density: float | None = Field(None, gt=0, le=1, description="Share of each adapter's values kept by the pruning methods (ties, dare_*, magnitude_prune); null = 0.5 for them. Ignored by cat, svd and linear.")
    majority_sign: Literal["total", "frequency"] = Field("total", description="TIES's sign election: by the summed magnitude (total) or by the count of signs (frequency).")
    svd_rank: int | None = Field(None, ge=1, description="Rank the *_svd methods factor the merged delta to; null = the largest adapter rank (PEFT's default).")

    @property
    def name(self) -> str:
        """The merged student's name: merged-<method>, with its density when it prunes."""
        return f"merged-{self.method}" + (f"-d{self.density:g}" if self.density is not None else "")

    def density_used(self) -> float | None:
        return (self.density if self.density is not None else 0.5) if self.method.startswith(DENSITY) else None


class Joint(Strict):
    balance: Literal["none", "upsample"] = Field("upsample", description="How the joint student's rows are mixed: none = every task's kept rows once; upsample = a smaller task's rows repeated (seeded draw) until each task has as many as the largest, so no task is outvoted.")
    epochs: float | None = Field(None, gt=0, description="Passes over the mixed rows; null = the first task's training.epochs. Every other training setting is the first task's, max_length the largest of the tasks'.")


class MultiTask(Strict):
    tasks: list[TaskEntry] = Field(..., min_length=2, description="The tasks, each a single-task config; every one must train a LoRA student of the same base.")
    ways: list[Way] = Field(["separate", "merged", "joint"], description="Which students the run makes and compares: separate (one per task, today's path), merged (the separate students' LoRA adapters combined by each of `merges`: needs their training), joint (one trained on the union of the kept rows).")
    merges: list[Merge] = Field(default_factory=lambda: [Merge()], description="The merged students: one per entry, each a PEFT combination of the per-task adapters.")
    joint: Joint = Field(default_factory=Joint, description="The jointly trained student.")
    quality_target: float | None = Field(None, gt=0, le=2, description="Each task's bar as a share of its teacher's primary metric; null = each task's own quality_target, else 1.0 (match the teacher). A way meets the bar when it does on every task.")

    @field_validator("ways")
    @classmethod
    def _some_way(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError("list each way once, at least one")
        return v

    @model_validator(mode="after")
    def _merge_names(self):
        names = [m.name for m in self.merges]
        if twice := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"two merges make '{twice}': give each method (and density) once")
        return self


def load_multitask(path: str | Path, overrides: list[str] | None = None) -> tuple[MultiTask, list[Path]]:
    """The multi-task config and each task's config file (relative paths against the multi-task file's
    folder, bare names as shipped configs). Every problem is one ConfigError naming the file, line and field."""
    path = Path(path)
    text, data = read_yaml(path)
    mt, given = validated(MultiTask, data, overrides, str(path), text)

    def error(keys: list[str], msg: str) -> ConfigError:
        ov = next((o for k, o in given.items() if tuple(keys[:len(k)]) == k), None)
        where = f"--set {ov}" if ov else f"{path}{_yaml_line(text, keys)}"
        return ConfigError(f"{where}: field '{'.'.join(keys)}': {msg}")

    for i, m in enumerate(mt.merges):
        if m.weights is not None and len(m.weights) != len(mt.tasks):
            raise error(["merges", str(i), "weights"], f"{len(m.weights)} weights for {len(mt.tasks)} tasks: give one per task")
    files = []
    for i, t in enumerate(mt.tasks):
        own = path.parent / t.config
        f = own if own.exists() else find_config(t.config)
        if not f.exists():
            raise error(["tasks", str(i), "config"], f"{t.config}: no such config file")
        files.append(f.resolve())
    return mt, files
