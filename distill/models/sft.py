"""Supervised fine-tuning with TRL's SFTTrainer, shared by the student's training, the teacher's LoRA
adaptation and the training benchmark: the device plan, the config, the trainer, resuming, merging.

bf16 and padding-free batches on a GPU; on a CPU, fp32 weights with bf16 autocast where the CPU computes
bf16 natively (AVX512-BF16 or AMX), else fp32. A killed run resumes from its last checkpoint.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from distill.config import Training, resolve_path
from distill.models.load import cpu_bf16, load_model
from distill.progress import progress_bar, quiet_libraries


def device_plan(t: Training, *, cuda: bool, bf16_ok: bool, flash_attn: bool) -> dict:
    """Precision, padding-free and attention choices for this hardware (pure: unit-tested on CPU)."""
    if t.precision == "auto":
        precision = ("bf16" if bf16_ok else "fp16") if cuda else ("bf16" if bf16_ok else "fp32")
    else:
        precision = t.precision
    if precision == "fp16" and not cuda:
        raise ValueError("training.precision=fp16 needs a GPU; use bf16, fp32 or auto on CPU")
    if precision == "bf16" and not cuda and not bf16_ok:
        raise ValueError("training.precision=bf16 on CPU needs AVX512-BF16 or AMX, which this CPU lacks; use fp32 or auto")
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
        activation_checkpointing=t.gradient_checkpointing,
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
        disable_tqdm=True,  # one rich progress bar instead (one_progress_bar)
        # similar lengths together, so padded CPU batches carry little padding
        train_sampling_strategy="random" if plan["padding_free"] or plan["packing"] else "group_by_length",
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint. Trainer writes trainer_state.json last, and not atomically: a
    checkpoint a crash cut short has none, or one that does not parse or names another step. Such a
    checkpoint is skipped (the resumed run writes it again)."""
    def complete(p: Path) -> bool:
        try:
            return json.loads((p / "trainer_state.json").read_text())["global_step"] == int(p.name.split("-")[-1])
        except (OSError, ValueError, KeyError, TypeError):
            return False

    done = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and complete(p)]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def make_trainer(t: Training, plan: dict, model, tok, records: list[dict], output_dir: Path, kd=None, **sft_args):
    """The trainer for t.method over prompt-completion records under a device plan (LoRA if t.lora):
    TRL's SFTTrainer, the KD trainer on top of it, or TRL's DistillationTrainer; kd is the
    KDSource the logit-level methods learn from; sft_args override fields of the SFTConfig."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from distill.models import kd_train

    model.config._attn_implementation = plan["attn_implementation"]
    peft_config = None
    if t.lora:
        peft_config = LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                                 target_modules=t.lora_target_modules, task_type="CAUSAL_LM")
    if t.method == "on_policy":
        return kd_train.make_on_policy_trainer(model, kd.load(model.dtype), tok, records,
                                               distillation_config(t, plan, output_dir), fraction=t.on_policy_fraction,
                                               seed=t.seed, peft_config=peft_config)
    args = sft_config(t, plan, output_dir)
    for k, v in sft_args.items():
        setattr(args, k, v)
    if t.method == "logit_kd":
        examples, kd.skipped = kd_train.kd_examples(tok, records, t.max_length, kd.teacher_prompts, kd.topk)
        if not examples:
            raise ValueError(f"training.method=logit_kd: none of {len(records)} rows has {kd.name}'s distribution")
        args.dataset_kwargs, args.remove_unused_columns = {"skip_prepare_dataset": True}, False
        return kd_train.make_kd_trainer(
            dict(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tok,
                 peft_config=peft_config, data_collator=kd_train.KDCollator(tok.pad_token_id)),
            kd.load(model.dtype), alpha=t.kd_alpha, temperature=t.kd_temperature)
    collator = None
    if plan["padding_free"] and not plan["packing"]:
        collator = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tok,
                      peft_config=peft_config, data_collator=collator)


def distillation_config(t: Training, plan: dict, output_dir: Path):
    """TRL's DistillationConfig for on_policy, with the same schedule and device plan as SFT."""
    from trl import DistillationConfig

    if t.on_policy_vllm and plan["device"] != "cuda":
        raise ValueError("training.on_policy_vllm needs a GPU (vLLM samples there); on CPU transformers samples")
    sft = sft_config(t, plan, output_dir)
    same = ("output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
            "learning_rate", "lr_scheduler_type", "warmup_steps", "logging_steps", "save_steps", "save_total_limit",
            "activation_checkpointing", "deepspeed", "ddp_find_unused_parameters", "bf16", "fp16", "use_cpu", "seed",
            "data_seed", "report_to", "dataloader_num_workers", "disable_tqdm")
    return DistillationConfig(**{k: getattr(sft, k) for k in same}, temperature=t.kd_temperature, beta=t.kd_beta,
                              max_completion_length=t.on_policy_max_new_tokens, use_vllm=t.on_policy_vllm,
                              vllm_mode="colocate")


def run_sft(t: Training, base_dir: Path, records: list[dict], ckpt_dir: Path, *, trust_remote_code: bool = False,
            kd=None):
    """TRL training of base_dir on prompt-completion records by t.method (resuming from the last
    checkpoint in ckpt_dir); returns (trainer, plan, tokenizer, resumed-from, train result)."""
    import torch

    plan, dtype = this_hardware(t)
    if t.method != "sft":  # the KD losses take plain padded batches
        plan = {**plan, "padding_free": False, "packing": False}
    torch.manual_seed(t.seed)
    import datasets  # noqa: F401 - imported now so its bars are off before the trainer maps the data
    import transformers  # noqa: F401

    quiet_libraries()
    model, tok = load_model(base_dir, trust_remote_code=trust_remote_code, dtype=dtype)
    trainer = make_trainer(t, plan, model, tok, records, ckpt_dir, kd=kd)
    one_progress_bar(trainer)
    resume = last_checkpoint(ckpt_dir)
    with compact_lm_head_on_cpu():
        result = trainer.train(resume_from_checkpoint=resume)
    return trainer, plan, tok, resume, result


def one_progress_bar(trainer) -> None:
    """The trainer shows one progress bar of its steps; its per-step log dictionaries are not printed
    (they are in the checkpoints' trainer_state.json and the student's train_stats.json)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    class StepBar(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.bar = progress_bar(state.max_steps, "train: steps")
                self.advance = self.bar.__enter__()
                self.advance(state.global_step)  # a resumed run starts where it stopped

        def on_step_end(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.advance()

        def on_train_end(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.bar.__exit__(None, None, None)

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StepBar())


@contextmanager
def compact_lm_head_on_cpu():
    """TRL's fused LM head scores only the positions that have a label on Triton devices, and every position
    elsewhere, for compilers (Neuron) that would recompile on each new shape. Eager CPU kernels have no such
    cost, and on the prompt positions the vocabulary projection is wasted: scoring the completion tokens only,
    as on a GPU, made 14 LoRA steps of the offline default 18.8 s instead of 24.9 s (means of 4 interleaved
    pairs), with the same loss. Without TRL's switch (another version) training scores every position as before."""
    from trl.trainer import utils

    triton = getattr(utils, "_use_triton", None)
    if triton is None:
        yield
        return
    utils._use_triton = lambda device: device.type == "cpu" or triton(device)
    try:
        yield
    finally:
        utils._use_triton = triton


def this_hardware(t: Training):
    """(device plan, dtype the weights load in) on this machine: a GPU trains in its precision; a CPU
    keeps fp32 weights (and optimizer state) and autocasts the matmuls. With LoRA under bf16 autocast the
    frozen weights load in bf16 (autocast rounds them to bf16 for every matmul anyway; the adapters stay
    fp32): 14 SFT steps of the offline default took a median 17.7 s against 20.7 s (4 interleaved pairs), a
    whole training of the same rows 63 s against 72 s, its student 0.811 GLEU against 0.807. The adapters
    are merged onto the fp32 weights afterwards (`merged_model`)."""
    import torch

    cuda = torch.cuda.is_available()
    plan = device_plan(t, cuda=cuda, bf16_ok=torch.cuda.is_bf16_supported() if cuda else cpu_bf16(),
                       flash_attn=_has_flash_attn())
    if cuda:
        return plan, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(plan["precision"])
    frozen_bf16 = plan["precision"] == "bf16" and t.lora and t.method == "sft"
    plan["frozen_weights"] = "bf16" if frozen_bf16 else "fp32"
    return plan, torch.bfloat16 if frozen_bf16 else torch.float32


def merged_model(trainer, plan: dict, lora: bool, base_dir: Path, *, trust_remote_code: bool = False):
    """The trained model as plain fp32 weights on a CPU: LoRA adapters merged, onto the fp32 weights
    the student came from when it trained over a bf16 copy (not into bf16-rounded weights)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    return merge(model, plan, lora, base_dir, trust_remote_code=trust_remote_code)


def save_adapter(trainer, target: Path) -> None:
    """The trained LoRA adapter alone (PEFT's adapter_config.json + safetensors), written atomically before
    it is merged away: what model merging combines across tasks."""
    from distill.io import atomic_path

    with atomic_path(target, folder=True) as tmp:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(tmp, safe_serialization=True)


def merge(model, plan: dict, lora: bool, base_dir: Path, *, trust_remote_code: bool = False):
    import torch

    if lora and plan.get("frozen_weights") == "bf16":
        from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

        base, _ = load_model(base_dir, trust_remote_code=trust_remote_code, dtype=torch.float32)
        fp32 = get_peft_model(base, model.peft_config[model.active_adapter])
        set_peft_model_state_dict(fp32, get_peft_model_state_dict(model))
        return fp32.merge_and_unload()
    model = model.merge_and_unload() if lora else model
    return model.to(torch.float32) if plan["device"] == "cpu" else model


def _has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401

        return True
    except ImportError:
        return False
