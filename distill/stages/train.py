"""The train stage: every student candidate fine-tuned with TRL on the same filtered rows.

Rows become conversational prompt-completion pairs (the student's plain prompt -> the teacher's
answer), so the loss falls on the completion only. LoRA by default (merged before saving). Each
candidate's `method` says what it learns from them: the text (sft), also the teacher's distribution
over it (logit_kd), or the teacher's scores of its own samples (on_policy).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from distill.config import Training
from distill.io import DataError, read_jsonl
from distill.models.kd_train import KDSource
from distill.models.load import base_student_dir, parameter_count, pruned_dir, save_model_dir
from distill.records import Row, prompt_completion
from distill.stages.context import RunContext, writes
from distill.stages.kd_source import kd_source
from distill.stats import TrainStats
from distill.tasks import Task


def to_prompt_completion(task: Task, rows: list[Row]) -> list[dict]:
    return [prompt_completion(task.student_messages(r.input), r.output) for r in rows]


def candidate_base(student, rd) -> Path:
    """The weights a candidate is fine-tuned from: an earlier candidate's (init_from), else the
    configured student, depth-pruned if asked."""
    if getattr(student, "init_from", None):
        return rd.student(student.init_from)
    base = base_student_dir(student)
    return pruned_dir(base, student.keep_layers) if getattr(student, "keep_layers", None) else base


@writes
def run(ctx: RunContext) -> TrainStats:
    """Train every student candidate on the same filtered rows (one, unless `students` lists several)."""
    cfg, rd = ctx.cfg, ctx.run
    if not rd.train.exists():
        raise FileNotFoundError(f"{rd.train}: not found (run `distill filter` first)")
    rows = [Row.from_dict(r) for r in read_jsonl(rd.train)]
    if not rows:
        raise DataError(f"{rd.train}: no rows survived filtering; nothing to train on (see data/dropped.jsonl "
                        "for the reasons)")
    records = to_prompt_completion(ctx.task, rows)
    candidates = cfg.student_candidates()
    # every candidate's teacher distribution is resolved (and its tokenizer checked) before any trains
    sources = {name: kd_source(ctx, name, student, t, rows, records) for name, student, t in candidates}
    per = {}
    for name, student, t in candidates:
        # a candidate started from an earlier one has that one's layers
        kept = per[student.init_from].keep_layers if student.init_from else student.keep_layers
        per[name] = train_one(student, t, records, rd.checkpoints(name), rd.student(name), rd.student_stats(name),
                              sources[name], candidate_base(student, rd), kept)
    if any(v.rank is not None for v in per.values()):  # not the main process: it writes nothing
        return next(iter(per.values()))
    stats = per[candidates[0][0]].model_copy()
    if cfg.students:
        stats = stats.model_copy(update={"students": per,
                                         "wall_seconds": round(sum(v.wall_seconds for v in per.values()), 2)})
    stats.write(rd.stats("train"))
    return stats


def train_one(student, t: Training, records: list[dict], ckpt_dir: Path, out: Path, stats_path: Path,
              kd: KDSource | None, base_dir: Path, keep_layers: int | None) -> TrainStats:
    """Fine-tune one candidate from base_dir by t.method and write it to `out` (skipped when a ladder
    re-run finds it done); kd is the teacher distribution of the logit-level methods."""
    from distill.models.sft import merged_model, run_sft

    if (out / "config.json").exists() and stats_path.exists():
        return TrainStats.read(stats_path)
    t0 = time.perf_counter()
    trainer, plan, tok, resume, result = run_sft(t, base_dir, records, ckpt_dir,
                                                 trust_remote_code=student.trust_remote_code, kd=kd)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    # Under `accelerate launch` every process trains; one writes the student. (ZeRO-2 keeps full
    # weights on every rank, so merging there is safe.)
    if not trainer.accelerator.is_main_process:
        trainer.accelerator.wait_for_everyone()
        return TrainStats(output_dir=str(out), rank=trainer.accelerator.process_index)
    merged = merged_model(trainer, plan, t.lora)
    save_model_dir(merged, tok, out)

    stats = TrainStats(
        base=str(base_dir), output_dir=str(out), name=student.name,
        keep_layers=keep_layers,
        method=t.method, kd_teacher=kd.name if kd else None, rows=len(records) - (kd.skipped if kd else 0),
        steps=trainer.state.global_step, epochs=round(trainer.state.epoch or 0, 3),
        resumed_from=resume, plan=plan, processes=trainer.accelerator.num_processes, lora=t.lora,
        trainable_parameters=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        parameters=parameter_count(merged), first_loss=losses[0] if losses else math.nan,
        last_loss=losses[-1] if losses else math.nan, losses=losses,
        train_runtime_s=result.metrics.get("train_runtime"), wall_seconds=round(time.perf_counter() - t0, 2))
    stats.write(stats_path)
    trainer.accelerator.wait_for_everyone()
    return stats
