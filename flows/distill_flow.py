"""The distillation path as one Prefect flow: seeds -> generate -> filter -> train -> evaluate -> report.

Each task calls one stage function of the `distill` library and nothing else. Runs with no Prefect
server (ephemeral API) or as a deployment on a real one.
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from distill.config import Config
from distill.stages import prepare_run

STAGES = ("generate", "filter", "train", "evaluate", "report")


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(cfg: Config, run_dir: Path) -> dict:
    from distill.stages import run_generate

    stats = run_generate(cfg, run_dir)
    get_run_logger().info("generate: %s", {k: stats["last"][k] for k in ("requests_sent", "cache_hits", "failed", "cost_usd")})
    return stats


@task(name="filter", cache_policy=NO_CACHE)
def filter_task(cfg: Config, run_dir: Path) -> dict:
    from distill.filtering import filter_stage

    stats = filter_stage(cfg, run_dir)
    get_run_logger().info("filter: kept %d of %d rows", stats["kept"], stats["generated"])
    create_table_artifact(
        key="distill-data",
        table=[{"stage": s["stage"], "in": s["in"], "kept": s["kept"], "dropped": s["dropped"],
                "top reasons": "; ".join(f"{k}: {v}" for k, v in s["top_reasons"].items())} for s in stats["stages"]],
        description=f"Filter stages for {run_dir}: {stats['kept']} of {stats['generated']} rows kept",
    )
    return stats


@task(name="train", cache_policy=NO_CACHE)
def train_task(cfg: Config, run_dir: Path) -> dict:
    from distill.train import train_stage

    stats = train_stage(cfg, run_dir)
    get_run_logger().info("train: %d steps, loss %.3f -> %.3f", stats["steps"], stats["first_loss"], stats["last_loss"])
    return stats


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(cfg: Config, run_dir: Path) -> dict:
    from distill.evaluate import evaluate_stage

    res = evaluate_stage(cfg, run_dir)
    for name, m in res["models"].items():
        get_run_logger().info("evaluate %s: %s", name, m["metrics"])
    return res


@task(name="report", cache_policy=NO_CACHE)
def report_task(cfg: Config, run_dir: Path) -> dict:
    from distill.report import report_stage

    rep = report_stage(cfg, run_dir)
    table = [{"model": r["name"], "role": r["role"], "parameters": r["parameters"], **r["metrics"],
              "% of teacher": r.get("pct_of_teacher_quality"), "cost per 1k (USD)": r["cost_per_1k_usd"],
              "x cheaper": r.get("x_cheaper"), "latency p50 (s)": r["latency_p50_s"]} for r in rep["models"]]
    create_table_artifact(key="distill-comparison", table=table, description=f"Price-performance table for {run_dir}")
    create_markdown_artifact(key="distill-report", markdown=rep["markdown"], description=f"Report for {run_dir}")
    return rep


@flow(name="distill", log_prints=True)
def distill_flow(config_path: str | None = None, run_dir: str | None = None, overrides: list[str] | None = None,
                 stages: list[str] = list(STAGES)) -> str:
    """Run the chosen stages (all by default) on one run directory; returns the run directory."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    rd = Path(run_dir) if run_dir else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    cfg, rd = prepare_run(config_path, rd, overrides or [], stages=tuple(stages))
    steps = {"generate": generate_task, "filter": filter_task, "train": train_task,
             "evaluate": evaluate_task, "report": report_task}
    for name in STAGES:
        if name in stages:
            steps[name](cfg, rd)
    return str(rd)
