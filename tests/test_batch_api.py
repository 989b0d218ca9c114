"""The Batch API backend end to end against a fake server with files and batches: rows identical to
the real-time backend's, expired batches finished in a new round, per-line errors retried or recorded,
and a crash between submit and download resumed by batch id without resubmitting."""
import os
import signal
import subprocess
import threading
import time

import pytest

from distill.io import read_json, read_jsonl
from distill.stages import generate
from distill.stages.context import prepare_run
from distill.teacher import TeacherFatal
from distill.testing.fake_openai import FakeOpenAI
from tests.conftest import ROOT, distill_cmd, opened

SETS = ["teacher.endpoint.launch_local=false", "teacher.model=gpt-4o-mini", "teacher.hosted=true",
        "teacher.batch.poll_interval_s=0.05", "generation.input_requests=12", "generation.inputs_per_request=3"]


def _prepare(fake, path, *extra):
    return prepare_run(None, path, [f"teacher.endpoint.base_url={fake.base_url}", *SETS, *extra], stages=("generate",))


def _rows(rd):
    return [(r["id"], r["input"], r["output"], r["status"]) for r in read_jsonl(rd / "data" / "generated.jsonl")]


def test_batch_rows_and_usage_match_the_realtime_backend_at_half_the_price(tmp_path):
    """Breaks caught: a line submitted twice, usage or rows that differ from the real-time backend's on the
    same requests, and the batch discount not applied."""
    with FakeOpenAI(models=["gpt-4o-mini"]) as fake:
        ctx, cfg, rd = opened(_prepare(fake, tmp_path / "realtime"))
        realtime = generate.run(ctx)
    with FakeOpenAI(models=["gpt-4o-mini"]) as fake:
        rd_b_ctx, cfg_b, rd_b = opened(_prepare(fake, tmp_path / "batch", "teacher.backend=openai_batch"))
        batch = generate.run(rd_b_ctx)
        assert not fake.requests, "the batch backend sent real-time requests"
        assert len(fake.batches) == 2  # one per generation phase
        assert len(fake.batch_lines) == len(set(fake.batch_lines))
    assert _rows(rd_b) == _rows(rd)
    for k in ("requests_sent", "prompt_tokens", "completion_tokens", "failed", "retries"):
        assert getattr(batch.totals, k) == getattr(realtime.totals, k), k
    assert batch.last.cost_rule.endswith("(batch)")
    # costs are stored rounded to the micro-dollar
    assert batch.totals.cost_usd == pytest.approx(realtime.totals.cost_usd / 2, abs=1e-6)
    # the store has the same records as the real-time one, plus the batch they came from
    recs = [r for r in read_jsonl(rd_b / "data" / "requests.jsonl")]
    assert recs and all(r["error"] is None and r["batch_id"].startswith("batch_") for r in recs)
    assert {"key", "model", "params", "messages", "text", "finish_reason", "usage"} <= set(recs[0])


def test_expired_batch_finishes_undone_requests_in_a_new_batch(tmp_path):
    """Breaks caught: an expired batch's undone lines lost (or the whole batch resubmitted: more repeats than
    the 8 undone ones), and a 400 retried like a 500."""
    with FakeOpenAI(models=["gpt-4o-mini"], batch_expire_after=5,
                    batch_line_status={1: 500, 2: 400}) as fake:
        ctx, cfg, rd = opened(_prepare(fake, tmp_path / "run", "teacher.backend=openai_batch"))
        stats = generate.run(ctx)
        statuses = [b["status"] for b in fake.batches.values()]
        lines = list(fake.batch_lines)
    assert statuses[0] == "expired" and "completed" in statuses[1:]
    journal = read_jsonl(rd / "data" / "batches.jsonl")
    first = next(e for e in journal if e["event"] == "collected")
    assert first["status"] == "expired" and first["lines"] == 12 and first["missing"] == 0  # 7 in the error file
    # undone (7 expired) and the 500 went into round 2; the 400 is not retryable and is recorded
    assert stats.last.retries == 8
    assert stats.last.errors == {"BatchLineError(batch_expired)": 7, "APIError(500)": 1, "APIError(400)": 1}
    assert stats.counts.failed_input_requests == 1
    failed = [r for r in read_jsonl(rd / "data" / "requests.jsonl") if r["error"]]
    assert len(failed) == 1 and failed[0]["error"].startswith("APIError(400)")
    # no request ran twice: the only repeats are the 8 resubmitted ones
    assert len(lines) - len(set(lines)) == 8


def test_crash_between_submit_and_download_resumes_by_batch_id(tmp_path):
    """SIGKILL while a submitted batch is still running, then a re-run.

    Break caught: a batch id kept only in memory (the re-run submits and pays for the same lines again)."""
    hold = threading.Event()
    with FakeOpenAI(models=["gpt-4o-mini"], batch_hold=hold) as fake:
        ctx, cfg, rd = opened(_prepare(fake, tmp_path / "run", "teacher.backend=openai_batch"))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(distill_cmd("generate", "--run-dir", str(rd)), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not fake.batches and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert fake.batches, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no batch"
        time.sleep(0.3)  # it is polling now
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert list(fake.batches) == ["batch_2"] and not (rd / "data" / "generated.jsonl").exists()
        submitted = list(fake.batch_lines)

        hold.set()
        r = subprocess.run(distill_cmd("generate", "--run-dir", str(rd)), cwd=ROOT, env=env, capture_output=True)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        # phase 1 was collected from the crashed run's batch, not submitted again; phase 2 got one batch
        assert len(fake.batches) == 2
        assert fake.batch_lines[: len(submitted)] == submitted
        assert len(fake.batch_lines) == len(set(fake.batch_lines))
    stats = read_json(rd / "stats" / "generate.json")
    assert stats["counts"]["failed_input_requests"] == 0 and stats["counts"]["teacher_rows_failed"] == 0
    assert stats["totals"]["requests_sent"] == len(fake.batch_lines)
    assert stats["counts"]["parsed_inputs"] == 36


def test_uploaded_but_unjournalled_batch_is_found_by_its_file(tmp_path):
    """The narrow window: the batch was created but the crash came before its id was journalled.

    Break caught: resuming only from journalled batch ids (the batch created just before the crash is
    submitted again)."""
    from distill.teacher.backends.openai_batch import BatchJournal

    hold = threading.Event()
    with FakeOpenAI(models=["gpt-4o-mini"], batch_hold=hold) as fake:
        ctx, cfg, rd = opened(_prepare(fake, tmp_path / "run", "teacher.backend=openai_batch", "teacher.batch.max_wait_s=0.2"))
        with pytest.raises(TeacherFatal, match=r"no usable row.*BatchStillRunning"):
            generate.run(ctx)  # gives up waiting: the batch stays open, and no row goes on to training
        assert len(fake.batches) == 1
        path = rd / "data" / "batches.jsonl"
        # rewrite the journal as if the crash came right after the upload
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                                if '"submitted"' not in line))
        journal = BatchJournal(rd / "data" / "batches.jsonl")
        assert not journal.open_batches() and journal.pending_files
        journal.close()
        hold.set()
        stats = generate.run(ctx)
        assert list(fake.batches)[0] == "batch_2" and len(fake.batch_lines) == len(set(fake.batch_lines))
    assert stats.counts.teacher_rows_failed == 0 and stats.counts.parsed_inputs == 36
    # the first invocation counted the batch's 12 requests as sent; collecting it later adds no more
    assert stats.totals.requests_sent == len(fake.batch_lines)
