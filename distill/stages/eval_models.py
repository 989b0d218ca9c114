"""Which models the evaluation asks: the teacher, the base student under its baseline prompts (the
cheaper alternatives to fine-tuning), and every distilled student, each with its prompt."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.models.load import base_student_dir
from distill.stages.context import RunContext

BASELINES = {  # key -> (name suffix, role, prompt description)
    "base_student": ("(base)", "base student", "plain prompt, zero-shot"),
    "base_zero_shot": ("(base, instructions)", "prompted base student", "the teacher's system prompt, zero-shot"),
    "base_few_shot": ("(base, {k}-shot)", "prompted base student", "the teacher's {k}-shot prompt"),
}


def model_key(ladder_name: str | None) -> str:
    """A distilled student's key in eval results and the report: "student", or "student:<name>" in a ladder."""
    return "student" if ladder_name is None else f"student:{ladder_name}"


@dataclass
class InProcess:
    """A self-hosted model the harness runs: the base student under one of its prompts, or a distilled student."""

    key: str
    name: str
    path: Path
    role: str
    hardware: str
    prompt: str
    messages: Callable[[str], list[dict]]


def in_process_models(ctx: RunContext) -> list[InProcess]:
    """The configured baselines, then every distilled student (one never trained stops the stage here,
    before the teacher is asked)."""
    cfg, task, wanted = ctx.cfg, ctx.task, ctx.cfg.eval.models
    out = []
    if any(k in wanted for k in BASELINES):
        base, k = base_student_dir(cfg.student), len(ctx.prompt_shots)
        prompts = {"base_student": task.student_messages, "base_zero_shot": lambda x: task.teacher_messages(x, []),
                   "base_few_shot": lambda x: task.teacher_messages(x, ctx.prompt_shots)}
        for key, (suffix, role, prompt) in BASELINES.items():
            if key in wanted:
                out.append(InProcess(key, f"{base.name.split('.')[0]} {suffix.format(k=k)}", base, role,
                                     cfg.student.hardware, prompt.format(k=k), prompts[key]))
    if "student" in wanted:
        for name, student, _ in cfg.student_candidates():
            sdir = ctx.dir.student(name)
            if not (sdir / "config.json").exists():
                raise FileNotFoundError(f"{sdir}: no trained student (run `distill train` first)")
            out.append(InProcess(model_key(name), student.name, sdir, "distilled student", student.hardware,
                                 "plain prompt, zero-shot", task.student_messages))
    return out
