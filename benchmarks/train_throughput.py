"""Training efficiency: real (non-pad) tokens per second of student SFT, padded batches against
padding-free and packed ones, on the same rows and steps, with each mode's peak memory, its pad
share and its model FLOPs utilisation (MFU).

Modes (each in a child process of its own, so peak memory is per mode; LoRA unless --full):
  padded_random      TRL's default collator: each batch padded to its longest row, random order
  padded_grouped     the same, rows of similar length batched together (the project's CPU default)
  padding_free       the same rows per step concatenated into one sequence, position ids restarting
  packed             rows BFD-packed into sequences of one padded step's real tokens, one per step
  padded_max_length  every batch padded to max_length (fixed shapes, as `padding="max_length"` does)
  padded_grouped_fp32  padded_grouped in fp32 (on a CPU with native bf16 the others run under bf16 autocast)

MFU = achieved model FLOP/s / peak FLOP/s. The peak is the GPU's dense bf16/fp16 figure (a table of
known cards, or --peak-tflops); on a CPU, a matmul measured here in the mode's precision stands in for it.

    python benchmarks/train_throughput.py                  # 171 grammar pairs, one epoch, LoRA, batch 8
    python benchmarks/train_throughput.py --data runs/<id>/data/train.jsonl --full
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _record import record  # noqa: E402

MODES = ("padded_random", "padded_grouped", "padding_free", "packed", "padded_max_length", "padded_grouped_fp32")
# dense bf16 tensor-core peaks (no sparsity), in TFLOP/s; the first name found in the device name wins
GPU_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L4", 121.0))


def training_flops_per_token(n_matmul: int, n_trainable: int, n_layers: int, d_model: int, ctx: float,
                             lora: bool) -> float:
    """Model FLOPs to train on one token (PaLM's accounting: attention over the whole context).

    Forward: 2 per weight, plus 4 * d_model * ctx per layer for attention scores and values.
    Backward: the activations' gradients cost 2 per weight, plus twice the attention's forward (both
    of its matmul operands are activations); the weights' gradients 2 per weight that trains (all of
    them in full fine-tuning, only the adapters with LoRA).
    """
    attention = 4 * n_layers * d_model * ctx
    weight_grads = 2 * (n_trainable if lora else n_matmul)
    return 4 * n_matmul + 3 * attention + weight_grads


def matmul_parameters(model) -> int:
    """Weights that multiply: all but the input embedding table, which is a lookup (counted back when
    it doubles as the output projection)."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    return sum(p.numel() for p in model.parameters()) - emb.numel() + (emb.numel() if tied else 0)


def peak_tflops(cuda: bool, override: float | None, bf16: bool = False) -> tuple[float, str]:
    import torch

    if override:
        return override, "given (--peak-tflops)"
    if cuda:
        name = torch.cuda.get_device_name()
        for key, tf in GPU_PEAK_TFLOPS:
            if key in name:
                return tf, f"{name} dense bf16"
        return 0.0, f"{name}: unknown peak (pass --peak-tflops)"
    n = 2048  # in the precision the training's matmuls run in (bf16 under autocast on a bf16 CPU)
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 2 * n ** 3 * 5 / (time.perf_counter() - t0) / 1e12, f"measured {dtype} matmul {n}x{n} on this CPU"


def records(rows: list[dict]) -> list[dict]:
    from distill.records import prompt_completion
    from distill.tasks import get_task

    task = get_task("grammar")
    return [prompt_completion(task.student_messages(r["input"]), r["output"]) for r in rows]


def run_mode(mode: str, rows: list[dict], lora: bool, batch_size: int, max_length: int, pack_length: int) -> dict:
    import torch

    from distill.config import Student, Training
    from distill.models.load import base_student_dir, load_model
    from distill.models.sft import compact_lm_head_on_cpu, make_trainer, this_hardware

    cuda = torch.cuda.is_available()
    t = Training(lora=lora, epochs=1, batch_size=1 if mode == "packed" else batch_size,
                 max_length=pack_length if mode == "packed" else max_length, logging_steps=1000, save_steps=10**6,
                 padding_free="on" if mode == "padding_free" else "off", packing=mode == "packed",
                 precision="fp32" if mode.endswith("_fp32") else "auto")
    plan, dtype = this_hardware(t)
    torch.manual_seed(0)
    model, tok = load_model(base_student_dir(Student()), dtype=dtype)
    n_matmul, cfg = matmul_parameters(model), model.config
    with tempfile.TemporaryDirectory() as d:
        trainer = make_trainer(
            t, plan, model, tok, records(rows), Path(d), disable_tqdm=True,
            train_sampling_strategy="group_by_length" if mode.startswith("padded_grouped") else "random",
            pad_to_multiple_of=max_length if mode == "padded_max_length" else None)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with compact_lm_head_on_cpu():  # as the train stage runs it
            trainer.train()
        secs = time.perf_counter() - t0
        # the same batches again (same seed), counted: real tokens, and the size of each batch as run
        real = total = sq_len = 0
        for batch in trainer.get_train_dataloader():
            ids = batch["input_ids"]
            if "attention_mask" in batch:
                lengths = batch["attention_mask"].sum(-1).tolist()
            else:  # concatenated rows: each restarts its position ids at 0
                starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
                lengths = [b - a for a, b in zip(starts, starts[1:])]
            real += sum(lengths)
            sq_len += sum(n * n for n in lengths)
            total += ids.numel()
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    # attention context per token, averaged over tokens: each example attends over its own length
    flops = training_flops_per_token(n_matmul, n_trainable, cfg.num_hidden_layers, cfg.hidden_size,
                                     sq_len / real, lora) * real
    out = {"mode": mode, "steps": trainer.state.global_step, "seconds": round(secs, 2), "real_tokens": real,
           "batch_tokens": total, "pad_share": round(1 - real / total, 3), "real_tokens_per_s": round(real / secs, 1),
           "achieved_tflops": round(flops / secs / 1e12, 4), "plan": plan,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if cuda:
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="distill/tasks/grammar/eval.jsonl",
                    help="grammar pairs (JSONL with input/output); the held-out set stands in for a train set")
    ap.add_argument("--rows", type=int, default=0, help="use the first N rows (0: all)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    ap.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the modes (alternating order)")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU on a GPU not in the table")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # JSON arguments of one mode, run in this process
    args = ap.parse_args()
    from distill.config import resolve_path
    from distill.io import load_examples

    rows = load_examples(resolve_path(args.data), what="training rows")[: args.rows or None]
    if args.child:
        c = json.loads(args.child)
        print(json.dumps(run_mode(c["mode"], rows, not args.full, args.batch_size, args.max_length, c["pack_length"])))
        return

    import torch

    # Mode after mode, the VM's drift is as large as the effects measured: the modes run in rounds,
    # forward then backward (a palindrome: a steady drift costs every mode the same in sum).
    runs: dict[str, list[dict]] = {m: [] for m in args.modes}
    pack_length = args.batch_size * args.max_length
    for r in range(args.rounds):
        for mode in args.modes if r % 2 == 0 else args.modes[::-1]:
            argv = [sys.executable, __file__, "--data", args.data, "--rows", str(args.rows), "--batch-size",
                    str(args.batch_size), "--max-length", str(args.max_length),
                    "--child", json.dumps({"mode": mode, "pack_length": pack_length})] + (["--full"] if args.full else [])
            proc = subprocess.run(argv, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{mode}: {proc.stderr.strip().splitlines()[-1]}")
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if mode == "padded_random" and r == 0:  # packed rows hold what one padded step holds: same steps
                first = runs[mode][0]
                pack_length = round(first["real_tokens"] / first["steps"])
    results = []
    for mode, rs in runs.items():
        secs = sum(x["seconds"] for x in rs)
        results.append({**rs[0], "rounds": len(rs), "seconds": round(secs, 2),
                        "real_tokens_per_s": round(rs[0]["real_tokens"] * len(rs) / secs, 1),
                        "round_real_tokens_per_s": [x["real_tokens_per_s"] for x in rs],
                        "achieved_tflops": round(sum(x["achieved_tflops"] * x["seconds"] for x in rs) / secs, 4),
                        "peak_rss_mb": max(x["peak_rss_mb"] for x in rs)})
    peaks = {p: peak_tflops(torch.cuda.is_available(), args.peak_tflops, bf16=p == "bf16")
             for p in {r["plan"]["precision"] for r in results}}
    for r in results:
        peak, r["peak"] = peaks[r["plan"]["precision"]]
        r["mfu"] = round(r["achieved_tflops"] / peak, 4) if peak else None
    by = {r["mode"]: r for r in results}
    out = {"data": args.data, "rows": len(rows), "lora": not args.full, "batch_size": args.batch_size, "rounds": args.rounds,
           "max_length": args.max_length, "pack_length": pack_length,
           "peak_tflops": {p: round(v[0], 3) for p, v in peaks.items()}, "modes": results}
    if "padded_random" in by:
        base = by["padded_random"]
        out["vs_padded_random"] = {m: round(r["real_tokens_per_s"] / base["real_tokens_per_s"], 3) for m, r in by.items()}
        # removing padding saves at most the pad share of the padded batches' compute
        out["padding_free_bound"] = round(1 / (1 - base["pad_share"]), 3)
    record("train_throughput", out)


if __name__ == "__main__":
    main()
