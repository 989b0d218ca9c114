"""The run context: everything a stage needs, built once per run and handed forward.

`prepare_run` loads the config, runs preflight (every check that can fail before work starts) and
only then creates the run directory and saves the config. The context it returns holds the config,
the run directory, the task, the seed and eval rows, the teacher's fixed few-shot examples, and the
teacher itself, opened on first use and kept open until the context closes (so a local server
starts once for the whole run).
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
from contextlib import ExitStack
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import distill
from distill.config import Config, ConfigError, config_changes, load_config, read_saved_config, save_config
from distill.io import DataError, Examples
from distill.rundir import RUNS, RunDir
from distill.stages.preflight import preflight
from distill.stages.prompt_examples import varied
from distill.tasks import Task
from distill.teacher import Teacher, open_teacher

ALL_STAGES = ("generate", "filter", "train", "evaluate", "report")


@dataclass
class RunContext:
    """One run, opened once by whoever starts it (a CLI command, a deployment's flow run) and closed by
    it. While it is open (`with ctx:`), the flow's stage tasks find it by its key (`current`)."""

    cfg: Config
    dir: RunDir
    task: Task
    seeds: Examples
    eval_rows: Examples  # the headline eval set
    eval_sets: dict[str, Examples] = field(default_factory=dict)  # the sets beside it (eval.sets)
    # students made outside this run (a multi-task run's merged and joint ones): name -> folder; evaluated
    # beside the run's own, each with its paired difference to it
    also_students: dict[str, Path] = field(default_factory=dict)
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)
    _teacher: Teacher | None = field(default=None, repr=False)
    _token: Token | None = field(default=None, repr=False)

    @cached_property
    def shots(self) -> list[dict]:
        return few_shot_examples(self.cfg, self.seeds, self.task)

    @cached_property
    def prompt_shots(self) -> list[dict]:
        """The k-shot examples of the teacher's few-shot prompt even when the teacher was LoRA-adapted
        (the few-shot baseline shows them to the base student)."""
        return few_shot_examples(self.cfg, self.seeds, self.task, prompting=True)

    @cached_property
    def key(self) -> str:
        """What a stage's output depends on: the config (secrets left out), the run directory, and the
        fingerprint of the data, the task folder, the plugins and the library code. Prefect caches
        stages on it, and the flow's tasks find this context by it."""
        also = {k: [str(Path(v).resolve()), _made_at(Path(v))] for k, v in self.also_students.items()}
        blob = json.dumps([self.cfg.redacted(), str(self.dir.root.resolve()), fingerprint(self), also], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    @property
    def seeds_path(self) -> Path:
        return self.seeds.path

    @property
    def eval_path(self) -> Path:
        return self.eval_rows.path

    @property
    def all_eval_rows(self) -> list[dict]:
        """Every eval set's rows: what generation and the filters keep away from the teacher and the data."""
        return [*self.eval_rows, *(r for rows in self.eval_sets.values() for r in rows)]

    def teacher(self) -> Teacher:
        """The teacher, started on first use (a local server lives until the context closes)."""
        if self._teacher is None:
            self._teacher = self._stack.enter_context(open_teacher(self.cfg, self.dir))
        return self._teacher

    def close(self) -> None:
        self._stack.close()
        self._teacher = None
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    def __enter__(self) -> "RunContext":
        if self._token is None:
            self._token = _current.set(self)
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# The open run of this thread of control (the flow's stage tasks run in the flow's own): the tasks take
# the run's key, not the context (Prefect records task inputs and ships shards to Dask workers; a
# context holds an open teacher).
_current: ContextVar[RunContext | None] = ContextVar("distill_run", default=None)


def current(key: str) -> RunContext:
    """The open run with this key (a stage task's way to its context)."""
    ctx = _current.get()
    if ctx is None or ctx.key != key:
        raise RuntimeError(f"no open run with key {key}: open one with `with prepare_run(...) as ctx:`")
    return ctx


def _made_at(student: Path) -> int | None:
    """When a student made outside the run was written (a remade one is evaluated again)."""
    f = student / "config.json"
    return f.stat().st_mtime_ns if f.exists() else None


def fingerprint(ctx: RunContext) -> str:
    """Hash of the seed and eval data, every file of the task folder (templates, task.yaml, its Python),
    the plugin modules the config names, and the library's code."""
    h = hashlib.sha256()
    files = [ctx.seeds_path, *ctx.eval_rows.files, *(f for rows in ctx.eval_sets.values() for f in rows.files),
             *ctx.task.files(), *plugin_files(ctx.cfg)]
    files += sorted(Path(distill.__file__).parent.rglob("*.py"))
    for f in files:
        h.update(str(f).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def plugin_files(cfg: Config) -> list[Path]:
    """The source files of the plugin modules (a package: all of its .py files), imported by preflight."""
    out = []
    for name in cfg.plugins:
        mod = sys.modules.get(name)
        if mod is None or not getattr(mod, "__file__", None):
            continue
        root = Path(mod.__file__)
        out += sorted(root.parent.rglob("*.py")) if root.name == "__init__.py" else [root]
    return out


def prepare_run(config: str | Path | None, run_dir: Path | RunDir | None, overrides: list[str], *, save: bool = True,
                stages: tuple[str, ...] = (), force: bool = False, plan_only: bool = False,
                also_students: dict[str, Path] | None = None) -> RunContext:
    """Load the config (the run's own saved one when none is given), check every input, then save it.

    Inputs are checked before anything is written, so bad input leaves no half-made run directory
    (run_dir None = a new runs/<timestamp>, created only then). With save=False (a single later
    stage, e.g. evaluating another file) the overrides apply to this invocation only and the run
    keeps the config it was made with. A run is never silently redefined: saving a config that differs
    from the run's own stops with the changed keys, unless `force` (the stages then start afresh:
    their history in stats/ goes; the request store stays, keyed by request, so nothing is resent).
    plan_only (--dry-run): every input checked, nothing created or written; the context's directory
    may not exist. also_students: students made elsewhere that the evaluation compares with the run's own.
    """
    run = None if run_dir is None else run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    if run is not None and config is None and run.config.exists():
        config = run.config
    cfg = load_config(config, overrides)
    inputs = preflight(cfg, stages)
    if plan_only:
        return RunContext(cfg=cfg, dir=run or RunDir(RUNS / "(dry run)"), task=inputs.task, seeds=inputs.seeds,
                          eval_rows=inputs.eval_rows, eval_sets=inputs.eval_sets)
    if not save and run is not None and not run.config.exists():
        raise DataError(f"{run}: not a run directory (no config.yaml): start one with `distill generate` or "
                        "`distill run`, or pass --config")
    run = run or RunDir.new()
    if save and run.config.exists() and (changes := config_changes(read_saved_config(run.config), cfg.redacted())):
        if not force:
            raise ConfigError(f"{run}: made with another config ({'; '.join(changes[:4])}"
                              f"{f'; {len(changes) - 4} more' if len(changes) > 4 else ''}): leave out --config/--set "
                              "to use the run's own, use another --run-dir, or pass --force to redo its stages with this one")
        with run.lock():
            for stage in stages:
                run.stats(stage).unlink(missing_ok=True)
    if save or not run.config.exists():
        with run.lock():  # not while another process runs on it
            save_config(cfg, run.config)
    return RunContext(cfg=cfg, dir=run, task=inputs.task, seeds=inputs.seeds, eval_rows=inputs.eval_rows,
                      eval_sets=inputs.eval_sets, also_students=dict(also_students or {}))


def writes(stage):
    """A stage that writes to the run directory holds its lock while it runs (RunDirInUse if another
    process holds it), so two processes never append the same requests or rewrite each other's files."""
    @functools.wraps(stage)
    def locked(ctx: RunContext, *args, **kwargs):
        with ctx.dir.lock():
            return stage(ctx, *args, **kwargs)
    return locked


def few_shot_examples(cfg: Config, seeds: list[dict], task: Task | None = None, prompting: bool = False) -> list[dict]:
    """The teacher's fixed few-shot seeds: varied kinds (error types, labels), at most one unchanged.

    Fixed (not per-row) so every answer prompt shares one prefix that the server can cache, and so
    the evaluation harness can rebuild exactly the teacher that labelled the data.
    """
    if cfg.teacher.adaptation.method == "lora" and not prompting:
        return []  # the LoRA-adapted teacher learnt the task from the seeds; it is prompted zero-shot
    shots, unchanged = [], 0
    for s in varied(list(seeds), f"{cfg.seed}:shots", task):  # one of each kind (error type, label) first
        same = s["input"] == s["output"]
        if same and unchanged >= 1:
            continue
        shots.append(s)
        unchanged += same
        if len(shots) == cfg.teacher.adaptation.few_shot:
            break
    return shots
