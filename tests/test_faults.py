"""Generation against a misbehaving teacher: every row is kept, dropped with a reason, or failed;
nothing is lost or duplicated, budgets stop cleanly, and the API key never lands on disk."""
from pathlib import Path

import pytest

from distill.config import ConfigError
from distill.io import read_json, read_jsonl
from distill.stages import filter as filtering
from distill.stages import generate
from distill.stages.context import prepare_run
from distill.testing.fake_openai import FakeOpenAI, full_usage
from tests.conftest import opened


def _prepare(fake, tmp_path, *extra):
    return prepare_run(None, tmp_path / "run", [
        "teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model",
        "teacher.endpoint.backoff_base_s=0.01", "teacher.endpoint.timeout_s=0.5", "teacher.endpoint.max_concurrency=4",
        "generation.input_requests=30", "generation.inputs_per_request=4", *extra], stages=("generate",))


def _accounting(rd: Path, stats: dict) -> None:
    rows = read_jsonl(rd / "data" / "generated.jsonl")
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate row ids"
    c = stats.counts
    assert c.rows == len(rows) == c.seed_rows + c.parsed_inputs
    assert c.teacher_rows_ok + c.teacher_rows_failed + c.teacher_rows_unasked == c.parsed_inputs
    assert c.teacher_rows_unasked == sum(r["status"] == "unasked" and r["meta"]["source"] == "teacher" for r in rows)
    # over the run's life, every attempt either landed in the store, was retried, or failed for good
    store = read_jsonl(rd / "data" / "requests.jsonl")
    landed = sum(1 for r in store if r.get("error") is None)
    t = stats.totals
    assert t.requests_sent == landed + t.retries + t.failed
    return rows


def test_twenty_percent_faults_lose_and_duplicate_nothing(tmp_path):
    """Every fault kind at a 20% rate, one retry each.

    Breaks caught: a fault that escapes as an exception (the stage dies), a row that vanishes (kept +
    dropped != generated), a failed row kept for training, and off-format replies (chatter, empty) kept."""
    with FakeOpenAI(fault_rate=0.2, seed=3) as fake:
        ctx, cfg, rd = opened(_prepare(fake, tmp_path, "teacher.endpoint.max_retries=1"))
        stats = generate.run(ctx)
    assert len(fake.injected) >= 8, fake.injected  # most fault kinds were actually exercised
    rows = _accounting(rd, stats)
    assert stats.last.retries > 0 and stats.counts.teacher_rows_failed > 0

    fstats = filtering.run(ctx)
    kept = read_jsonl(rd / "data" / "train.jsonl")
    dropped = read_jsonl(rd / "data" / "dropped.jsonl")
    assert sorted(r["id"] for r in kept + dropped) == sorted(r["id"] for r in rows)
    assert all(d["reason"] for d in dropped)
    failed = {r["id"] for r in rows if r["status"] == "failed"}
    assert failed == {d["id"] for d in dropped if d["stage"] == "generate"}
    assert fstats.kept + fstats.dropped == fstats.generated == len(rows)
    # off-format replies (chatter, empty) are dropped with the reason, not kept
    outputs = {r["output"] for r in kept}
    assert "Sure! Here is the corrected sentence for you:" not in outputs and "" not in outputs


def test_failed_requests_are_retried_by_the_next_run_and_rows_converge(tmp_path):
    """Faults that need no clock (a 500, a reset connection, a malformed body), so a loaded machine
    cannot turn a good reply into a timeout. Break caught: failed requests cached like replies (the
    second run sends nothing and the failed rows stay failed)."""
    with FakeOpenAI(fault_rate=0.3, seed=5, faults=["500", "reset", "malformed"]) as fake:
        ctx, cfg, rd = opened(_prepare(fake, tmp_path, "teacher.endpoint.max_retries=0", "teacher.endpoint.timeout_s=60"))
        first = generate.run(ctx)
        assert first.last.failed > 0
        fake.fault_rate = 0.0
        second = generate.run(ctx)
    assert second.last.requests_sent > 0 and second.last.failed == 0
    rows = _accounting(rd, second)
    assert all(r["status"] in ("ok", "unasked") for r in rows)  # no row failed (an unasked one was never sent)
    keys = [r["key"] for r in read_jsonl(rd / "data" / "requests.jsonl") if r.get("error") is None]
    assert len(keys) == len(set(keys)), "a finished request was sent again"


def test_max_requests_stops_cleanly_and_a_rerun_sends_nothing_more(tmp_path):
    """Breaks caught: the limit checked after sending (more than 12 requests), a re-run that starts its count from
    zero, and unsent rows that vanish instead of being dropped with the budget as reason."""
    with FakeOpenAI() as fake:
        ctx, cfg, rd = opened(_prepare(fake, tmp_path, "teacher.budget.max_requests=12"))
        stats = generate.run(ctx)
        assert len(fake.requests) == 12
        assert stats.counts.cut_short == "teacher.budget.max_requests=12 reached"
        _accounting(rd, stats)
        again = generate.run(ctx)
        assert len(fake.requests) == 12 and again.last.requests_sent == 0
    filtering.run(ctx)
    skipped = [d for d in read_jsonl(rd / "data" / "dropped.jsonl") if d["stage"] == "generate"]
    assert skipped and all(d["reason"].startswith("not sent: teacher.budget.max_requests") for d in skipped)


def test_max_cost_stops_before_going_over(tmp_path):
    """Every reply bills exactly what its request reserved (full_usage), and 4 requests are in flight at
    once.

    Break caught: admitting a request against what replies have cost so far without reserving the
    requests still in flight (the last few admitted together go over the limit)."""
    limit = 0.05
    price = "pricing.models={fake-model: {input_per_1m: 10, output_per_1m: 10}}"
    with FakeOpenAI(usage=full_usage) as fake:
        ctx, cfg, rd = opened(_prepare(fake, tmp_path, "teacher.hosted=true", price, f"teacher.budget.max_cost_usd={limit}",
                                       "teacher.max_tokens=200"))
        stats = generate.run(ctx)
    bills = [(u["prompt_tokens"] + u["completion_tokens"]) * 10 / 1e6 for u in map(full_usage, fake.requests)]
    assert stats.counts.cut_short.startswith(f"teacher.budget.max_cost_usd={limit} would be exceeded")
    assert sum(bills) <= limit, f"billed ${sum(bills):.4f} under a ${limit} limit"
    assert sum(bills) > limit - 4 * max(bills), "stopped long before the limit"
    assert stats.totals.cost_usd == pytest.approx(sum(bills), abs=1e-5)


def test_dry_run_calls_nothing_and_writes_nothing(tmp_path):
    """Breaks caught: a dry run that probes the teacher or creates the run directory."""
    from typer.testing import CliRunner

    from distill.cli import app

    with FakeOpenAI() as fake:
        rd = tmp_path / "run"
        r = CliRunner().invoke(app, ["generate", "--dry-run", "--run-dir", str(rd),
                                     "--set", "teacher.endpoint.launch_local=false",
                                     "--set", f"teacher.endpoint.base_url={fake.base_url}", "--set", "teacher.model=fake-model"])
        assert r.exit_code == 0, r.output
        assert fake.requests == [] and not rd.exists()
    assert "requests_at_most" in r.output and "cost_usd_at_most" in r.output


@pytest.mark.slow
def test_api_key_reaches_the_server_but_no_file_or_log(tmp_path):
    """The whole flow (`distill run --set teacher.api_key=...`, the riskier way in: the key is part of
    the config) with a sentinel key: it authenticates every request and appears in no file of the run,
    no Prefect record (artifacts, logs, parameters live in PREFECT_HOME's database) and nothing printed.
    The budget cuts generation short, and the report says so.

    Breaks caught: the key saved with the run's config.yaml or passed to the flow as a parameter (both
    land on disk), a flow that re-reads the saved config and so sends no key, and a report silent about
    a cut-short generation."""
    import os
    import subprocess

    from tests.conftest import ROOT, distill_cmd

    sentinel = "sk-SENTINEL-7f3a9c"
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env.update({"PYTHONPATH": str(ROOT), "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "DEBUG"})
    rd = tmp_path / "run"
    with FakeOpenAI() as fake:
        sets = ["teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model",
                f"teacher.api_key={sentinel}", "teacher.budget.max_requests=20",
                "generation.input_requests=4", "training.max_steps=2", "eval.max_rows=4", "eval.max_new_tokens=8",
                "eval.models=[teacher,student]", "eval.serving.requests=4", "eval.serving.rounds=1"]
        r = subprocess.run(distill_cmd("run", "--run-dir", str(rd), *[a for x in sets for a in ("--set", x)]),
                           cwd=ROOT, env=env, capture_output=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    auth = [h.get("authorization") for h in fake.headers_seen]
    assert auth and all(a == f"Bearer {sentinel}" for a in auth)
    assert sentinel.encode() not in r.stdout + r.stderr
    files = [p for root in (rd, home) for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in files), "the Prefect database was not where the test looks"
    for p in files:
        assert sentinel.encode() not in p.read_bytes(), f"API key found in {p}"
    assert read_json(rd / "report.json")["cut_short"] == "teacher.budget.max_requests=20 reached"
    assert "**Generation was cut short:** teacher.budget.max_requests=20 reached." in (rd / "report.md").read_text()


def test_rows_the_dedups_drop_are_never_asked_and_the_filtered_data_is_the_same(tmp_path):
    """The leading filters that need no answer (the dedups on inputs) run before the teacher answers.

    Breaks caught: a dropped row asked all the same (no request saved), a row dropped before answering
    that the filter stage loses or keeps, verdicts that differ from filtering after answering (other
    kept rows, reasons or stage counts), and a changed filter chain that would train on unanswered rows."""
    chain = ["filters=[exact_dedup, minhash_dedup, task_format]"]
    # a filter that needs the answer first: nothing can run before answering, every input is asked
    after = ["filters=[{name: length, fields: [output], min_words: 0, max_words: 1000}, exact_dedup, "
             "minhash_dedup, task_format]"]
    out = {}
    for name, sets in (("before", chain), ("after", after)):
        with FakeOpenAI() as fake:
            ctx, cfg, rd = opened(_prepare(fake, tmp_path / name, *sets))
            stats = generate.run(ctx)
            answers = [b for b in fake.requests if b["messages"][0]["role"] == "system"]
        fstats = filtering.run(ctx)
        out[name] = (stats, fstats, rd, len(answers))
    (sb, fb, rb, asked_b), (sa, fa, ra, asked_a) = out["before"], out["after"]
    dropped = [r for r in read_jsonl(rb / "data" / "generated.jsonl") if r["status"] == "unasked"]
    teacher_dropped = [r for r in dropped if r["meta"]["source"] == "teacher"]
    assert sb.counts.teacher_rows_unasked == len(teacher_dropped) > 10
    assert sa.counts.teacher_rows_unasked == 0 and sa.counts.parsed_inputs == sb.counts.parsed_inputs
    assert all(r["output"] is None or r["meta"]["source"] == "seed" for r in dropped)
    # every dropped input's answer request was saved (the same input twice is one request anyway)
    dropped_inputs = {r["input"] for r in teacher_dropped}
    kept_inputs = {r["input"] for r in read_jsonl(rb / "data" / "generated.jsonl") if r["status"] != "unasked"}
    assert asked_a - asked_b == len(dropped_inputs - kept_inputs) > 10
    # the same rows kept, the same ledger, the same stage counts
    assert read_jsonl(rb / "data" / "train.jsonl") == read_jsonl(ra / "data" / "train.jsonl")
    ledger = {(d["id"], d["stage"], d["reason"]) for d in read_jsonl(rb / "data" / "dropped.jsonl")}
    assert ledger == {(d["id"], d["stage"], d["reason"]) for d in read_jsonl(ra / "data" / "dropped.jsonl")}
    counts = [(s["stage"], s["in"], s["kept"]) for s in fb.stages]
    assert counts == [(s["stage"], s["in"], s["kept"]) for s in fa.stages[1:]]
    assert [s.get("before_answer", False) for s in fb.stages] == [True, True, False]
    # the filter stage refuses a chain that no longer starts with what generation ran
    with pytest.raises(ConfigError, match="run `distill generate` again"):
        c2, _, _ = opened(prepare_run(None, rb, ["filters=[task_format]"], stages=("filter",), force=True))
        filtering.run(c2)
