"""The train stage: every student candidate fine-tuned with TRL on the same filtered rows.

Rows become conversational prompt-completion pairs (the student's plain prompt -> the teacher's
answer), so the loss falls on the completion only. LoRA by default (merged before saving). Each
candidate's `method` says what it learns from them: the text (sft), also the teacher's distribution
over it (logit_kd), or the teacher's scores of its own samples (on_policy).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from distill.config import Training
from distill.io import DataError, read_jsonl
from distill.models import prune
from distill.models.kd_train import KDSource
from distill.models.load import base_student_dir, load_model, parameter_count, pruned_dir, save_model_dir
from distill.records import Row, prompt_completion
from distill.stages.context import RunContext, writes
from distill.stages.kd_source import kd_source
from distill.stats import TrainStats
from distill.tasks import Task


def to_prompt_completion(task: Task, rows: list[Row]) -> list[dict]:
    return [prompt_completion(task.student_messages(r.input), r.output) for r in rows]


def candidate_base(student, rd, records: list[dict]) -> tuple[Path, list[int] | None]:
    """The weights a candidate is fine-tuned from and, when it was cut, the layers it kept: an earlier
    candidate's weights (init_from) or the configured student's, depth-pruned if asked (an evenly
    spaced cut of the base once into the cache; a cut that depends on the run once into the run,
    shared by every candidate that starts from it)."""
    src = rd.student(student.init_from) if student.init_from else base_student_dir(student)
    keep = student.keep_layers
    if not keep:
        return src, None
    if student.prune == "even" and not student.init_from:
        n = json.loads((src / "config.json").read_text())["num_hidden_layers"]
        return pruned_dir(src, keep), prune.even_layers(n, keep)
    out = rd.checkpoints() / f"pruned-{student.init_from or 'base'}-{student.prune}-L{keep}"
    made = out / "config.json"
    if not made.exists() or made.stat().st_mtime < (src / "config.json").stat().st_mtime:  # never a stale cut
        model, tok = load_model(src, trust_remote_code=student.trust_remote_code)
        idx = prune.choose(model, tok, student.prune, keep,
                           [(r["prompt"], r["completion"][0]["content"]) for r in records])
        model.config.distill_kept_layers = idx  # said again in the train stats
        save_model_dir(prune.cut(model, idx), tok, out)
    return out, json.loads(made.read_text()).get("distill_kept_layers")


@writes
def run(ctx: RunContext) -> TrainStats:
    """Train every student candidate on the same filtered rows (one, unless `students` lists several)."""
    cfg, rd = ctx.cfg, ctx.dir
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
        # a candidate started from an earlier one has that one's layers, unless it cuts them
        kept = student.keep_layers or (per[student.init_from].keep_layers if student.init_from else None)
        base, layers = candidate_base(student, rd, records)
        per[name] = train_one(student, t, records, rd.checkpoints(name), rd.student(name), rd.student_stats(name),
                              sources[name], base, kept, layers, adapter=rd.adapter(name))
    if any(v.rank is not None for v in per.values()):  # not the main process: it writes nothing
        return next(iter(per.values()))
    stats = per[candidates[0][0]].model_copy()
    if cfg.students:
        stats = stats.model_copy(update={"students": per,
                                         "wall_seconds": round(sum(v.wall_seconds for v in per.values()), 2)})
    stats.write(rd.stats("train"))
    return stats


def train_one(student, t: Training, records: list[dict], ckpt_dir: Path, out: Path, stats_path: Path,
              kd: KDSource | None, base_dir: Path, keep_layers: int | None,
              layers: list[int] | None = None, adapter: Path | None = None) -> TrainStats:
    """Fine-tune one candidate from base_dir by t.method and write it to `out` (skipped when a ladder
    re-run finds it done); kd is the teacher distribution of the logit-level methods. A LoRA candidate's
    adapter is also kept at `adapter` (when given), before it is merged into the student."""
    from distill.models.sft import merged_model, run_sft, save_adapter

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
    if t.lora and adapter is not None:
        save_adapter(trainer, adapter)
    merged = merged_model(trainer, plan, t.lora, base_dir, trust_remote_code=student.trust_remote_code)
    save_model_dir(merged, tok, out)

    stats = TrainStats(
        base=str(base_dir), output_dir=str(out), name=student.name,
        keep_layers=keep_layers, kept_layers=layers,
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
