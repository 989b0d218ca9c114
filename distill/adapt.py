"""Distillation path, step 1: adapt the teacher to the seed set before it generates.

few_shot (the default): seeds shown as chat turns before every input (generate.few_shot_examples).
lora: for an open teacher that transformers can load, a LoRA fine-tune on the seeds with TRL's
SFTTrainer; the adapted teacher is then prompted zero-shot (system prompt + input), served in-process
(transformers, or vLLM's LoRA support with teacher.backend vllm_offline). The report says which.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from distill.config import Config, Student, Training, resolve_path
from distill.io import load_examples, read_json, write_json
from distill.models import base_student_dir, save_model_dir
from distill.tasks import get_task


def adapted_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "teacher"


def teacher_base_dir(cfg: Config) -> Path:
    """The open teacher's weights as a transformers directory (null = the bundled SmolLM2 GGUF, converted)."""
    return resolve_path(cfg.teacher.adapt_base) if cfg.teacher.adapt_base else base_student_dir(Student())


def describe(cfg: Config) -> str:
    t = cfg.teacher
    if t.adaptation == "lora":
        return f"LoRA fine-tune on the seed set ({t.adapt_steps} steps), zero-shot prompt"
    return f"{t.few_shot}-shot prompting with seeds"


def adapt_teacher(cfg: Config, run_dir: Path) -> dict:
    """Train (once per run) and save the adapted teacher; a no-op for few-shot adaptation."""
    t = cfg.teacher
    if t.adaptation == "few_shot":
        return {"adaptation": "few_shot", "description": describe(cfg)}
    out, stats_path = adapted_dir(run_dir), Path(run_dir) / "stats" / "adapt.json"
    if (out / "merged" / "config.json").exists() and stats_path.exists():
        return read_json(stats_path)
    from distill.train import merged_model, run_sft

    t0 = time.perf_counter()
    task = get_task(cfg.task)
    seeds = load_examples(resolve_path(cfg.seeds_path), what="seed file")
    records = [{"prompt": task.teacher_messages(s["input"], []),
                "completion": [{"role": "assistant", "content": s["output"]}]} for s in seeds]
    base = teacher_base_dir(cfg)
    training = Training(lora=True, lora_r=16, lora_alpha=32, max_steps=t.adapt_steps, batch_size=8,
                        learning_rate=t.adapt_learning_rate, max_length=256, logging_steps=5,
                        save_steps=max(t.adapt_steps, 1), seed=cfg.seed)
    trainer, plan, tok, resume, _ = run_sft(training, base, records, out / "checkpoints")
    if not trainer.accelerator.is_main_process:
        trainer.accelerator.wait_for_everyone()
        return {"adaptation": "lora", "rank": trainer.accelerator.process_index}
    # the adapter alone (for vLLM's LoRA serving) and merged weights (for in-process transformers)
    adapter_tmp = out / ".adapter.tmp"
    shutil.rmtree(adapter_tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(adapter_tmp))
    shutil.rmtree(out / "adapter", ignore_errors=True)
    adapter_tmp.rename(out / "adapter")
    save_model_dir(merged_model(trainer, plan, lora=True), tok, out / "merged")
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    stats = {"adaptation": "lora", "description": describe(cfg), "base": str(base), "seeds": len(records),
             "steps": trainer.state.global_step, "resumed_from": resume,
             "first_loss": losses[0] if losses else math.nan, "last_loss": losses[-1] if losses else math.nan,
             "adapter": str(out / "adapter"), "merged": str(out / "merged"),
             "wall_seconds": round(time.perf_counter() - t0, 2)}
    write_json(stats_path, stats)
    trainer.accelerator.wait_for_everyone()
    return stats
