"""SIGKILL at named points in generation and filtering (DISTILL_FAULT, distill/faults.py) and during
training, then a re-run: the outputs equal an uninterrupted run's, and training resumes from its newest
complete checkpoint."""
import json
import os
import shutil
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


def _untimed(path, data: bytes):
    """A file's content, with a stats file's timings taken out (they differ from run to run)."""
    if not str(path).endswith(".json"):
        return data

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("wall_seconds", "seconds", "finished_at")}
        return [strip(v) for v in x] if isinstance(x, list) else x
    return strip(json.loads(data))


FILTER_OUTPUTS = ("data/train.jsonl", "data/dropped.jsonl", "dataset/data/train-00000-of-00001.parquet",
                  "dataset/README.md", "stats/filter.json")


@pytest.mark.parametrize("point", ["write:train.jsonl", "write:dropped.jsonl", "write:dataset", "write:filter.json"])
def test_a_kill_inside_each_write_of_filter_leaves_outputs_whole_or_absent_and_a_rerun_cleans_up(tmp_path, point):
    """The filter stage is SIGKILLed inside one of its writes (an injection point: the temp file or
    folder half written, not a random timer), then re-run.

    Breaks caught: writing an output in place instead of temp + rename (the killed write leaves a
    half file where the output belongs), and skipping the start-up removal of stale temp files (the
    killed writer's `.train.jsonl.*.tmp` outlives the re-run)."""
    with FakeOpenAI(fault_rate=0.1, seed=1) as fake:
        ctx, cfg, rd = opened(prepare_run(None, tmp_path / "run", [
            "teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model",
            "teacher.endpoint.backoff_base_s=0.01", "teacher.endpoint.max_retries=1", "generation.input_requests=40"]))
        generate.run(ctx)
    filtering.run(ctx)
    ctx.close()
    reference = {p: (rd / p).read_bytes() for p in FILTER_OUTPUTS}
    for p in FILTER_OUTPUTS[:2]:  # absent before; the stats and dataset stay from the reference run
        (rd / p).unlink()
    r = subprocess.run(distill_cmd("filter", "--run-dir", str(rd)), cwd=ROOT, env={**ENV, "DISTILL_FAULT": f"{point}=kill"},
                       capture_output=True)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    for p in FILTER_OUTPUTS:  # whole (the new or the old version) or absent, never half-written
        assert not (rd / p).exists() or _untimed(p, (rd / p).read_bytes()) == _untimed(p, reference[p]), f"{p}: half-written"
    temps = [p for p in rd.rglob(".*.tmp")]
    assert temps, f"the kill at {point} did not land inside a write"
    r = subprocess.run(distill_cmd("filter", "--run-dir", str(rd)), cwd=ROOT, env=ENV, capture_output=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p: _untimed(p, (rd / p).read_bytes()) for p in FILTER_OUTPUTS} == {p: _untimed(p, b) for p, b in reference.items()}
    assert not [p for p in temps if p.exists()], "a killed writer's temp file outlived the re-run"


def test_sigkill_during_training_resumes_from_the_newest_complete_checkpoint(tmp_path):
    """Training SIGKILLed after checkpoint-4, with a half-written checkpoint-6 beside it (its weights
    there, its trainer_state.json cut off mid-write, as a kill inside Trainer's save leaves it), then
    re-run.

    Breaks caught: taking a checkpoint whose trainer_state.json merely exists (the resume crashes on
    the torn JSON), starting over instead of resuming, and a resume that diverges from a straight run."""
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
    ckpts = rd / "checkpoints"
    def step_4_saved() -> bool:
        try:
            return json.loads((ckpts / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
        except (OSError, ValueError):
            return False

    assert _kill_after(["train", "--run-dir", str(rd)], 300, until=step_4_saved) == -signal.SIGKILL
    assert not (rd / "student").exists()
    for later in ckpts.glob("checkpoint-*"):
        if int(later.name.split("-")[1]) > 4:
            shutil.rmtree(later)
    shutil.copytree(ckpts / "checkpoint-4", ckpts / "checkpoint-6")
    state = ckpts / "checkpoint-6" / "trainer_state.json"
    state.write_bytes(state.read_bytes()[:60])
    r = subprocess.run(distill_cmd("train", "--run-dir", str(rd)), cwd=ROOT, env=ENV, capture_output=True)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = read_json(rd / "stats" / "train.json")
    assert stats["resumed_from"] and stats["resumed_from"].endswith("checkpoint-4")
    assert stats["steps"] == 8
    a = load_file(str(runs["straight"] / "student" / "model.safetensors"))
    b = load_file(str(rd / "student" / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), "resumed training diverged from a straight run"


def test_the_newest_complete_checkpoint_is_chosen(tmp_path):
    """Breaks caught: trusting a trainer_state.json that exists but is torn or from another step, and
    ordering checkpoints as text (checkpoint-9 after checkpoint-10)."""
    from distill.models.sft import last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for step, state in [(2, {"global_step": 2}), (9, {"global_step": 9}), (10, {"global_step": 10}),
                        (12, None), (14, "torn"), (16, {"global_step": 4}), (18, {"global_step": 18})]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
        if state == "torn":
            (d / "trainer_state.json").write_text('{"best_metric": null, "global_st')
        elif state is not None:
            (d / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-final").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-18")
    shutil.rmtree(tmp_path / "checkpoint-18")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")


# 17 and 95 fall in the inputs phase, 180 in the answers phase: the one that asks for logprobs
@pytest.mark.parametrize("point,logprobs", [(17, None), (95, None), (180, 3)])
def test_sigkill_at_a_request_then_rerun_equals_an_uninterrupted_run(tmp_path, point, logprobs):
    """Generation SIGKILLed just before its n-th request goes (in the inputs or the answers phase, with
    others in flight), then re-run; with teacher.logprobs, the answers' top-k logprobs are kept with them.

    Breaks caught: a store that records replies only at the end (the re-run resends everything), row
    ids that depend on arrival order (the rows differ from an uninterrupted run), a resumed run
    that appends after a torn last line, and logprobs asked for but not kept with the reply (or
    kept for another reply's tokens)."""
    with FakeOpenAI() as fake:
        sets = ["teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model",
                "generation.input_requests=60", "teacher.endpoint.max_concurrency=4"]
        if logprobs:
            sets.append(f"teacher.logprobs={logprobs}")
        straight_ctx, cfg, straight = opened(prepare_run(None, tmp_path / "straight", sets))
        generate.run(straight_ctx)
        reference = (straight / "data" / "generated.jsonl").read_bytes()
        straight_sent = len(fake.requests)

        rd = tmp_path / "killed"
        args = ["generate", "--run-dir", str(rd), *[a for s in sets for a in ("--set", s)]]
        r = subprocess.run(distill_cmd(*args), cwd=ROOT, env={**ENV, "DISTILL_FAULT": f"send@{point}=kill"},
                           capture_output=True)
        assert r.returncode == -signal.SIGKILL, "generation finished before the kill"
        before = len(fake.requests)
        assert point - 1 - 4 <= before - straight_sent <= point - 1
        r = subprocess.run(distill_cmd("generate", "--run-dir", str(rd)), cwd=ROOT, env=ENV, capture_output=True)
        assert r.returncode == 0, r.stderr[-2000:]
    assert (rd / "data" / "generated.jsonl").read_bytes() == reference
    records = [r for r in read_jsonl(rd / "data" / "requests.jsonl") if r.get("error") is None]
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "a finished request was sent twice"
    answers = [r for r in records if r["params"].get("logprobs")]
    answered = [g for g in read_jsonl(rd / "data" / "generated.jsonl")  # rows the dedups dropped are never asked
                if g["meta"].get("source") != "seed" and g["status"] != "unasked"]
    assert len(answers) == (len(answered) if logprobs else 0) and answered
    for r in answers:  # every answer's own tokens, each with its top-k
        assert "".join(r["logprobs"]["tokens"]) == r["text"] and {len(t) for t in r["logprobs"]["top"]} == {logprobs}
    # killed + resumed sent no more than one straight run, give or take the requests in flight at the kill
    killed_sent, resumed_sent = before - straight_sent, len(fake.requests) - before
    assert straight_sent <= killed_sent + resumed_sent <= straight_sent + 4
