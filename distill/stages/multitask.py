"""A multi-task run's own stages: every task checked before anything is spent, the merged and the joint
students made from what the tasks' runs wrote, and the report that puts the tasks side by side.

Each task runs the single-task stages in its own run directory (its request store, data, separate student
and evaluation), so the teacher is asked once per task and every way is trained and judged on the same
rows: the merged students combine the separate students' adapters, the joint one trains on their kept rows.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from distill.config import Config, ConfigError, config_error
from distill.config.multitask import SAME_RANK, MultiTask
from distill.io import read_jsonl, write_json, write_text_atomic
from distill.models.load import base_student_dir
from distill.models.merge import merge_adapters
from distill.records import Row
from distill.report import multitask as mreport
from distill.rundir import MultiRunDir, RunDir
from distill.stages.context import ALL_STAGES, prepare_run
from distill.stages.train import to_prompt_completion, train_one
from distill.stats import MergeStats, TrainStats
from distill.tasks import Task

JOINT = "joint"


@dataclass
class TaskRun:
    """One task of a multi-task run: its config file, the overrides it runs with, and where it runs."""

    name: str
    file: Path
    overrides: list[str]
    cfg: Config
    task: Task
    dir: RunDir | None = None  # tasks/<task>/ of the multi-task run, set once every task is checked

    def open(self, stages: tuple[str, ...], also_students: dict[str, Path] | None = None):
        return prepare_run(self.file, self.dir, self.overrides, stages=stages, also_students=also_students)


def trains_separate(mt: MultiTask) -> bool:
    """The tasks' own students are trained when they are compared or merged."""
    return "separate" in mt.ways or "merged" in mt.ways


def plan(mt: MultiTask, files: list[Path], source: Path) -> list[TaskRun]:
    """Every task's config and inputs checked (each task's preflight), then what must hold across them: no
    task twice, one student base, LoRA adapters that can be merged, student prompts that tell the tasks
    apart. One ConfigError naming the file, line and field; nothing is written."""
    runs = []
    for i, (entry, f) in enumerate(zip(mt.tasks, files)):
        over = list(entry.set)
        if not trains_separate(mt):  # no student of its own to evaluate
            over.append("eval.models=[" + ", ".join(m for m in load_models(f, over) if m != "student") + "]")
        ctx = prepare_run(f, None, over, plan_only=True, stages=ALL_STAGES)
        earlier = next((r for r in runs if r.task.folder.resolve() == ctx.task.folder.resolve() or r.name == ctx.task.name),
                       None)
        if earlier is not None:
            raise _error(source, ["tasks", str(i), "config"],
                         f"task '{ctx.task.name}' again (from {earlier.file.name} too): list each task once")
        runs.append(TaskRun(ctx.task.name, f, over, ctx.cfg, ctx.task))
    first = runs[0]
    for r in runs[1:]:
        if _base(r.cfg) != _base(first.cfg):
            raise config_error(r.cfg, ["student", "base"], f"{_base_name(r.cfg)}, but task '{first.name}' trains "
                               f"{_base_name(first.cfg)}: one student base for every task")
    for r in runs:
        if r.cfg.students:
            raise config_error(r.cfg, ["students"], "a multi-task run trains each task's one `student`, not a ladder")
        if "merged" in mt.ways and not r.cfg.training.lora:
            raise config_error(r.cfg, ["training", "lora"], "merging combines LoRA adapters: set it true")
    if "merged" in mt.ways and any(m.method in SAME_RANK for m in mt.merges):
        for r in runs[1:]:
            for key in ("lora_r", "lora_target_modules"):
                if getattr(r.cfg.training, key) != getattr(first.cfg.training, key):
                    raise config_error(r.cfg, ["training", key], f"{getattr(r.cfg.training, key)!r}, but task "
                                       f"'{first.name}' has {getattr(first.cfg.training, key)!r}: PEFT adds the adapters' "
                                       "factors for these merge methods (cat and the *_svd ones take any)")
    if "merged" in mt.ways or JOINT in mt.ways:
        _prompts_differ(runs, source)
    return runs


def saved(mt: MultiTask, files: list[Path]) -> str:
    """The multi-task config as the run keeps it: each task's config file resolved."""
    import yaml

    data = mt.model_dump(mode="json")
    for entry, f in zip(data["tasks"], files):
        entry["config"] = str(f)
    return yaml.safe_dump(data, sort_keys=False)


def load_models(f: Path, overrides: list[str]) -> list[str]:
    from distill.config import load_config

    return list(load_config(f, overrides).eval.models)


def _base(cfg: Config) -> tuple:
    s = cfg.student
    return s.base, s.gguf_file


def _base_name(cfg: Config) -> str:
    return cfg.student.base or "the bundled SmolLM2"


def _prompts_differ(runs: list[TaskRun], source: Path) -> None:
    """One student answers every task from its plain prompt alone: two tasks whose prompts render the same
    input the same way could not be told apart."""
    seen = {}
    for i, r in enumerate(runs):
        prompt = repr(r.task.student_messages("x"))
        if prompt in seen:
            raise _error(source, ["tasks", str(i), "config"],
                         f"task '{r.name}' renders its student prompt as task '{seen[prompt]}' does (user.j2): one "
                         "merged or joint student could not tell them apart; give one a user.j2 that names its task")
        seen[prompt] = r.name


def _error(source: Path, keys: list[str], msg: str) -> ConfigError:
    from distill.config.load import _yaml_line

    return ConfigError(f"{source}{_yaml_line(source.read_text(encoding='utf-8'), keys)}: field '{'.'.join(keys)}': {msg}")


def fresh(stats: Path, inputs: list[Path]) -> bool:
    """Whether a made student is newer than everything it was made from (a re-run reuses it)."""
    return stats.exists() and all(p.exists() and p.stat().st_mtime <= stats.stat().st_mtime for p in inputs)


def merged_students(mt: MultiTask, runs: list[TaskRun], root: MultiRunDir) -> dict[str, Path]:
    """Each of `merges`: the tasks' adapters combined (PEFT) and merged into the base."""
    adapters = {r.name: r.dir.adapter() for r in runs}
    for name, a in adapters.items():
        if not (a / "adapter_config.json").exists():
            raise FileNotFoundError(f"{a}: no LoRA adapter of task '{name}' (its student was trained before adapters "
                                    "were kept: delete its student/ and run again)")
    first = runs[0].cfg
    out = {}
    for m in mt.merges:
        student, stats = root.student(m.name), root.stats(m.name)
        out[m.name] = student
        if fresh(stats, [a / "adapter_model.safetensors" for a in adapters.values()]):
            continue
        weights = m.weights or [1.0] * len(runs)
        t0 = time.perf_counter()
        rank = merge_adapters(base_student_dir(first.student), adapters, method=m.method, weights=weights,
                              density=m.density_used(), majority_sign=m.majority_sign, svd_rank=m.svd_rank,
                              seed=first.seed, adapter_out=root.adapter(m.name), student_out=student,
                              trust_remote_code=first.student.trust_remote_code)
        MergeStats(name=m.name, method=m.method, weights=dict(zip(adapters, weights)), density=m.density_used(),
                   majority_sign=m.majority_sign, rank=rank, adapters={k: str(v) for k, v in adapters.items()},
                   output_dir=str(student), wall_seconds=round(time.perf_counter() - t0, 2)).write(stats)
    return out


def joint_rows(mt: MultiTask, runs: list[TaskRun]) -> tuple[list[dict], dict[str, int]]:
    """Every task's kept rows as prompt-completion records, balanced as joint.balance says, and the count per task."""
    per = {r.name: to_prompt_completion(r.task, [Row.from_dict(x) for x in read_jsonl(r.dir.train)]) for r in runs}
    if mt.joint.balance == "upsample":
        rng, most = random.Random(f"{runs[0].cfg.seed}:joint"), max(len(v) for v in per.values())
        per = {k: v * (most // len(v)) + rng.sample(v, most % len(v)) if v else v for k, v in per.items()}
    return [x for v in per.values() for x in v], {k: len(v) for k, v in per.items()}


def joint_student(mt: MultiTask, runs: list[TaskRun], root: MultiRunDir) -> tuple[Path, dict]:
    """One student trained from the base on every task's kept rows, with the first task's training settings
    (epochs as joint.epochs says, max_length the largest of the tasks')."""
    student, stats = root.student(JOINT), root.stats(JOINT)
    first = runs[0].cfg
    records, counts = joint_rows(mt, runs)
    if not fresh(stats, [r.dir.train for r in runs]):
        stats.unlink(missing_ok=True)  # train_one reuses a student whose stats exist
        t = first.training.model_copy(update={"max_length": max(r.cfg.training.max_length for r in runs),
                                              **({"epochs": mt.joint.epochs} if mt.joint.epochs else {})})
        from distill.config import LadderStudent

        who = LadderStudent(**first.student.model_dump())
        train_one(who, t, records, root.checkpoints(JOINT), student, stats, None, base_student_dir(who), None)
    made = TrainStats.read(stats)
    return student, {"rows": len(records), "rows_by_task": counts, "balance": mt.joint.balance, "steps": made.steps,
                     "first_loss": made.first_loss, "last_loss": made.last_loss, "wall_seconds": made.wall_seconds}


def export_ggufs(students: dict[str, Path], runs: list[TaskRun], root: MultiRunDir) -> dict[str, str]:
    """Every merged or joint student as one GGUF of the export type, like any student's export."""
    from distill.models.gguf_export import write_gguf
    from distill.models.load import base_gguf

    cfg = runs[0].cfg
    out = {}
    for name, folder in students.items():
        target = root.gguf(name, cfg.export.gguf_type)
        if not target.exists() or target.stat().st_mtime < (folder / "config.json").stat().st_mtime:
            write_gguf(folder, target, quant=cfg.export.gguf_type, name=f"{cfg.student.name}-{name}",
                       reference=base_gguf(cfg.student))
        out[name] = str(target)
    return out


def report(mt: MultiTask, runs: list[TaskRun], reps: dict[str, dict], root: MultiRunDir, joint: dict | None,
           ggufs: dict[str, str]) -> dict:
    """report.json and report.md: per task every way with its interval and difference to the separate
    student, what each way costs to serve a month, and the cheapest way that meets every task's bar."""
    keys = mreport.way_keys(mt.ways, [m.name for m in mt.merges])
    tables = [mreport.task_table(r.name, reps[r.name], keys, mt.quality_target or r.cfg.quality_target or 1.0)
              for r in runs]
    first = runs[0].cfg
    price = first.pricing.hardware[first.student.hardware].usd_per_hour
    traffic = {r.name: r.cfg.pricing.expected_requests_per_day or 0.0 for r in runs}
    bill = mreport.serving_bill(tables, keys, price, traffic, first.student.hardware)
    merges = [MergeStats.read(root.stats(m.name)).model_dump() for m in mt.merges] if "merged" in mt.ways else []
    rep = {"tasks": tables, "serving": bill, "requests_per_day": traffic, "machine_rule": mreport.MACHINE_RULE,
           "cheapest": (mreport.cheapest(bill) or {}).get("way"), "verdict": mreport.verdict(bill, tables),
           "merges": merges, "joint": joint, "gguf": ggufs,
           "task_reports": {r.name: str(r.dir.report_md) for r in runs}}
    write_json(root.report_json, rep)
    write_text_atomic(root.report_md, mreport.markdown(rep))
    return rep
