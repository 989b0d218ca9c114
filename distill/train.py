"""Student training with TRL's SFTTrainer on the filtered set.

Rows become conversational prompt-completion pairs (the student's plain prompt -> the teacher's
answer), so the loss falls on the completion only. LoRA by default (merged before saving); bf16 and
padding-free batches on a GPU, fp32 on CPU. A killed run resumes from its last checkpoint.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from distill.config import Config, Training, resolve_path
from distill.io import read_jsonl, write_json
from distill.models import base_student_dir, load_model, parameter_count, pruned_dir, save_model_dir
from distill.tasks import get_task


def device_plan(t: Training, *, cuda: bool, bf16_ok: bool, flash_attn: bool) -> dict:
    """Precision, padding-free and attention choices for this hardware (pure: unit-tested on CPU)."""
    if t.precision == "auto":
        precision = ("bf16" if bf16_ok else "fp16") if cuda else "fp32"
    else:
        precision = t.precision
    if precision in ("bf16", "fp16") and not cuda:
        raise ValueError(f"training.precision={precision} needs a GPU; use fp32 or auto on CPU")
    # Padding-free batches concatenate the examples and restart position ids at each one. Flash
    # attention takes the boundaries as varlen lengths; SDPA and eager get a block-diagonal mask that
    # transformers builds from the position ids (with no attention mask and no KV cache, as TRL trains).
    # Both are exact, but only flash attention gains: measured on CPU, the mask costs more than the
    # padding it saves on short rows, so auto turns it on only there.
    if t.padding_free == "auto":
        padding_free = cuda and flash_attn
    else:
        padding_free = t.padding_free == "on"
    attn = "flash_attention_2" if (padding_free or t.packing) and flash_attn else "sdpa"
    return {"precision": precision, "padding_free": padding_free, "packing": t.packing,
            "attn_implementation": attn, "device": "cuda" if cuda else "cpu"}


def to_prompt_completion(task, rows: list[dict]) -> list[dict]:
    return [{"prompt": task.student_messages(r["input"]),
             "completion": [{"role": "assistant", "content": r["output"]}]} for r in rows]


def sft_config(t: Training, plan: dict, output_dir: Path):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=2,
        max_length=t.max_length,
        packing=plan["packing"],
        # padding-free without packing comes from the collator (make_trainer): TRL refuses the flag
        # with a max_length, though its dataset preparation truncates to it all the same
        padding_free=plan["packing"],
        completion_only_loss=True,
        gradient_checkpointing=t.gradient_checkpointing,
        deepspeed=str(resolve_path(t.deepspeed)) if t.deepspeed else None,
        # multi-process runs (DDP): LoRA freezes most weights, so skip the search for unused parameters
        ddp_find_unused_parameters=False,
        bf16=plan["precision"] == "bf16",
        fp16=plan["precision"] == "fp16",
        use_cpu=plan["device"] == "cpu",
        seed=t.seed,
        data_seed=t.seed,
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=False,
        # similar lengths together, so padded CPU batches carry little padding
        train_sampling_strategy="random" if plan["padding_free"] or plan["packing"] else "group_by_length",
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint. Trainer writes trainer_state.json last, so a checkpoint that a
    crash cut short has none and is skipped (the resumed run writes it again)."""
    done = [p for p in Path(output_dir).glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def make_trainer(t: Training, plan: dict, model, tok, records: list[dict], output_dir: Path, **sft_args):
    """TRL's SFTTrainer for prompt-completion records under a device plan (LoRA if t.lora); sft_args
    override fields of the SFTConfig."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model.config._attn_implementation = plan["attn_implementation"]
    args = sft_config(t, plan, output_dir)
    for k, v in sft_args.items():
        setattr(args, k, v)
    peft_config = None
    if t.lora:
        peft_config = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                                 target_modules=t.lora_target_modules, task_type="CAUSAL_LM")
    collator = None
    if plan["padding_free"] and not plan["packing"]:
        collator = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tok,
                      peft_config=peft_config, data_collator=collator)


def run_sft(t: Training, base_dir: Path, records: list[dict], ckpt_dir: Path, *, trust_remote_code: bool = False):
    """TRL SFT of base_dir on prompt-completion records (resuming from the last checkpoint in
    ckpt_dir); returns (trainer, plan, tokenizer, resumed-from, train result)."""
    import torch

    cuda = torch.cuda.is_available()
    plan = device_plan(t, cuda=cuda, bf16_ok=cuda and torch.cuda.is_bf16_supported(),
                       flash_attn=_has_flash_attn())
    torch.manual_seed(t.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan["precision"], torch.float32)
    model, tok = load_model(base_dir, trust_remote_code=trust_remote_code, dtype=dtype)
    trainer = make_trainer(t, plan, model, tok, records, ckpt_dir)
    resume = last_checkpoint(ckpt_dir)
    result = trainer.train(resume_from_checkpoint=resume)
    return trainer, plan, tok, resume, result


def merged_model(trainer, plan: dict, lora: bool):
    import torch

    merged = trainer.accelerator.unwrap_model(trainer.model)
    merged = merged.merge_and_unload() if lora else merged
    return merged.to(torch.float32) if plan["device"] == "cpu" else merged


def student_dir(run_dir: Path, key: str) -> Path:
    """Where a trained student lives: <run>/student, or <run>/students/<name> for a ladder candidate."""
    return run_dir / "student" if key == "student" else run_dir / "students" / key.split(":", 1)[1]


def candidate_base(student) -> Path:
    """The base a candidate is fine-tuned from: the configured student, depth-pruned if asked."""
    base = base_student_dir(student)
    return pruned_dir(base, student.keep_layers) if getattr(student, "keep_layers", None) else base


def train_stage(cfg: Config, run_dir: Path) -> dict:
    """Train every student candidate on the same filtered rows (one, unless `students` lists several)."""
    train_path = run_dir / "data" / "train.jsonl"
    if not train_path.exists():
        raise FileNotFoundError(f"{train_path}: not found (run `distill filter` first)")
    rows = read_jsonl(train_path)
    if not rows:
        raise ValueError(f"{train_path}: no rows survived filtering; nothing to train on")
    records = to_prompt_completion(get_task(cfg.task), rows)
    candidates = cfg.student_candidates()
    per = {}
    for key, student, t in candidates:
        ckpt = run_dir / "checkpoints" if key == "student" else run_dir / "checkpoints" / key.split(":", 1)[1]
        per[key] = train_one(student, t, records, ckpt, student_dir(run_dir, key))
    if any("rank" in v for v in per.values()):  # not the main process: it writes nothing
        return next(iter(per.values()))
    stats = dict(per[candidates[0][0]])
    if cfg.students:
        stats = {**stats, "students": per, "wall_seconds": round(sum(v["wall_seconds"] for v in per.values()), 2)}
    write_json(run_dir / "stats" / "train.json", stats)
    return stats


def train_one(student, t: Training, records: list[dict], ckpt_dir: Path, out: Path) -> dict:
    """Fine-tune one candidate and write it to `out` (skipped when a ladder re-run finds it done)."""
    from distill.io import read_json

    if (out / "config.json").exists() and (out / "train_stats.json").exists():
        return read_json(out / "train_stats.json")
    t0 = time.perf_counter()
    base_dir = candidate_base(student)
    trainer, plan, tok, resume, result = run_sft(t, base_dir, records, ckpt_dir,
                                                 trust_remote_code=student.trust_remote_code)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    # Under `accelerate launch` every process trains; one writes the student. (ZeRO-2 keeps full
    # weights on every rank, so merging there is safe.)
    if not trainer.accelerator.is_main_process:
        trainer.accelerator.wait_for_everyone()
        return {"output_dir": str(out), "rank": trainer.accelerator.process_index}
    merged = merged_model(trainer, plan, t.lora)
    save_model_dir(merged, tok, out)

    stats = {
        "base": str(base_dir),
        "output_dir": str(out),
        "name": student.name,
        "keep_layers": getattr(student, "keep_layers", None),
        "rows": len(records),
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 3),
        "resumed_from": resume,
        "plan": plan,
        "processes": trainer.accelerator.num_processes,
        "lora": t.lora,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "parameters": parameter_count(merged),
        "first_loss": losses[0] if losses else math.nan,
        "last_loss": losses[-1] if losses else math.nan,
        "losses": losses,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(out / "train_stats.json", stats)
    trainer.accelerator.wait_for_everyone()
    return stats


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401

        return True
    except ImportError:
        return False
