"""The distillation path as one Prefect flow: seeds -> generate -> filter -> train -> evaluate -> report.

Each task calls one stage function of the `distill` library and nothing else. Runs with no Prefect
server (ephemeral API) or as a scheduled deployment on a real one (see prefect.yaml, `distill deploy`).

Stages are cached across flow runs: the key is the task's inputs (config, run directory, the
fingerprint of the seed/eval data and of the library code, and the upstream stage's result) plus the
task's source, and results persist in the run directory. Triggering a deployment again with the same
parameters therefore re-executes no finished stage; a changed seed file re-runs generation (whose
request store still spares every request already answered) and everything after it.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
from contextlib import contextmanager, nullcontext
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.filesystems import LocalFileSystem

from distill.config import Config, load_config
from distill.config.multitask import MultiTask, load_multitask
from distill.io import write_text_atomic
from distill.report import comparison_rows, filter_rows
from distill.report import multitask as mreport
from distill.rundir import MultiRunDir, RunDir
from distill.stages import adapt, evaluate, generate, multitask, report, rounds, train
from distill.stages import filter as filtering
from distill.stages.context import ALL_STAGES, RunContext, current, prepare_run
from distill.stages.shards import answer_shard, input_shard
from distill.teacher import TeacherFatal
from distill.text import has_credentials, scrub

# A stage's cache key: the run key (config, run directory, fingerprint of data, templates and code),
# the upstream stage's result and the task's source.
CACHE = INPUTS + TASK_SOURCE


# Shards are not cached by Prefect: the request store already answers every finished request, and
# the teacher's address (a part of their inputs) changes from run to run.
input_shard_task = task(name="generate-inputs-shard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)(input_shard)
answer_shard_task = task(name="generate-answers-shard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)(answer_shard)
SHARD_TASKS = {input_shard: input_shard_task, answer_shard: answer_shard_task}


def task_runner(cfg: Config):
    """The runner generation shards go to; None = run them in this process, one after another."""
    g = cfg.generation
    if g.task_runner == "sequential":
        return None
    from prefect_dask import DaskTaskRunner

    if g.dask_address:
        return DaskTaskRunner(address=g.dask_address)
    # Shards mostly wait on the teacher: one thread per worker process keeps each shard's event loop alone.
    return DaskTaskRunner(cluster_kwargs={"n_workers": g.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None,
                                          "silence_logs": logging.WARNING})


@contextmanager
def shard_mapper(cfg: Config):
    """map_shards for the library: every shard is a Prefect task run on the configured task runner,
    which is started once for both generation phases (a LocalCluster takes seconds to start)."""
    runner = task_runner(cfg)
    if runner is None:
        yield lambda fn, calls: [SHARD_TASKS[fn](*args) for args in calls]
        return

    def run(fn, calls):
        futures = [runner.submit(SHARD_TASKS[fn], parameters=inspect.signature(fn).bind(*args).arguments)
                   for args in calls]
        return [f.result() for f in futures]

    with runner:
        yield run


def transient(task, task_run, state) -> bool:
    """Retry a failed task unless the teacher cannot help (a retry would resend the same requests)."""
    return not isinstance(state.data, TeacherFatal)


@task(name="adapt", cache_policy=CACHE, log_prints=False)
def adapt_task(run_key: str) -> dict:
    return adapt.run(current(run_key))


@task(name="generate", cache_policy=CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=transient)
def generate_task(run_key: str) -> dict:
    ctx = current(run_key)
    with shard_mapper(ctx.cfg) if ctx.cfg.generation.shards > 1 else nullcontext() as map_shards:
        stats = generate.run(ctx, map_shards or generate.sequential)
    get_run_logger().info("generate: %s", stats.last.model_dump(include={"requests_sent", "cache_hits", "failed", "cost_usd"}))
    return stats.model_dump(mode="json")


@task(name="generation-round", cache_policy=CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=transient,
      log_prints=False)
def round_task(run_key: str, round_no: int, upstream: dict | None) -> dict:
    ctx = current(run_key)
    with shard_mapper(ctx.cfg) if ctx.cfg.generation.shards > 1 else nullcontext() as map_shards:
        stats = rounds.run(ctx, round_no, map_shards or generate.sequential)
    get_run_logger().info("round %d: the student missed %d of %d probe rows; %d rows added", round_no, stats.missed,
                          stats.probe_rows, stats.rows_added)
    return stats.model_dump(mode="json")


# datasets' fingerprints pickle functions with dill, which reads their disassembly by swapping sys.stdout;
# Prefect's print patch would send those hundreds of bytecode lines to the run's logs instead (and dill
# would find no globals): the stages that build datasets log through the run logger only
@task(name="filter", cache_policy=CACHE, retries=1, log_prints=False)
def filter_task(run_key: str, upstream: dict | None) -> dict:
    ctx = current(run_key)
    stats = filtering.run(ctx)
    get_run_logger().info("filter: kept %d of %d rows", stats.kept, stats.generated)
    return stats.model_dump(mode="json")


@task(name="train", cache_policy=CACHE, log_prints=False)
def train_task(run_key: str, upstream: dict | None) -> dict:
    ctx = current(run_key)
    stats = train.run(ctx)
    get_run_logger().info("train: %d steps, loss %.3f -> %.3f", stats.steps, stats.first_loss, stats.last_loss)
    return stats.model_dump(mode="json")


@task(name="evaluate", cache_policy=CACHE, retries=1, retry_delay_seconds=10)
def evaluate_task(run_key: str, upstream: dict | None) -> dict:
    ctx = current(run_key)
    res = evaluate.run(ctx)
    for name, m in res.models.items():
        get_run_logger().info("evaluate %s: %s", name, m.metrics)
    return res.model_dump(mode="json")


@task(name="report", cache_policy=CACHE, retries=1)
def report_task(run_key: str, upstream: dict | None) -> dict:
    ctx = current(run_key)
    return report.run(ctx)


def publish(rd: RunDir, filt: dict | None, rep: dict | None) -> None:
    """Artifacts belong to every flow run, cached or not, so they are made here and not in the tasks."""
    if filt:
        create_table_artifact(
            key="distill-data", table=filter_rows(filt["stages"]),
            description=f"Filter stages for {rd}: {filt['kept']} of {filt['generated']} rows kept",
        )
    if rep:
        create_table_artifact(key="distill-comparison", table=comparison_rows(rep),
                              description=f"Price-performance table for {rd}")
        _, markdown = report.views(rep, rd)
        create_markdown_artifact(key="distill-report", markdown=markdown, description=f"Report for {rd}")
        if rd.report_html.exists():  # a link: the page is one file on the machine that ran the flow
            create_link_artifact(key="distill-report-html", link=rd.report_html.resolve().as_uri(),
                                 link_text=rd.report_html.name, description=f"Every eval row, the funnel, the loss curve: {rd}")


@flow(name="distill", log_prints=True)
def distill_flow(config_path: str | None = None, run_dir: str | None = None, overrides: list[str] | None = None,
                 stages: list[str] = list(ALL_STAGES), force: bool = False, run_key: str | None = None) -> dict | None:
    """Run the chosen stages (all by default) on one run directory; returns the report (None without
    the report stage).

    `run_key` names a run its caller has open in this process (`distill run`): the flow uses it as it
    is. Otherwise (a deployment) the flow opens the run itself from the other parameters: a fixed
    run_dir makes repeated runs with the same parameters reuse every finished stage; without one, each
    run gets a new runs/<timestamp>/. A run directory made with another config is refused unless force
    (then its stages are redone with this one).
    """
    unknown = set(stages) - set(ALL_STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {ALL_STAGES}")
    if run_key is not None:
        return run_stages(current(run_key), stages).get("report")
    with prepare_run(config_path, run_dir and RunDir(Path(run_dir)), overrides or [], stages=tuple(stages),
                     force=force) as ctx:
        return run_stages(ctx, stages).get("report")


def run_stages(ctx: RunContext, stages: list[str], upstream: dict | None = None) -> dict[str, dict]:
    """The stage tasks in order, each given the run's key and its upstream's result (the first one
    `upstream`), under the run's lock (the whole flow is one writer: no other process writes between its
    stages); returns each stage's result. With generation.rounds > 1 each later round follows the filter
    stage and the filter stage runs again over every round's rows."""
    with ctx.dir.lock():
        # results live in the run directory; Prefect wants the storage block saved server-side first
        results_dir = ctx.dir.prefect_results.resolve()
        storage = LocalFileSystem(basepath=str(results_dir))
        storage.save(f"distill-results-{hashlib.sha256(str(results_dir).encode()).hexdigest()[:16]}", overwrite=True)
        opts = {"result_storage": storage, "persist_result": True, "result_serializer": "json"}
        steps = {"generate": generate_task, "filter": filter_task, "train": train_task,
                 "evaluate": evaluate_task, "report": report_task}
        results: dict[str, dict] = {}
        for name in ALL_STAGES:
            if name in stages:
                if name == "generate":  # the teacher adapted first (a no-op for few-shot prompting)
                    adapt_task.with_options(**opts)(ctx.key)
                fn = steps[name].with_options(**opts)
                upstream = results[name] = fn(ctx.key) if name == "generate" else fn(ctx.key, upstream)
                for round_no in range(2, ctx.cfg.generation.rounds + 1) if name == "filter" else ():
                    upstream = round_task.with_options(**opts)(ctx.key, round_no, upstream)  # the rows filtered again
                    upstream = results[name] = fn(ctx.key, upstream)
        publish(ctx.dir, results.get("filter"), results.get("report"))
    return results


@task(name="merge-adapters", cache_policy=NO_CACHE, log_prints=False)
def merge_task(mt: MultiTask, runs: list[multitask.TaskRun], root: MultiRunDir) -> dict[str, Path]:
    return multitask.merged_students(mt, runs, root)


@task(name="train-joint", cache_policy=NO_CACHE, log_prints=False)
def joint_task(mt: MultiTask, runs: list[multitask.TaskRun], root: MultiRunDir) -> tuple[Path, dict]:
    return multitask.joint_student(mt, runs, root)


@task(name="multitask-report", cache_policy=NO_CACHE)
def multitask_report_task(mt: MultiTask, runs: list[multitask.TaskRun], reps: dict, root: MultiRunDir,
                          joint: dict | None, students: dict[str, Path]) -> dict:
    return multitask.report(mt, runs, reps, root, joint, multitask.export_ggufs(students, runs, root))


@flow(name="distill-multitask", log_prints=True)
def multitask_flow(config_path: str, run_dir: str | None = None, overrides: list[str] | None = None) -> dict:
    """Several tasks into students of one base, three ways, in one report (configs/multitask.yaml).

    Every task's inputs are checked first; then each task runs generate, filter and train in its own run
    directory under tasks/<task>/ (the separate students); the merged students combine their adapters and
    the joint one trains on their kept rows; each task's evaluation then asks every way on its eval sets,
    and the report puts the tasks side by side with what serving each way costs.
    """
    source = Path(config_path)
    mt, files = load_multitask(source, overrides or [])
    runs = multitask.plan(mt, files, source)
    root = MultiRunDir(Path(run_dir) if run_dir else RunDir.new().root)
    with root.lock():  # the tasks' own run directories are locked by their stages
        write_text_atomic(root.config, multitask.saved(mt, files))
        for r in runs:
            r.dir = root.task(r.name)
        return multitask_stages(mt, runs, root)


def multitask_stages(mt: MultiTask, runs: list[multitask.TaskRun], root: MultiRunDir) -> dict:
    """Each task's data and own student, then the merged and joint students, then each task's evaluation of
    every way (upstream: its train stage), then the report."""
    first = ("generate", "filter", "train") if multitask.trains_separate(mt) else ("generate", "filter")
    upstream = {}
    for r in runs:
        with r.open(first) as ctx:
            upstream[r.name] = run_stages(ctx, list(first))[first[-1]]
    made = merge_task(mt, runs, root) if "merged" in mt.ways else {}
    joint = None
    if multitask.JOINT in mt.ways:
        made[multitask.JOINT], joint = joint_task(mt, runs, root)
    reps = {}
    for r in runs:
        with r.open(("evaluate", "report"), also_students=made) as ctx:
            reps[r.name] = run_stages(ctx, ["evaluate", "report"], upstream[r.name])["report"]
    rep = multitask_report_task(mt, runs, reps, root, joint, made)
    create_markdown_artifact(key="distill-multitask-report", markdown=mreport.markdown(rep),
                             description=f"Multi-task report for {root}")
    return rep


def deployment_parameters(config: Path | None, run_dir: Path | None, overrides: list[str], name: str) -> tuple[dict, bool]:
    """The flow's parameters for a deployment, checked now, and whether an API key was left out of them.

    Prefect stores parameters in its database and shows them in its UI, so an override of a secret
    field (`--set teacher.api_key=...`) is never among them: the process that runs the flow reads the
    key from teacher.endpoint.api_key_env in its own environment.
    """
    load_config(config, overrides)
    named = RunDir.named(name)
    for o in overrides:
        if has_credentials(o):  # a URL's user:pass@ would be stored like a key: not taken at all
            raise ValueError(f"--set {scrub(o)}: credentials in a URL (user:pass@) would be stored in the deployment's "
                             "parameters, readable from the Prefect API: put the URL in the config file the worker reads")
    public = [o for o in overrides if o.split("=", 1)[0].strip().split(".")[-1] != "api_key"]
    return {"config_path": str(Path(config).resolve()) if config else None,
            "run_dir": str(Path(run_dir or named.root).resolve()), "overrides": public}, len(public) < len(overrides)


def create_deployment(name: str, pool: str, cron: str, active: bool, params: dict):
    """A deployment of the flow on the Prefect API for a process worker (the pool is created if missing),
    runnable wherever `distill` is installed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.schedules import Cron

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    # the entrypoint is this module's path (distill.flow.distill_flow): the worker imports it from the
    # installed package, so no checkout, image or code storage is needed
    return distill_flow.deploy(
        name=name, work_pool_name=pool, parameters=params, schedules=[Cron(cron, timezone="UTC", active=active)],
        entrypoint_type=EntrypointType.MODULE_PATH, build=False, push=False, print_next_steps=False,
        description="Seeds -> teacher -> filters -> student -> report")
