"""Scheduling the flow on a Prefect server: deploy (for a work pool) and serve-flow (from this process)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from distill.cli.common import ConfigOpt, RunDirOpt, SetOpt, app, console, fail
from distill.config import ConfigError


def _deployment_params(config: Path | None, run_dir: Path | None, overrides: list[str] | None, name: str,
                       *, serve: bool = False) -> dict:
    from distill.config import load_config
    from distill.flow import deployment_parameters

    try:  # fail here, not at 3 a.m. in the worker
        params, key_left_out = deployment_parameters(config, run_dir, overrides or [], name)
    except (ConfigError, ValueError) as e:
        fail(str(e))
    if key_left_out:
        var = load_config(config, overrides or []).teacher.endpoint.api_key_env
        if serve:  # the flow runs in processes this one starts: the key must already be in their environment
            fail(f"teacher.api_key is never stored in a deployment: export {var} before `distill serve-flow` instead")
        console.print(f"the teacher's key is not stored in the deployment: a worker reads it from ${var}", highlight=False)
    return params


def _check_api(url: str) -> None:
    """One line, before the config is read or anything is created, when the Prefect API does not answer."""
    import httpx

    from distill.text import scrub

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        fail(scrub(f"PREFECT_API_URL {url}: the Prefect API does not answer ({type(e).__name__}: {e}); "
                   "start it with `prefect server start`"))


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
        fail("PREFECT_API_URL is not set: start a server (`prefect server start`) and point PREFECT_API_URL at it")
    _check_api(os.environ["PREFECT_API_URL"])
    dep_id = create_deployment(name, pool, cron, active, _deployment_params(config, run_dir, set, name))
    print(f"deployment distill/{name} ({dep_id}) on pool '{pool}', schedule '{cron}' {'active' if active else 'inactive'}")
    print(f"start a worker:  prefect worker start --pool {pool}")
    print(f"run it now:      prefect deployment run distill/{name}")


@app.command("serve-flow")
def serve_flow(name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
               cron: Annotated[str, typer.Option(help="Cron schedule (UTC).")] = "0 3 * * *",
               active: Annotated[bool, typer.Option("--active", help="Activate the schedule (inactive by default).")] = False,
               config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Serve the Prefect flow from this process on a schedule (no work pool or worker needed) until interrupted.
    (To serve the distilled model itself, see `distill serve-model`.)"""
    from prefect.schedules import Cron

    from distill.flow import distill_flow

    params = _deployment_params(config, run_dir, set, name, serve=True)
    distill_flow.serve(name=name, parameters=params, schedules=[Cron(cron, timezone="UTC", active=active)])


@app.command("serve", hidden=True)
def serve(name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly",
          cron: Annotated[str, typer.Option(help="Cron schedule (UTC).")] = "0 3 * * *",
          active: Annotated[bool, typer.Option("--active", help="Activate the schedule (inactive by default).")] = False,
          config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Old name of `serve-flow` (it serves the Prefect flow, not a model: see `serve-model`)."""
    console.print("notice: `distill serve` is now `distill serve-flow` (it serves the Prefect flow); "
                  "`distill serve-model` serves the distilled student", highlight=False, soft_wrap=True)
    serve_flow(name, cron, active, config, run_dir, set)
