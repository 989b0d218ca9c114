"""`distill`: one command per stage plus `run` (the whole Prefect flow).

Every stage command takes --config, --run-dir and --set key.path=value. Without --run-dir, `run` and
`generate` start a new runs/<timestamp>/ and the other stages use the newest run. A run directory
remembers its config, so a stage re-run on it needs no --config.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from distill.config import ConfigError, field_help
from distill.io import DataError

app = typer.Typer(add_completion=False, no_args_is_help=False, help=__doc__, pretty_exceptions_enable=False)
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="YAML config (default: the run's saved config, else configs/default.yaml).")]
RunDirOpt = Annotated[Optional[Path], typer.Option(
    "--run-dir", "-r", help="Run directory (default: newest under runs/, or a new one).")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Print the planned teacher requests, tokens and cost; call nothing, write nothing.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the stages of a run made with another config, with this one.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a config field: key.path=value (repeatable).")]


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _setup(config: Path | None, run_dir: Path | None, overrides: list[str] | None, *, new: bool,
           stages: tuple[str, ...] = (), force: bool = False):
    """The run context: the run directory resolved, the config loaded and checked, then saved there.

    `new` stages (generate, run) define the run and always save its config; later single stages
    save only an explicit --config, so `evaluate --set eval.path=...` leaves the run's config alone.
    """
    from distill.rundir import RunDir, RunDirError
    from distill.stages.context import prepare_run
    from distill.teacher import TeacherError

    if run_dir is None:
        rd = None if new else RunDir.newest()  # a new one is made once the inputs are checked
        if rd is None and not new:
            _fail("no run directory under runs/: pass --run-dir or run `distill generate` first")
    else:
        rd = RunDir(run_dir)
    try:
        return prepare_run(config, rd, overrides or [], save=new or config is not None, stages=stages, force=force)
    except (ConfigError, DataError, TeacherError, FileNotFoundError, RunDirError) as e:
        _fail(str(e))


def _guard(fn, ctx):
    """Run one stage on the context; its expected failures become one line and exit 2."""
    from distill.rundir import RunDirError
    from distill.teacher import TeacherError

    try:
        with ctx:
            return fn(ctx)
    except (ConfigError, DataError, TeacherError, FileNotFoundError, RunDirError) as e:
        _fail(str(e))


def _dry_run(config: Path | None, run_dir: Path | None, overrides: list[str] | None) -> None:
    from distill.stages.generate import dry_run_plan

    try:
        plan = dry_run_plan(config, run_dir, overrides or [])
    except (ConfigError, DataError) as e:
        _fail(str(e))
    t = Table("planned", "value", title="dry run: nothing was sent to the teacher")
    for k, v in plan.items():
        t.add_row(k, str(v))
    Console().print(t)


@app.command()
def generate(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None, dry_run: DryRunOpt = False,
             force: ForceOpt = False):
    """Seed expansion + teacher answers -> data/generated.jsonl (resumable; finished requests are never re-sent)."""
    from distill.stages import generate as stage

    if dry_run:
        return _dry_run(config, run_dir, set)
    ctx = _setup(config, run_dir, set, new=True, stages=("generate",), force=force)
    stats = _guard(stage.run, ctx)
    last = stats.last
    console.print(f"generated {stats.counts.rows} rows in {ctx.run}: {last.requests_sent} teacher requests sent, "
                  f"{last['cache_hits']} reused from the store, {last['failed']} failed")
    if stats.counts.cut_short:
        console.print(f"[yellow]cut short:[/yellow] {stats.counts.cut_short}; {last.skipped} requests not sent")


@app.command("filter")
def filter_(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None, force: ForceOpt = False):
    """Run the filter stages -> data/train.jsonl, data/dropped.jsonl (ledger), dataset/ (parquet + card)."""
    from distill.report import filter_rows
    from distill.stages import filter as stage

    ctx = _setup(config, run_dir, set, new=False, stages=("filter",), force=force)
    stats = _guard(stage.run, ctx)
    t = Table("stage", "in", "kept", "dropped", "top reasons", title=f"filters ({ctx.run})")
    for r in filter_rows(stats.stages):
        t.add_row(*(str(v) for v in r.values()))
    Console().print(t)
    console.print(f"kept {stats.kept} of {stats.generated} rows -> {ctx.run.train}")


@app.command()
def train(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Fine-tune the student on data/train.jsonl with TRL -> student/ (merged, safetensors)."""
    from distill.stages import train as stage

    ctx = _setup(config, run_dir, set, new=False, stages=("train",))
    stats = _guard(stage.run, ctx)
    if stats.rank is not None:  # another process of `accelerate launch` writes the student
        return
    console.print(f"student saved to {stats.output_dir} (loss {stats.first_loss:.3f} -> {stats.last_loss:.3f})")


@app.command()
def evaluate(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Every model answers the eval set through the same harness -> eval/<eval-file>/<model>.jsonl + summary.json."""
    from distill.stages import evaluate as stage

    ctx = _setup(config, run_dir, set, new=False, stages=("evaluate",))
    res = _guard(stage.run, ctx)
    for name, m in res.models.items():
        console.print(f"{name}: {m.metrics}")


@app.command()
def report(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """report.json, report.md and frontier.png from a finished run directory."""
    from distill.report.console import show_report
    from distill.stages import report as stage

    ctx = _setup(config, run_dir, set, new=False)
    show_report(_guard(stage.run, ctx), ctx.run.report_md)


@app.command()
def run(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None, dry_run: DryRunOpt = False,
        force: ForceOpt = False):
    """The whole distillation path as one Prefect flow: generate -> filter -> train -> evaluate -> report."""
    if dry_run:
        return _dry_run(config, run_dir, set)
    from distill.stages.context import ALL_STAGES

    ctx = _setup(config, run_dir, set, new=True, stages=ALL_STAGES, force=force)
    rd, ep = ctx.run, ctx.cfg.teacher.endpoint
    if ep.api_key is not None:
        # the flow re-reads the saved config, which never holds the key; hand it over through the
        # environment rather than as a flow parameter (Prefect stores parameters in its database)
        os.environ[ep.api_key_env] = ep.api_key.get_secret_value()
    from distill.flow import distill_flow, use_local_prefect
    from distill.rundir import RunDirError
    from distill.teacher import TeacherError

    use_local_prefect(rd)
    try:
        # the flow picks up this prepared context (same process, same saved config): no second preflight
        distill_flow(config_path=str(rd.config), run_dir=str(rd.root))
    except (ConfigError, DataError, RunDirError, TeacherError) as e:
        _fail(str(e))
    finally:
        ctx.close()
    from distill.io import read_json
    from distill.report.console import show_report

    show_report(read_json(rd.report_json), rd.report_md)


def _deployment_params(config: Path | None, run_dir: Path | None, overrides: list[str] | None, name: str) -> dict:
    from distill.flow import deployment_parameters

    try:  # fail here, not at 3 a.m. in the worker
        params, secrets = deployment_parameters(config, run_dir, overrides or [], name)
    except (ConfigError, ValueError) as e:
        _fail(str(e))
    # Prefect stores parameters in its database: a key given with --set travels by the environment
    os.environ.update(secrets)
    for var in secrets:
        console.print(f"the teacher's key is not stored in the deployment: a worker reads it from ${var}", highlight=False)
    return params


@app.command()
def deploy(name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
           pool: Annotated[str, typer.Option(help="Process work pool (created if missing).")] = "distill",
           cron: Annotated[str, typer.Option(help="Cron schedule (UTC).")] = "0 3 * * *",
           active: Annotated[bool, typer.Option("--active", help="Activate the schedule (inactive by default).")] = False,
           config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Create (or update) a deployment of the flow on the Prefect API in PREFECT_API_URL, for a process worker.

    A fixed run directory (default runs/<name>) makes repeated runs reuse every finished stage.
    """
    from distill.flow import create_deployment

    if not os.environ.get("PREFECT_API_URL"):
        _fail("PREFECT_API_URL is not set: start a server (`prefect server start`) and point PREFECT_API_URL at it")
    dep_id = create_deployment(name, pool, cron, active, _deployment_params(config, run_dir, set, name))
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

    from distill.flow import distill_flow

    params = _deployment_params(config, run_dir, set, name)
    distill_flow.serve(name=name, parameters=params, schedules=[Cron(cron, timezone="UTC", active=active)])


@app.command()
def doctor(run_dir: RunDirOpt = None, fix: Annotated[bool, typer.Option(
        "--fix", help="Move damaged log lines (and damaged whole files) aside to <file>.damaged.")] = False):
    """Check a run directory's files line by line; with --fix, set damaged lines aside so the run can go on."""
    from distill.rundir import RunDir, RunDirError
    from distill.stages.doctor import examine, set_aside

    rd = RunDir(run_dir) if run_dir else RunDir.newest()
    if rd is None or not rd.config.exists():
        _fail(f"{rd or 'runs/'}: not a run directory (no config.yaml)")
    damage = examine(rd)
    try:
        lines = set_aside(rd, damage) if fix else list(map(str, damage))
    except RunDirError as e:
        _fail(str(e))
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"{len(damage)} problem(s) in {rd}" + ("" if fix or not damage else "; `distill doctor --fix` sets them aside"))
    raise typer.Exit(1 if damage and not fix else 0)


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


@app.command("init")
def init(name: Annotated[str, typer.Argument(help="Task name: the folder ./NAME and the config ./NAME.yaml.")],
         kind: Annotated[str, typer.Option(help="classification, extraction or generation.")] = "classification"):
    """Start your own task: a task folder (task.yaml, templates, placeholder seeds and eval rows) and a config."""
    from distill.tasks.new import new_task

    try:
        folder, config = new_task(name, kind, Path.cwd())
    except ConfigError as e:
        _fail(str(e))
    console.print(f"wrote {folder}/ and {config}; edit the seeds, eval set and task.yaml there, then "
                  f"`distill run --config {config.name} --dry-run` and `distill run --config {config.name}`", highlight=False)


@app.command("tasks")
def list_tasks(fields: Annotated[bool, typer.Option("--fields", help="List the fields of task.yaml instead.")] = False):
    """List the tasks a config can name (built in, registered, installed entry points), or task.yaml's fields."""
    from distill.tasks import TaskSpec, known_tasks

    if fields:
        t = Table("task.yaml field", "default", "help")
        for row in field_help(TaskSpec):
            t.add_row(*row)
        return Console().print(t)
    for name, where in sorted(known_tasks().items()):
        print(f"{name}: {where}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
