"""SIGKILL at random points in generation, filtering and training, then a re-run: the outputs equal an
uninterrupted run's, and training resumes from its last complete checkpoint."""
import os
import random
import signal
import subprocess
import time

import pytest

from distill.io import read_json, read_jsonl, write_jsonl
from distill.stages import filter as filtering
from distill.stages import generate
from distill.stages.context import prepare_run
from distill.testing.fake_openai import FakeOpenAI
from tests.conftest import ROOT, distill_cmd, opened

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _kill_after(args, delay: float, until=None) -> int:
    proc = subprocess.Popen(distill_cmd(*args), cwd=ROOT, env={**ENV, **os.environ}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline and proc.poll() is None and not (until and until()):
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait()


def test_sigkill_during_filter_then_rerun_equals_an_uninterrupted_run(tmp_path):
    with FakeOpenAI(fault_rate=0.1, seed=1) as fake:
        ctx, cfg, rd = opened(prepare_run(None, tmp_path / "run", [
            "teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model",
            "teacher.endpoint.backoff_base_s=0.01", "teacher.endpoint.max_retries=1", "generation.input_requests=40"]))
        generate.run(ctx)
    filtering.run(ctx)
    outputs = ("data/train.jsonl", "data/dropped.jsonl", "dataset/data/train-00000-of-00001.parquet")
    reference = {p: (rd / p).read_bytes() for p in outputs}
    rng = random.Random(0)
    for _ in range(3):
        for p in outputs:
            (rd / p).unlink()
        _kill_after(["filter", "--run-dir", str(rd)], rng.uniform(0.5, 6.0))
        for p in outputs:  # whatever the kill left is whole or absent, never half-written
            if (rd / p).exists() and p.endswith(".jsonl"):
                assert (rd / p).read_bytes() == reference[p]
        r = subprocess.run(distill_cmd("filter", "--run-dir", str(rd)), cwd=ROOT, env=ENV, capture_output=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert {p: (rd / p).read_bytes() for p in outputs} == reference
        assert not list(rd.rglob("*.tmp")) and not list(rd.glob(".dataset.*"))


def test_sigkill_during_training_resumes_from_the_last_checkpoint(tmp_path):
    import torch
    from safetensors.torch import load_file

    seeds = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")
    rows = [{"id": s["id"], "input": s["input"], "output": s["output"], "reference": s["output"], "meta": {}}
            for s in seeds]
    sets = ["training.max_steps=8", "training.batch_size=4", "training.save_steps=2", "training.logging_steps=1"]
    runs = {}
    for name in ("straight", "killed"):
        ctx, _, rd = opened(prepare_run(None, tmp_path / name, sets))
        write_jsonl(rd / "data" / "train.jsonl", rows)
        runs[name] = rd
    r = subprocess.run(distill_cmd("train", "--run-dir", str(runs["straight"])), cwd=ROOT, env=ENV, capture_output=True)
    assert r.returncode == 0, r.stderr[-2000:]

    rd = runs["killed"]
    ckpt = rd / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    assert _kill_after(["train", "--run-dir", str(rd)], 300, until=ckpt.exists) == -signal.SIGKILL
    assert not (rd / "student").exists()
    r = subprocess.run(distill_cmd("train", "--run-dir", str(rd)), cwd=ROOT, env=ENV, capture_output=True)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = read_json(rd / "stats" / "train.json")
    assert stats["resumed_from"] and int(stats["resumed_from"].rsplit("-", 1)[1]) >= 4
    assert stats["steps"] == 8
    a = load_file(str(runs["straight"] / "student" / "model.safetensors"))
    b = load_file(str(rd / "student" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), "resumed training diverged from a straight run"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_during_generation_at_random_points_then_rerun_equals_an_uninterrupted_run(tmp_path, seed):
    with FakeOpenAI() as fake:
        sets = ["teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model",
                "generation.input_requests=60", "teacher.endpoint.max_concurrency=4"]
        straight_ctx, cfg, straight = opened(prepare_run(None, tmp_path / "straight", sets))
        generate.run(straight_ctx)
        reference = (straight / "data" / "generated.jsonl").read_bytes()
        straight_sent = len(fake.requests)

        rd = tmp_path / "killed"
        args = ["generate", "--run-dir", str(rd), *[a for s in sets for a in ("--set", s)]]
        store = rd / "data" / "requests.jsonl"
        point = random.Random(seed).randint(10, 200)  # of ~300 requests: in the inputs or the answers phase
        code = _kill_after(args, 120, until=lambda: store.exists() and store.read_bytes().count(b"\n") >= point)
        assert code == -signal.SIGKILL, "generation finished before the kill"
        before = len(fake.requests)
        r = subprocess.run(distill_cmd("generate", "--run-dir", str(rd)), cwd=ROOT, env=ENV, capture_output=True)
        assert r.returncode == 0, r.stderr[-2000:]
    assert (rd / "data" / "generated.jsonl").read_bytes() == reference
    keys = [r["key"] for r in read_jsonl(rd / "data" / "requests.jsonl") if r.get("error") is None]
    assert len(keys) == len(set(keys)), "a finished request was sent twice"
    # killed + resumed sent no more than one straight run, give or take the requests in flight at the kill
    killed_sent, resumed_sent = before - straight_sent, len(fake.requests) - before
    assert killed_sent + resumed_sent <= straight_sent + 4
