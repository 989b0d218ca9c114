"""The stage commands: generate, filter, train, evaluate, report, and run (all of them as one Prefect flow)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from distill.cli.common import ConfigOpt, DryRunOpt, ForceOpt, RunDirOpt, SetOpt, app, console, fail, guard, setup, show_dry_run
from distill.config import ConfigError
from distill.io import DataError


@app.command()
def generate(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None, dry_run: DryRunOpt = False,
             force: ForceOpt = False):
    """Seed expansion + teacher answers -> data/generated.jsonl (resumable; finished requests are never re-sent)."""
    from distill.stages import adapt
    from distill.stages import generate as stage

    if dry_run:
        return show_dry_run(config, run_dir, set)
    ctx = setup(config, run_dir, set, new=True, stages=("generate",), force=force)
    stats = guard(lambda c: (adapt.run(c), stage.run(c))[1], ctx)  # the teacher adapted first (no-op for few-shot)
    last = stats.last
    console.print(f"generated {stats.counts.rows} rows in {ctx.dir}: {last.requests_sent} teacher requests sent, "
                  f"{last.cache_hits} reused from the store, {last.failed} failed")
    if stats.counts.cut_short:
        console.print(f"[yellow]cut short:[/yellow] {stats.counts.cut_short}; {last.skipped} requests not sent")


@app.command("filter")
def filter_(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None, force: ForceOpt = False):
    """Run the filter stages -> data/train.jsonl, data/dropped.jsonl (ledger), dataset/ (parquet + card)."""
    from distill.report import filter_rows
    from distill.stages import filter as stage

    ctx = setup(config, run_dir, set, new=False, stages=("filter",), force=force)
    stats = guard(stage.run, ctx)
    t = Table("stage", "in", "kept", "dropped", "top reasons", title=f"filters ({ctx.dir})")
    for r in filter_rows(stats.stages):
        t.add_row(*(str(v) for v in r.values()))
    Console().print(t)
    console.print(f"kept {stats.kept} of {stats.generated} rows -> {ctx.dir.train}")


@app.command()
def train(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Fine-tune the student on data/train.jsonl with TRL -> student/ (merged, safetensors)."""
    from distill.stages import train as stage

    ctx = setup(config, run_dir, set, new=False, stages=("train",))
    stats = guard(stage.run, ctx)
    if stats.rank is not None:  # another process of `accelerate launch` writes the student
        return
    console.print(f"student saved to {stats.output_dir} (loss {stats.first_loss:.3f} -> {stats.last_loss:.3f})")


@app.command()
def evaluate(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Every model answers the eval set through the same harness -> eval/<eval-file>/<model>.jsonl + summary.json."""
    from distill.stages import evaluate as stage

    ctx = setup(config, run_dir, set, new=False, stages=("evaluate",))
    res = guard(stage.run, ctx)
    for name, m in res.models.items():
        console.print(f"{name}: {m.metrics}")


@app.command()
def report(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """report.json, report.md and frontier.png from a finished run directory."""
    from distill.report.console import show_report
    from distill.stages import report as stage

    ctx = setup(config, run_dir, set, new=False)
    show_report(guard(stage.run, ctx), ctx.dir.report_md)


@app.command()
def run(config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None, dry_run: DryRunOpt = False,
        force: ForceOpt = False):
    """The whole distillation path as one Prefect flow: generate -> filter -> train -> evaluate -> report."""
    if dry_run:
        return show_dry_run(config, run_dir, set)
    from distill.stages.context import ALL_STAGES

    ctx = setup(config, run_dir, set, new=True, stages=ALL_STAGES, force=force)
    from distill.cli.prefect_home import quiet_tracebacks, use_local_prefect
    from distill.flow import distill_flow
    from distill.report.console import show_report
    from distill.rundir import RunDirError
    from distill.teacher import TeacherError

    use_local_prefect(ctx.dir)
    expected = (ConfigError, DataError, RunDirError, TeacherError)
    quiet_tracebacks(expected)  # they end in one line below; Prefect's log keeps the message
    with ctx:  # the flow runs on this open run (found by its key): one preflight, one teacher, the key in memory only
        try:
            report = distill_flow(run_dir=str(ctx.dir.root), run_key=ctx.key)
        except expected as e:
            fail(str(e))
    show_report(report, ctx.dir.report_md)


@app.command()
def multitask(config: Annotated[Path, typer.Option("--config", "-c", help="Multi-task YAML (e.g. configs/multitask.yaml).")],
              run_dir: RunDirOpt = None, set: SetOpt = None):
    """Several tasks into one student base three ways (separate, merged, joint), compared in one report."""
    from distill.cli.prefect_home import quiet_tracebacks, use_local_prefect
    from distill.config.multitask import load_multitask
    from distill.flow import multitask_flow
    from distill.rundir import MultiRunDir, RunDir, RunDirError
    from distill.stages.multitask import plan
    from distill.teacher import TeacherError

    expected = (ConfigError, DataError, RunDirError, TeacherError, FileNotFoundError)
    try:  # every task's inputs checked before a run directory is made
        mt, files = load_multitask(config, set or [])
        plan(mt, files, config)
    except expected as e:
        fail(str(e))
    rd = RunDir(run_dir) if run_dir else RunDir.new()
    use_local_prefect(rd)
    quiet_tracebacks(expected)
    try:
        rep = multitask_flow(config_path=str(config), run_dir=str(rd.root), overrides=set or [])
    except expected as e:
        fail(str(e))
    console.print(rep["verdict"].replace("**", ""), highlight=False, soft_wrap=True)
    console.print(f"report: {MultiRunDir(rd.root).report_md}", highlight=False)
