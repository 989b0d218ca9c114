"""The `distill` command line: every command module registers itself on the one typer app.

common.py (the app, shared options, one-line failures), stages.py (a command per stage and `run`),
flows.py (Prefect deployments), ship.py (export, serve-model), info.py (doctor, config, filters, init, tasks).
"""
from distill.cli import stages, ship, flows, info  # noqa: F401, I001  (registers the commands, listed in this order)
from distill.cli.common import app

__all__ = ["app"]
