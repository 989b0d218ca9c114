"""`distill`: one command per stage plus `run` (the whole Prefect flow).

Every stage command takes --config, --run-dir and --set key.path=value. Without --run-dir, `run` and
`generate` start a new runs/<timestamp>/ and the other stages use the newest run. A run directory
remembers its config, so a stage re-run on it needs no --config.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from distill.config import ConfigError, field_help
from distill.io import DataError

app = typer.Typer(add_completion=False, no_args_is_help=False, help=__doc__, pretty_exceptions_enable=False)
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (default: the run's saved config, else configs/default.yaml).")]
RunDirOpt = Annotated[Optional[Path], typer.Option("--run-dir", "-r", help="Run directory (default: newest under runs/, or a new one).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the planned teacher requests, tokens and cost; call nothing, write nothing.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config field: key.path=value (repeatable).")]


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _new_run_dir() -> Path:
    base = Path("runs")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    d, i = base / stamp, 1
    while d.exists():
        d, i = base / f"{stamp}-{i}", i + 1
    return d


def _newest_run_dir() -> Path:
    runs = sorted((p for p in Path("runs").glob("*") if (p / "config.yaml").exists()), key=lambda p: p.stat().st_mtime)
    if not runs:
        _fail("no run directory under runs/: pass --run-dir or run `distill generate` first")
    return runs[-1]


def _setup(config: Path | None, run_dir: Path | None, overrides: list[str] | None, *, new: bool,
           stages: tuple[str, ...] = ()):
    """Resolve the run directory and config; save the resolved config (secrets redacted) there.

    `new` stages (generate, run) define the run and always save its config; later single stages
    save only an explicit --config, so `evaluate --set eval.path=...` leaves the run's config alone.
    """
    from distill.stages import prepare_run
    from distill.teacher import TeacherError

    if run_dir is None:
        run_dir = _new_run_dir() if new else _newest_run_dir()
    try:
        return prepare_run(config, run_dir, overrides or [], save=new or config is not None, stages=stages)
    except (ConfigError, DataError, TeacherError, FileNotFoundError) as e:
        _fail(str(e))


def _guard(fn, *args):
    from distill.teacher import TeacherError

    try:
        return fn(*args)
    except (ConfigError, DataError, TeacherError, FileNotFoundError) as e:
        _fail(str(e))


def _dry_run(config: Path | None, run_dir: Path | None, overrides: list[str] | None) -> None:
    from distill.config import load_config
    from distill.generate import plan_generation

    saved = run_dir / "config.yaml" if run_dir else None
    try:
        cfg = load_config(config or (saved if saved and saved.exists() else None), overrides or [])
        plan = plan_generation(cfg)
    except (ConfigError, DataError) as e:
        _fail(str(e))
    t = Table("planned", "value", title="dry run: nothing was sent to the teacher")
    for k, v in plan.items():
        t.add_row(k, str(v))
    Console().print(t)


@app.command()
def generate(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None, dry_run: DryRunOpt = False):
    """Seed expansion + teacher answers -> data/generated.jsonl (resumable; finished requests are never re-sent)."""
    from distill.stages import run_generate

    if dry_run:
        return _dry_run(config, run_dir, set)
    cfg, rd = _setup(config, run_dir, set, new=True, stages=("generate",))
    stats = _guard(run_generate, cfg, rd)
    last = stats["last"]
    console.print(f"generated {stats['counts']['rows']} rows in {rd}: {last['requests_sent']} teacher requests sent, "
                  f"{last['cache_hits']} reused from the store, {last['failed']} failed")
    if stats["counts"].get("cut_short"):
        console.print(f"[yellow]cut short:[/yellow] {stats['counts']['cut_short']}; {last['skipped']} requests not sent")


@app.command("filter")
def filter_(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Run the filter stages -> data/train.jsonl, data/dropped.jsonl (ledger), dataset/ (parquet + card)."""
    from distill.filtering import filter_stage

    cfg, rd = _setup(config, run_dir, set, new=False)
    stats = _guard(filter_stage, cfg, rd)
    t = Table("stage", "in", "kept", "dropped", "top reasons", title=f"filters ({rd})")
    for s in stats["stages"]:
        t.add_row(s["stage"], str(s["in"]), str(s["kept"]), str(s["dropped"]),
                  "; ".join(f"{k}: {v}" for k, v in s["top_reasons"].items()))
    Console().print(t)
    console.print(f"kept {stats['kept']} of {stats['generated']} rows -> {rd / 'data' / 'train.jsonl'}")


@app.command()
def train(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Fine-tune the student on data/train.jsonl with TRL -> student/ (merged, safetensors)."""
    from distill.train import train_stage

    cfg, rd = _setup(config, run_dir, set, new=False, stages=("train",))
    stats = _guard(train_stage, cfg, rd)
    if "rank" in stats:  # another process of `accelerate launch` writes the student
        return
    console.print(f"student saved to {stats['output_dir']} (loss {stats['first_loss']:.3f} -> {stats['last_loss']:.3f})")


@app.command()
def evaluate(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Every model answers the eval set through the same harness -> eval/<model>.jsonl + stats/evaluate.json."""
    from distill.evaluate import evaluate_stage

    cfg, rd = _setup(config, run_dir, set, new=False, stages=("evaluate",))
    res = _guard(evaluate_stage, cfg, rd)
    for name, m in res["models"].items():
        console.print(f"{name}: {m['metrics']}")


@app.command()
def report(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """report.json, report.md and frontier.png from a finished run directory."""
    from distill.report import report_stage

    cfg, rd = _setup(config, run_dir, set, new=False)
    rep = _guard(report_stage, cfg, rd)
    print(rep["markdown_table"])
    console.print(f"report: {rd / 'report.md'}")


@app.command()
def run(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None, dry_run: DryRunOpt = False):
    """The whole distillation path as one Prefect flow: generate -> filter -> train -> evaluate -> report."""
    if dry_run:
        return _dry_run(config, run_dir, set)
    from distill.stages import ALL_STAGES

    cfg, rd = _setup(config, run_dir, set, new=True, stages=ALL_STAGES)
    if cfg.teacher.api_key is not None:
        # the flow re-reads the saved config, which never holds the key; hand it over through the
        # environment rather than as a flow parameter (Prefect stores parameters in its database)
        os.environ[cfg.teacher.api_key_env] = cfg.teacher.api_key.get_secret_value()
    # A local run gets its own Prefect home (ephemeral API, no shared state); a configured server is used as is.
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str((rd / ".prefect").resolve()))
        # the temporary server's telemetry heartbeat only fails (offline) and locks its SQLite file
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # a new database is migrated at first start; Prefect's default 20 s is too short on 2 cold cores
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    from flows.distill_flow import distill_flow

    try:
        distill_flow(config_path=str(rd / "config.yaml"), run_dir=str(rd))
    except (ConfigError, DataError) as e:
        _fail(str(e))
    print(f"report: {rd / 'report.md'}")


def _deployment_params(config: Path | None, run_dir: Path | None, overrides: list[str] | None, name: str) -> dict:
    from distill.config import load_config

    try:
        load_config(config, overrides or [])  # fail here, not at 3 a.m. in the worker
    except ConfigError as e:
        _fail(str(e))
    return {"config_path": str(config.resolve()) if config else None,
            "run_dir": str((run_dir or Path("runs") / name).resolve()), "overrides": overrides or []}


@app.command()
def deploy(name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
           pool: Annotated[str, typer.Option(help="Process work pool (created if missing).")] = "distill",
           cron: Annotated[str, typer.Option(help="Cron schedule (UTC).")] = "0 3 * * *",
           active: Annotated[bool, typer.Option("--active", help="Activate the schedule (inactive by default).")] = False,
           config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Create (or update) a deployment of the flow on the Prefect API in PREFECT_API_URL, for a process worker.

    A fixed run directory (default runs/<name>) makes repeated runs reuse every finished stage.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.schedules import Cron

    from distill.config import PROJECT_ROOT
    from flows.distill_flow import distill_flow

    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: start a server (`prefect server start`) and point PREFECT_API_URL at it")
    params = _deployment_params(config, run_dir, set, name)
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    dep_id = distill_flow.from_source(source=str(PROJECT_ROOT), entrypoint="flows/distill_flow.py:distill_flow").deploy(
        name=name, work_pool_name=pool, parameters=params, schedules=[Cron(cron, timezone="UTC", active=active)],
        build=False, push=False, print_next_steps=False, description="Seeds -> teacher -> filters -> student -> report")
    print(f"deployment distill/{name} ({dep_id}) on pool '{pool}', schedule '{cron}' {'active' if active else 'inactive'}")
    print(f"start a worker:  prefect worker start --pool {pool}")
    print(f"run it now:      prefect deployment run distill/{name}")


@app.command()
def serve(name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
          cron: Annotated[str, typer.Option(help="Cron schedule (UTC).")] = "0 3 * * *",
          active: Annotated[bool, typer.Option("--active", help="Activate the schedule (inactive by default).")] = False,
          config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Serve the flow from this process (no work pool or worker needed) until interrupted."""
    from prefect.schedules import Cron

    from flows.distill_flow import distill_flow

    params = _deployment_params(config, run_dir, set, name)
    distill_flow.serve(name=name, parameters=params, schedules=[Cron(cron, timezone="UTC", active=active)])


@app.command("config")
def show_config():
    """List every config field with its default and help text."""
    t = Table("field", "default", "help")
    for name, default, help_ in field_help():
        t.add_row(name, default, help_)
    Console().print(t)


@app.command("filters")
def list_filters():
    """List registered filters and their docs."""
    from distill.filters import registered_filters

    for name, fn in sorted(registered_filters().items()):
        print(f"{name}: {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
