"""Training efficiency: real (non-pad) tokens per second of student SFT, padded batches against
padding-free ones, on the same rows and steps, with peak memory and the pad share of each batch.

Padding-free batches need flash attention (a GPU): without it, attention leaks across the
concatenated examples, so on a CPU that mode is reported as unsupported and the script measures
padded batches in random order and grouped by length (the CPU default), plus the most padding-free
could gain here: 1 / (1 - pad share of random-order batches).

    python benchmarks/train_throughput.py                # 200 grammar pairs, one epoch, LoRA, batch 8
    python benchmarks/train_throughput.py --rows 400 --full
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _record import record  # noqa: E402


def run(mode: str, rows: list[dict], lora: bool, batch_size: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTTrainer

    from distill.config import Student, Training
    from distill.models import base_student_dir, load_model
    from distill.tasks import get_task
    from distill.train import _has_flash_attn, device_plan, sft_config, to_prompt_completion

    cuda = torch.cuda.is_available()
    t = Training(lora=lora, epochs=1, batch_size=batch_size, max_length=96, logging_steps=1000, save_steps=10**6,
                 padding_free="on" if mode == "padding_free" else "off")
    try:
        plan = device_plan(t, cuda=cuda, bf16_ok=cuda and torch.cuda.is_bf16_supported(), flash_attn=_has_flash_attn())
    except ValueError as e:
        return {"mode": mode, "supported": False, "reason": str(e)}
    torch.manual_seed(0)
    dtype = torch.bfloat16 if plan["precision"] == "bf16" else torch.float32
    model, tok = load_model(base_student_dir(Student()), dtype=dtype)
    model.config._attn_implementation = plan["attn_implementation"]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        args = sft_config(t, plan, Path(d), len(rows))
        args.train_sampling_strategy = "group_by_length" if mode == "padded_grouped" else "random"
        args.save_strategy = "no"
        args.disable_tqdm = True
        peft = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM") if lora else None
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(to_prompt_completion(get_task("grammar"), rows)),
                             processing_class=tok, peft_config=peft)
        t0 = time.perf_counter()
        trainer.train()
        secs = time.perf_counter() - t0
        # the same batches again (same seed), counted: real tokens and the padded size of each batch
        real = total = 0
        for batch in trainer.get_train_dataloader():
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
            n_real = int(mask.sum()) if mask is not None else int(ids.numel())
            real += n_real
            total += int(ids.numel())
    return {"mode": mode, "supported": True, "steps": trainer.state.global_step, "seconds": round(secs, 2),
            "real_tokens": real, "batch_tokens": total, "pad_share": round(1 - real / total, 3),
            "real_tokens_per_s": round(real / secs, 1), "plan": plan}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = ap.parse_args()
    from distill.config import resolve_path
    from distill.io import load_examples

    # the held-out grammar pairs stand in for a filtered train set: throughput only, no model is kept
    rows = load_examples(resolve_path("data/eval/grammar_test.jsonl"), what="eval set")[: args.rows]
    results = [run(m, rows, not args.full, args.batch_size) for m in ("padded_random", "padded_grouped", "padding_free")]
    by = {r["mode"]: r for r in results}
    out = {"rows": len(rows), "lora": not args.full, "batch_size": args.batch_size, "modes": results,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "grouped_vs_random": round(by["padded_grouped"]["real_tokens_per_s"] / by["padded_random"]["real_tokens_per_s"], 3),
           "padding_free_bound": round(1 / (1 - by["padded_random"]["pad_share"]), 3)}
    if by["padding_free"]["supported"]:
        out["padding_free_vs_padded"] = round(by["padding_free"]["real_tokens_per_s"] / by["padded_random"]["real_tokens_per_s"], 3)
    record("train_throughput", out)


if __name__ == "__main__":
    main()
