"""Glue shared by the CLI and the Prefect flow: resolve a run directory and call stages with a teacher."""
from __future__ import annotations

from pathlib import Path

from distill.config import Config, ConfigError, load_config, resolve_path, save_config
from distill.io import DataError, load_examples
from distill.text import dedup_key

ALL_STAGES = ("generate", "filter", "train", "evaluate", "report")


def prepare_run(config: str | Path | None, run_dir: Path, overrides: list[str], *, save: bool = True,
                stages: tuple[str, ...] = ()) -> tuple[Config, Path]:
    """Load the config (the run's own saved one when none is given), check the input files, save it.

    Inputs are checked before anything is written, so bad input leaves no half-made run directory.
    With save=False (a single later stage, e.g. evaluating another file) the overrides apply to this
    invocation only and the run keeps the config it was made with.
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if config is None and saved.exists():
        config = saved
    cfg = load_config(config, overrides)
    preflight(cfg, stages)
    run_dir.mkdir(parents=True, exist_ok=True)
    if save or not saved.exists():
        save_config(cfg, saved)
    return cfg, run_dir


def run_generate(cfg: Config, run_dir: Path, map_shards=None) -> dict:
    """Generation against the configured teacher (a local server lives as long as this call).

    map_shards runs the shards (default: one after another, here); the flow passes one that submits
    them as Prefect tasks to its task runner.
    """
    from distill.adapt import adapt_teacher
    from distill.generate import generate, sequential
    from distill.teacher import teacher_endpoint

    adapt_teacher(cfg, run_dir)
    with teacher_endpoint(cfg, run_dir) as url:
        return generate(cfg, run_dir, url, map_shards or sequential)


def preflight(cfg: Config, stages: tuple[str, ...]) -> None:
    """Every check that can fail before work starts, so bad input fails fast and writes nothing."""
    seeds_path, eval_path = resolve_path(cfg.seeds_path), resolve_path(cfg.eval.path)
    seeds = load_examples(seeds_path, what="seed file")
    evals = load_examples(eval_path, what="eval set")
    check_no_overlap(seeds_path, seeds, eval_path, evals)
    if "generate" in stages or ("evaluate" in stages and "teacher" in cfg.eval.models):
        check_teacher(cfg)
    if "train" in stages:
        check_student_fits(cfg)


def check_no_overlap(seeds_path: Path, seeds: list[dict], eval_path: Path, evals: list[dict]) -> None:
    """The eval set must be held out: no eval input may also be a seed's input or output."""
    seen = {}
    for s in seeds:
        for f in ("input", "output"):
            seen.setdefault(dedup_key(s[f]), s["id"])
    for e in evals:
        if (sid := seen.get(dedup_key(e["input"]))) is not None:
            raise DataError(f"{eval_path}:{_line_of(eval_path, e['id'])}: field 'input': eval row '{e['id']}' "
                            f"overlaps seed '{sid}' ({seeds_path}:{_line_of(seeds_path, sid)}); the eval set must be held out")


def _line_of(path: Path, row_id: str) -> int:
    import json

    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip() and json.loads(line).get("id") == row_id:
                return n
    return 0


def check_teacher(cfg: Config) -> None:
    """A local teacher's weights exist; a remote teacher answers, accepts the key and serves the model."""
    import httpx

    from distill.teacher import TeacherError, default_gguf

    t = cfg.teacher
    if t.adaptation == "lora" and t.backend == "openai_batch":
        raise ConfigError("teacher.adaptation: a LoRA-adapted teacher runs in-process; use backend openai "
                          "(served by transformers here) or vllm_offline (vLLM's LoRA support)")
    if t.adaptation == "lora" and t.adapt_base and not (resolve_path(t.adapt_base) / "config.json").exists():
        raise ConfigError(f"teacher.adapt_base: {t.adapt_base}: not a transformers model directory (no config.json)")
    if t.backend == "vllm_offline":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("teacher.backend: vllm_offline needs vLLM in this environment (pip install '.[vllm]')")
        return
    if t.launch_local:
        gguf = resolve_path(t.local.gguf) if t.local.gguf else default_gguf()
        if not gguf.exists():
            raise ConfigError(f"teacher.local.gguf: {gguf}: file not found")
        return
    if not t.base_url:
        raise ConfigError("teacher.base_url: required when teacher.launch_local is false")
    key = cfg.api_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        r = httpx.get(t.base_url.rstrip("/") + "/models", headers=headers, timeout=10)
    except httpx.HTTPError as e:
        raise TeacherError(f"teacher.base_url {t.base_url}: unreachable ({type(e).__name__}: {e})") from None
    if r.status_code in (401, 403):
        raise TeacherError(f"teacher.api_key: rejected by {t.base_url} (HTTP {r.status_code}); "
                           f"set ${t.api_key_env}")
    if r.status_code != 200:
        return  # some servers do not list models; the first request will tell
    try:
        served = [m["id"] for m in r.json().get("data", [])]
    except (ValueError, TypeError, KeyError):
        return
    if served and t.model not in served:
        raise TeacherError(f"teacher.model '{t.model}': not served by {t.base_url} "
                           f"(it serves: {', '.join(served[:10])}{', ...' if len(served) > 10 else ''})")


def check_student_fits(cfg: Config) -> None:
    """Refuse a student whose training would not fit in this machine's memory (GPU or RAM)."""
    from distill.models import student_parameters, training_bytes

    params = student_parameters(cfg.student)
    need = training_bytes(params, lora=cfg.training.lora)
    have, where = available_memory()
    if need > have:
        name = cfg.student.base or "the default SmolLM2-135M student"
        mode = "LoRA" if cfg.training.lora else "full fine-tuning"
        raise ConfigError(f"student.base: {name} has {params / 1e9:.2f}B parameters; {mode} needs about "
                          f"{need / 2**30:.1f} GiB but {where} has {have / 2**30:.1f} GiB available "
                          f"(try training.lora=true or a smaller student)")


def available_memory() -> tuple[int, str]:
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "the GPU"
    import psutil

    return psutil.virtual_memory().available, "this machine"
