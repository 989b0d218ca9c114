"""The evaluation's pairwise judge: the order-swap rule, the rates' intervals, the self-preference warning,
and its config checked before anything is spent."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.report.pairwise import family, outcome, rates, self_preference
from tests.conftest import ROOT


@pytest.mark.parametrize("model_first,model_second,expected", [
    ("A", "B", "win"),      # preferred in both orders
    ("B", "A", "loss"),     # the other answer preferred in both orders
    ("A", "A", "tie"),      # always the first shown: position bias, not a preference
    ("B", "B", "tie"),      # always the second shown
    ("tie", "B", "tie"),
    ("A", "tie", "tie"),
    (None, "B", "tie"),     # a verdict missing (failed or unparsable)
    ("tie", "tie", "tie"),
])
def test_a_win_or_loss_counts_only_when_both_orders_agree(model_first, model_second, expected):
    assert outcome(model_first, model_second) == expected


def test_the_rates_count_each_outcome_and_their_intervals_hold_the_binomial_spread():
    outcomes = ["win"] * 30 + ["tie"] * 50 + ["loss"] * 20
    r = rates(outcomes, seed=0, n_resamples=2000)
    assert (r["n"], r["win"], r["tie"], r["loss"]) == (100, 30, 50, 20)
    for name, p in (("win_rate", 0.3), ("tie_rate", 0.5), ("loss_rate", 0.2)):
        iv, half = r[name], 196 * np.sqrt(p * (1 - p) / 100)  # the normal approximation, in percent
        assert iv["value"] == 100 * p
        assert abs((iv["high"] - iv["low"]) / 2 - half) < 1.5, (name, iv, half)
    assert r["net"]["value"] == 10 and r["net"]["low"] < 10 < r["net"]["high"]
    # a quarter of the rows: the interval twice as wide; and the same outcomes in another order, the same rates
    small = rates(outcomes[::4], seed=0)
    assert small["win_rate"]["high"] - small["win_rate"]["low"] > 1.6 * (r["win_rate"]["high"] - r["win_rate"]["low"])
    assert rates(sorted(outcomes), seed=0)["win_rate"]["value"] == 30


def test_every_row_a_win_has_no_spread_and_no_rows_no_rates():
    r = rates(["win"] * 12)
    assert r["win_rate"] == {"value": 100.0, "low": 100.0, "high": 100.0} and r["loss"] == 0
    assert rates([]) == {"n": 0, "win": 0, "tie": 0, "loss": 0}


def test_the_report_warns_when_the_judge_is_the_teacher_or_of_its_family():
    assert "is the teacher" in self_preference("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct", "teacher")
    assert "teacher's family (gpt)" in self_preference("gpt-4o", "gpt-4o-mini", "teacher")
    assert "teacher's family (smollm)" in self_preference("HuggingFaceTB/SmolLM2-1.7B-Instruct", "SmolLM2-135M-Instruct",
                                                           "reference")
    assert self_preference("Qwen2.5-7B-Instruct", "gpt-4o-mini", "teacher") is None
    assert family("Llama-3.1-8B") == "llama" and family("org/Qwen2.5-7B") == "qwen"


@pytest.mark.parametrize("sets,expected", [
    (["eval.judge.enabled=true", "eval.models=[base_student, student]"],
     "--set eval.models=[base_student, student]: field 'eval.models': no 'teacher', but eval.judge compares"),
    (["eval.judge.enabled=true", "eval.judge.models=[studnet]"], "field 'eval.judge.models': 'studnet' is not evaluated"),
    (["eval.judge.enabled=true", "eval.judge.model=judge-xl", "eval.judge.hosted=true"],
     "field 'eval.judge.model': no price for the hosted judge 'judge-xl'"),
    (["eval.judge.enabled=true", "eval.judge.endpoint.api_key_env=JUDGE_KEY"],
     "--set eval.judge.endpoint.api_key_env=JUDGE_KEY: field 'eval.judge.endpoint': a judge's endpoint needs base_url"),
])
def test_a_judge_config_that_cannot_work_stops_before_anything_is_made(tmp_path, monkeypatch, sets, expected):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["run", "--run-dir", str(tmp_path / "run"), *(a for s in sets for a in ("--set", s))])
    err = (r.stderr if hasattr(r, "stderr") else r.output).strip()
    assert r.exit_code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_judge_on_its_own_endpoint_is_asked_there_and_its_key_kept_out_of_the_run(tmp_path, monkeypatch):
    """eval.judge.endpoint: a second real llama-server under another model name judges; the teacher's
    server is never started, the verdicts are stored under the judge's model, priced on its hardware,
    no self-preference warning (another family's name), and the judge's key is written nowhere."""
    from distill.config.teacher import LocalServer
    from distill.stages.context import prepare_run
    from distill.stages.judge_eval import judge
    from distill.teacher.gguf_server import engine_of, serve_gguf, teacher_gguf
    from tests.conftest import TINY

    secret = "sk-judge-0123456789abcdef"
    monkeypatch.setenv("JUDGE_KEY", secret)
    monkeypatch.chdir(ROOT)
    local = LocalServer()
    with serve_gguf(engine_of(local), teacher_gguf(local), "arbiter-135m", slots=2, n_ctx=1024, threads=None) as srv:
        sets = [*TINY, "eval.judge.enabled=true", f"eval.judge.endpoint.base_url={srv.base_url}",
                "eval.judge.endpoint.api_key_env=JUDGE_KEY", "eval.judge.model=arbiter-135m", "eval.judge.hosted=false"]
        with prepare_run(None, tmp_path / "run", sets) as ctx:
            rows = list(ctx.eval_rows)[:ctx.cfg.eval.max_rows]  # as the evaluation takes them
            theirs = [r["output"] if isinstance(r["output"], str) else r["output"][0] for r in rows]
            mine = [t if i % 2 else t + " Indeed." for i, t in enumerate(theirs)]  # half the rows the same answer
            got = judge(ctx, rows, {"teacher": theirs, "student": mine})
            assert ctx._teacher is None  # the teacher's own server was never started
    asked = len(rows) - sum(a == b for a, b in zip(mine, theirs))
    assert got["judge"] == "arbiter-135m" and got["warning"] is None and asked > 0
    assert got["requests_sent"] == 2 * asked and got["failed"] == 0
    assert got["models"]["student"]["same_answer"] == len(rows) - asked and "on cpu-2core" in got["cost_rule"]
    stored = [json.loads(line) for line in (tmp_path / "run" / "data" / "requests.judge.jsonl").read_text().splitlines()]
    assert len(stored) == 2 * asked and all(x["model"] == "arbiter-135m" for x in stored)
    for f in (tmp_path / "run").rglob("*"):
        assert not f.is_file() or secret.encode() not in f.read_bytes(), f
