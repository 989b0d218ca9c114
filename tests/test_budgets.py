"""Budgets that hold when a run is killed with requests in flight or its generate task is retried, with
replies that bill exactly what each request reserved, so a reservation left out shows as overspending."""
import signal
import subprocess
import time

from distill import faults
from distill.config import load_config
from distill.io import AppendLog
from distill.rundir import RunDir
from distill.teacher import make_budget, spent_so_far
from distill.testing.fake_openai import FakeOpenAI, full_usage
from tests.conftest import ROOT, distill_cmd
from tests.test_hardening import _cli, _env, _slowly, _teacher

PRICE = "pricing.models={fake-model: {input_per_1m: 10, output_per_1m: 10, source: test, as_of: 2026-11-23}}"


def billed(fake) -> float:
    """What the fake, as a hosted API, billed: every request it received, at its reported usage."""
    return sum((u["prompt_tokens"] + u["completion_tokens"]) * 10 / 1e6 for u in map(full_usage, fake.requests))


def _killed_once_received(fake, rd, args, n: int) -> int:
    """Start `distill generate`, SIGKILL it once the teacher has received n requests (more are on
    their way or being answered), and return how many it had received by then."""
    proc = subprocess.Popen(distill_cmd("generate", "--run-dir", str(rd), *args), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(fake.requests) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(fake.requests)


def test_max_requests_holds_across_a_sigkill_and_a_rerun(tmp_path):
    """Breaks caught: spending read only from stats/generate.json (written at the end, so the re-run of a
    killed run got the whole budget again: 20 requests under max_requests=10), requests in flight at
    the kill left uncounted, and a message naming a shard's share (6) as the limit."""
    rd = tmp_path / "run"
    with FakeOpenAI(reply=_slowly(0.3)) as fake:
        args = _teacher(fake, "teacher.budget.max_requests=10", "teacher.endpoint.max_concurrency=2")
        killed_at = _killed_once_received(fake, rd, args, 5)
        assert 5 <= killed_at < 10 and not (rd / "stats" / "generate.json").exists()
        code, out = _cli("generate", "--run-dir", str(rd), *args)
        sent = len(fake.requests)
    assert code == 0, out
    assert sent <= 10 and "cut short: teacher.budget.max_requests=10 reached" in " ".join(out.split()), (sent, out)


def test_max_cost_holds_across_a_sigkill_with_requests_in_flight(tmp_path):
    """generate is SIGKILLed while requests it sent are still being answered (so they are billed but
    never stored), then re-run.

    Break caught: the re-run counting only the replies in the store as spent (the requests in flight
    at the kill are forgotten, and it spends their price again: over the limit)."""
    rd, limit = tmp_path / "run", 0.05
    with FakeOpenAI(reply=_slowly(0.5), usage=full_usage) as fake:
        args = _teacher(fake, "teacher.hosted=true", PRICE, f"teacher.budget.max_cost_usd={limit}",
                        "teacher.max_tokens=200", "teacher.endpoint.max_concurrency=4", "generation.input_requests=20")
        at_kill = _killed_once_received(fake, rd, args, 6)
        stored = sum(1 for _ in AppendLog.read(rd / "data" / "requests.jsonl"))
        assert at_kill > stored, "no request was in flight at the kill"
        code, out = _cli("generate", "--run-dir", str(rd), *args)
        spent = billed(fake)
    assert code == 0, out
    assert "cut short: teacher.budget.max_cost_usd=0.05 would be exceeded (spent $" in " ".join(out.split()), out
    assert len(fake.requests) > at_kill and spent <= limit, (at_kill, len(fake.requests), spent)


def test_max_requests_holds_across_a_retry_of_the_generate_task(tmp_path, monkeypatch):
    """The generate task raises before its 6th request (an injected crash, not a teacher error) and
    Prefect retries it (retries=2).

    Break caught: a retry that starts with the whole budget again (spending read from the stats file,
    which the failed attempt never wrote: 5 + 10 requests sent under max_requests=10)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from distill.flow import distill_flow

    monkeypatch.setenv("DISTILL_FAULT", "send@6=raise")
    faults.reset()
    with FakeOpenAI() as fake:
        sets = _teacher(fake, "teacher.budget.max_requests=10", "teacher.endpoint.max_concurrency=1")
        state = distill_flow(run_dir=str(tmp_path / "run"), overrides=sets[1::2], stages=["generate"],
                             return_state=True)
    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert sorted((t.name.split("-")[0], t.run_count) for t in runs) == [("adapt", 1), ("generate", 2)]
    # 5 sent, the 6th logged as sending when the crash came (so counted: it might have gone), 4 by the retry
    assert len(fake.requests) == 9


def test_spent_so_far_counts_requests_sent_but_never_answered_at_their_reservation(tmp_path):
    """Break caught: the USD spent read from stored replies alone (a killed request is billed, never stored)."""
    cfg = load_config(None, ["teacher.hosted=true", "teacher.model=fake-model", PRICE])
    rd = RunDir(tmp_path / "run")
    with AppendLog(rd.sending()) as s, AppendLog(rd.requests()) as r:
        for key, usd in [("a", 0.01), ("b", 0.01), ("b", 0.02), ("c", 0.04)]:
            s.append({"key": key, "usd_at_most": usd})
        # a answered (1,000 tokens: $0.01), b failed once and was sent again, which never came back; c in flight
        r.append({"key": "a", "error": None, "usage": {"prompt_tokens": 600, "completion_tokens": 400}})
        r.append({"key": "b", "error": "APIError(500)"})
    requests, usd = spent_so_far(cfg, rd)
    assert requests == 4 and round(usd, 6) == 0.01 + 0.02 + 0.04


def test_each_shard_gets_its_share_of_what_is_left():
    """Breaks caught: shares that add up to more than what is left (or drop the remainder), and a
    spent run given a negative budget."""
    cfg = load_config(None, ["teacher.budget.max_requests=10", "teacher.budget.max_cost_usd=1.0"])
    shares = [make_budget(cfg, 3, 0.4, shard=i, shards=3) for i in range(3)]
    assert [b.max_requests for b in shares] == [3, 2, 2]  # 7 left: 3 + 2 + 2
    assert all(round(b.max_cost_usd, 6) == 0.2 for b in shares) and shares[0].limit == 10
    spent = make_budget(cfg, 12, 1.5, shard=0, shards=2)
    assert spent.max_requests == 0 and spent.max_cost_usd == 0.0
    assert not spent.admit(10, 10, 1.0) and spent.exhausted == "teacher.budget.max_requests=10 reached"
    assert make_budget(load_config(None, []), 0, 0.0) is None
