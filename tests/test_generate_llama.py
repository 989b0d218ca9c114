"""Generation against the real llama.cpp server: resumable, never duplicating or losing a row."""
import os
import signal
import subprocess
import time

import pytest

from distill.io import read_json, read_jsonl
from distill.stages import filter as filtering
from distill.stages import generate
from distill.stages.context import prepare_run
from tests.conftest import ROOT, TINY, distill_cmd, opened

pytestmark = pytest.mark.slow


def _store_keys(run_dir):
    recs = read_jsonl(run_dir / "data" / "requests.jsonl")
    return [r["key"] for r in recs if r.get("error") is None]


def test_generate_rerun_sends_no_request_and_filter_accounts_for_every_row(tmp_path):
    """A second generate against the real local teacher sends nothing and rebuilds the same rows; filter
    accounts for every row (kept or dropped with a reason) and exports the kept ones.

    Breaks caught: a store not consulted on a re-run (requests sent again), row ids that change between
    runs, and a filter that loses rows (kept + dropped != generated). With teacher.logprobs, the real
    server's top-k per answer token is kept and lines up with the student's tokens for every kept
    teacher row (what logit_kd from stored logprobs trains on)."""
    # enough rows that some teacher answers survive the filters
    sets = TINY + ["teacher.logprobs=5", "generation.input_requests=12", "generation.inputs_per_request=4"]
    ctx, cfg, rd = opened(prepare_run(None, tmp_path / "run", sets))
    first = generate.run(ctx)
    assert first.last.requests_sent > 0 and first.last.completion_tokens > 0
    rows1 = read_jsonl(rd / "data" / "generated.jsonl")
    second = generate.run(ctx)
    assert second.last.requests_sent == 0
    # everything the first run asked (sent, or the same request twice in one run) comes from the store
    assert second.last.cache_hits == (first.last.requests_sent - first.last.retries
                                            + first.last.cache_hits)
    assert read_jsonl(rd / "data" / "generated.jsonl") == rows1
    assert len(second.invocations) == 2

    stats = filtering.run(ctx)
    kept = read_jsonl(rd / "data" / "train.jsonl")
    dropped = read_jsonl(rd / "data" / "dropped.jsonl")
    assert len(kept) + len(dropped) == len(rows1) == stats.generated
    assert sorted(r["id"] for r in kept + dropped) == sorted(r["id"] for r in rows1)
    assert all(d["reason"] for d in dropped)
    assert (rd / "dataset" / "README.md").exists()
    from datasets import load_dataset
    ds = load_dataset("parquet", data_files=str(rd / "dataset" / "data" / "*.parquet"), split="train")
    assert ds.num_rows == len(kept) and ds[0]["completion"][0]["role"] == "assistant"

    from distill.config import Student
    from distill.models.load import base_student_dir, load_model
    from distill.records import Row
    from distill.stages.kd_source import stored_topk
    from distill.stages.train import to_prompt_completion

    rows = [Row.from_dict(r) for r in kept]
    tok = load_model(base_student_dir(Student()))[1]
    topk = stored_topk(ctx, rows, to_prompt_completion(ctx.task, rows), tok)
    from_teacher = [r.meta.get("source") == "teacher" for r in rows]
    # every teacher row has its reply's top-k; a seed has one only where the teacher, asked the same input,
    # gave the seed's own answer (a generated input equal to a seed)
    assert any(from_teacher) and all(t is not None for t, f in zip(topk, from_teacher) if f)
    for t, row in zip(topk, rows):
        if t:  # the reply's own tokens spell the answer (even where the sampler split a word the tokenizer keeps whole)
            assert tok.decode(t["completion"][:-2]) == row.output and t["completion"][-2:] == [2, 198]
            assert len(t["ids"]) == len(t["completion"]) and t["ids"][-2:] == [[2], [198]]  # end of turn: itself
            assert all(len(ids) == 5 and lp == sorted(lp, reverse=True) for ids, lp in zip(t["ids"][:-2], t["logprobs"]))


def test_sigkill_during_generation_then_resume_loses_and_duplicates_nothing(tmp_path):
    """generate against the real local teacher, SIGKILLed just before its 10th request goes, then re-run.

    Breaks caught: a local teacher server that outlives its killed parent, replies kept only in memory
    (the re-run resends the finished ones: fewer cache hits), and rows lost or duplicated on resume."""
    rd = tmp_path / "run"
    args = [a for s in TINY + ["generation.input_requests=8"] for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(distill_cmd("generate", "--run-dir", str(rd), *args), cwd=ROOT,
                       env={**env, "DISTILL_FAULT": "send@10=kill"}, capture_output=True)
    assert r.returncode == -signal.SIGKILL, "generate finished before it could be killed"
    assert not (rd / "data" / "generated.jsonl").exists()
    done_before = len(_store_keys(rd))
    # the 8 Self-Instruct requests finished (the answers phase starts after them); the kill came as the
    # second answer request went, with the first in flight on the teacher's 8 slots
    assert done_before == 8

    # the teacher server dies with its parent (no orphan holding the port or the CPU)
    server_pid = int((rd / "logs" / "teacher_server.pid").read_text())
    for _ in range(200):
        if not os.path.exists(f"/proc/{server_pid}") or "zombie" in open(f"/proc/{server_pid}/status").read():
            break
        time.sleep(0.1)
    else:
        pytest.fail("the local teacher server outlived the killed generate process")

    r = subprocess.run(distill_cmd("generate", "--run-dir", str(rd)), cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    stats = read_json(rd / "stats" / "generate.json")
    keys = _store_keys(rd)
    assert len(keys) == len(set(keys)), "a finished request was sent twice"
    assert stats["last"]["cache_hits"] >= done_before
    rows = read_jsonl(rd / "data" / "generated.jsonl")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))

    # a third, fully cached run reproduces the same rows: nothing was missing
    with prepare_run(None, rd, [], save=False, stages=("generate",)) as ctx:  # the run's saved config
        again = generate.run(ctx)
    assert again.last.requests_sent == 0
    assert [r["id"] for r in read_jsonl(rd / "data" / "generated.jsonl")] == ids
    backed = {k for r in rows if r["meta"].get("source") == "teacher" and r["status"] == "ok"
              for k in r["meta"]["request_keys"]}
    assert backed <= set(keys), "a row is not backed by a stored teacher reply"
