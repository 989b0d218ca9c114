"""Model merging: per-task LoRA adapters of one base combined into one adapter by PEFT's
add_weighted_adapter, then merged into the base: one student for every task."""
from __future__ import annotations

from pathlib import Path

from distill.io import atomic_path
from distill.models.load import load_model, save_model_dir

MERGED = "merged"  # the combined adapter's name inside the PEFT model


def merge_adapters(base_dir: Path, adapters: dict[str, Path], *, method: str, weights: list[float],
                   density: float | None, majority_sign: str, svd_rank: int | None, seed: int,
                   adapter_out: Path, student_out: Path, trust_remote_code: bool = False) -> int:
    """Combine the adapters (task name -> adapter folder) on the fp32 base by `method` with one weight per
    adapter; write the combined adapter to adapter_out and the base with it merged in to student_out.
    DARE drops values at random: seeded. Returns the combined adapter's rank."""
    import torch
    from peft import PeftModel

    base, tok = load_model(base_dir, trust_remote_code=trust_remote_code, dtype=torch.float32)
    names = list(adapters)
    model = PeftModel.from_pretrained(base, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(str(adapters[name]), adapter_name=name)
    torch.manual_seed(seed)
    model.add_weighted_adapter(names, weights, MERGED, combination_type=method, density=density,
                               majority_sign_method=majority_sign, svd_rank=svd_rank)
    model.set_adapter(MERGED)
    with atomic_path(adapter_out, folder=True) as tmp:
        model.save_pretrained(tmp, selected_adapters=[MERGED], safe_serialization=True)
    rank = model.peft_config[MERGED].r
    for name in names:  # only the combined adapter goes into the weights
        model.delete_adapter(name)
    save_model_dir(model.merge_and_unload(), tok, student_out)
    return rank
