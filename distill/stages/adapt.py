"""Distillation path, step 1: adapt the teacher to the seed set before it generates.

few_shot (the default): seeds shown as chat turns before every input (generate.few_shot_examples).
lora: for an open teacher that transformers can load, a LoRA fine-tune on the seeds with TRL's
SFTTrainer; the adapted teacher is then prompted zero-shot (system prompt + input), served in-process
(transformers, or vLLM's LoRA support with teacher.backend vllm_offline). The report says which.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from distill.config import Config, Student, Training, resolve_path
from distill.io import atomic_path, read_json, write_json
from distill.models.load import base_student_dir, save_model_dir
from distill.records import prompt_completion
from distill.stages.context import RunContext, writes


def teacher_base_dir(cfg: Config) -> Path:
    """The open teacher's weights as a transformers directory (null = the bundled SmolLM2 GGUF, converted)."""
    a = cfg.teacher.adaptation
    return resolve_path(a.base) if a.base else base_student_dir(Student())


def describe(cfg: Config) -> str:
    a = cfg.teacher.adaptation
    if a.method == "lora":
        return f"LoRA fine-tune on the seed set ({a.steps} steps), zero-shot prompt"
    return f"{a.few_shot}-shot prompting with seeds"


@writes
def run(ctx: RunContext) -> dict:
    """The adapt stage, before generation: train (once per run) and save the adapted teacher; a no-op
    for few-shot adaptation."""
    cfg, rd, a = ctx.cfg, ctx.dir, ctx.cfg.teacher.adaptation
    if a.method == "few_shot":
        return {"adaptation": "few_shot", "description": describe(cfg)}
    if (rd.teacher_merged / "config.json").exists() and rd.stats("adapt").exists():
        return read_json(rd.stats("adapt"))
    from distill.models.sft import merged_model, run_sft

    t0 = time.perf_counter()
    records = [prompt_completion(ctx.task.teacher_messages(s["input"], []), s["output"]) for s in ctx.seeds]
    base = teacher_base_dir(cfg)
    training = Training(lora=True, lora_r=16, lora_alpha=32, max_steps=a.steps, batch_size=8,
                        learning_rate=a.learning_rate, max_length=256, logging_steps=5,
                        save_steps=max(a.steps, 1), seed=cfg.seed)
    trainer, plan, tok, resume, _ = run_sft(training, base, records, rd.teacher_checkpoints)
    if not trainer.accelerator.is_main_process:
        trainer.accelerator.wait_for_everyone()
        return {"adaptation": "lora", "rank": trainer.accelerator.process_index}
    # the adapter alone (for vLLM's LoRA serving) and merged weights (for in-process transformers)
    with atomic_path(rd.teacher_adapter, folder=True) as tmp:
        trainer.model.save_pretrained(str(tmp))
    save_model_dir(merged_model(trainer, plan, lora=True, base_dir=base), tok, rd.teacher_merged)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    stats = {"adaptation": "lora", "description": describe(cfg), "base": str(base), "seeds": len(records),
             "steps": trainer.state.global_step, "resumed_from": resume,
             "first_loss": losses[0] if losses else math.nan, "last_loss": losses[-1] if losses else math.nan,
             "adapter": str(rd.teacher_adapter), "merged": str(rd.teacher_merged),
             "wall_seconds": round(time.perf_counter() - t0, 2)}
    write_json(rd.stats("adapt"), stats)
    trainer.accelerator.wait_for_everyone()
    return stats
