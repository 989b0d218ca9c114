"""`distill`: one command per stage plus `run` (the whole Prefect flow), `export` and `serve-model`.

Every stage command takes --config, --run-dir and --set key.path=value. Without --run-dir, `run` and
`generate` start a new runs/<timestamp>/ and the other stages use the newest run. A run directory
remembers its config, so a stage re-run on it needs no --config.
"""
from __future__ import annotations

import atexit
import gc
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from distill.config import ConfigError
from distill.io import DataError

# Registered before Prefect's handlers, so it runs after them. Interpreter shutdown garbage-collects
# what every module holds (tokenizer vocabularies, Prefect's models) several times: 3.4-3.6 s after a
# small `distill run`, 0.7-0.8 s with those objects frozen out of collection (the memory goes with the
# process; every output is already closed and fsync'd).
atexit.register(gc.freeze)

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


def fail(msg: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)  # [a, b] in it is text, not markup
    raise typer.Exit(code)


def setup(config: Path | None, run_dir: Path | None, overrides: list[str] | None, *, new: bool,
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
            fail("no run directory under runs/: pass --run-dir or run `distill generate` first")
    else:
        rd = RunDir(run_dir)
    try:
        return prepare_run(config, rd, overrides or [], save=new or config is not None, stages=stages, force=force)
    except (ConfigError, DataError, TeacherError, FileNotFoundError, RunDirError) as e:
        fail(str(e))


def guard(fn, ctx):
    """Run one stage on the context; its expected failures become one line and exit 2."""
    from distill.rundir import RunDirError
    from distill.teacher import TeacherError

    try:
        with ctx:
            return fn(ctx)
    except (ConfigError, DataError, TeacherError, FileNotFoundError, RunDirError) as e:
        fail(str(e))


def show_dry_run(config: Path | None, run_dir: Path | None, overrides: list[str] | None) -> None:
    from distill.stages.generate import dry_run_plan

    try:
        plan = dry_run_plan(config, run_dir, overrides or [])
    except (ConfigError, DataError) as e:
        fail(str(e))
    prompts = plan.pop("prompts", {})
    t = Table("planned", "value", title="dry run: nothing was sent to the teacher")
    for k, v in plan.items():
        t.add_row(k, str(v))
    out = Console()
    out.print(t)
    for what, messages in prompts.items():  # seeds are the user's text: shown as text, never as markup
        out.print(Panel(Text("\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)),
                        title=f"{what}, as the teacher would get it", title_align="left"))


