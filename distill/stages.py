"""Glue shared by the CLI and the Prefect flow: resolve a run directory and call stages with a teacher."""
from __future__ import annotations

from pathlib import Path

from distill.config import Config, load_config, resolve_path, save_config
from distill.io import load_examples


def prepare_run(config: str | Path | None, run_dir: Path, overrides: list[str], *, save: bool = True
                ) -> tuple[Config, Path]:
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
    load_examples(resolve_path(cfg.seeds_path), what="seed file")
    load_examples(resolve_path(cfg.eval.path), what="eval set")
    run_dir.mkdir(parents=True, exist_ok=True)
    if save or not saved.exists():
        save_config(cfg, saved)
    return cfg, run_dir


def run_generate(cfg: Config, run_dir: Path) -> dict:
    from distill.generate import generate
    from distill.teacher import teacher_endpoint

    with teacher_endpoint(cfg, run_dir / "logs" / "teacher_server.log") as url:
        return generate(cfg, run_dir, url)
