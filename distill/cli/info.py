"""Looking around: doctor, view, config, filters, init, tasks."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from distill.cli.common import RunDirOpt, app, console, fail
from distill.config import ConfigError, field_help


@app.command()
def doctor(run_dir: RunDirOpt = None, fix: Annotated[bool, typer.Option(
        "--fix", help="Move damaged log lines (and damaged whole files) aside to <file>.damaged.")] = False):
    """Check a run directory's files line by line; with --fix, set damaged lines aside so the run can go on."""
    from distill.rundir import RunDir, RunDirError
    from distill.stages.doctor import examine, set_aside

    rd = RunDir(run_dir) if run_dir else RunDir.newest()
    if rd is None or not rd.config.exists():
        fail(f"{rd or 'runs/'}: not a run directory (no config.yaml)")
    damage = examine(rd)
    try:
        lines = set_aside(rd, damage) if fix else list(map(str, damage))
    except RunDirError as e:
        fail(str(e))
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"{len(damage)} problem(s) in {rd}" + ("" if fix or not damage else "; `distill doctor --fix` sets them aside"))
    raise typer.Exit(1 if damage and not fix else 0)


@app.command()
def view(run: Annotated[Optional[Path], typer.Argument(help="Run directory (default: the newest under runs/).")] = None):
    """Open a run's report.html in the browser; print its path (all there is to do without a browser)."""
    import webbrowser

    from distill.rundir import RunDir

    rd = RunDir(run) if run else RunDir.newest()
    if rd is None or not rd.report_html.exists():
        fail(f"{rd.report_html if rd else 'runs/'}: no report.html (run `distill report` first)")
    print(rd.report_html)  # stdout: the one thing a script wants from this command
    try:
        webbrowser.open(rd.report_html.resolve().as_uri())
    except webbrowser.Error:
        pass  # no browser here: the path above is the way to it


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
        fail(str(e))
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
