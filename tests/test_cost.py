"""The cost arithmetic on fixed figures: hosted and self-hosted prices, the batch discount, cost per 1k
requests from measured seconds, the headline at its edges (a free or larger student) and ties in the
choice of model."""
import pytest

from distill.config import load_config
from distill.report.phrases import cost_ratio, verdict
from distill.report.select import choose_model
from distill.stages.serving import per_1k_cost
from distill.teacher import teacher_cost
from distill.teacher.cost import cost_of

PRICES = ["pricing.models={gpt-x: {input_per_1m: 2.0, output_per_1m: 8.0, batch_discount: 0.5}}",
          "pricing.hardware={box: {usd_per_hour: 3.6}}"]


def test_hosted_tokens_are_priced_per_million_with_the_batch_discount():
    """Breaks caught: input and output prices swapped, a price per 1k read as per 1M, and the discount
    applied to real-time requests (or not to batches)."""
    p = load_config(None, PRICES).pricing
    c = cost_of(p, hosted=True, model="gpt-x", hardware="box", prompt_tokens=1_000_000, completion_tokens=250_000,
                seconds=99.0)
    assert c == {"usd": 4.0, "rule": "hosted tokens x price of gpt-x"}  # 1M x $2 + 0.25M x $8; seconds play no part
    b = cost_of(p, hosted=True, model="gpt-x", hardware="box", prompt_tokens=1_000_000, completion_tokens=250_000,
                seconds=0.0, batch=True)
    assert b == {"usd": 2.0, "rule": "hosted tokens x price of gpt-x (batch)"}
    with pytest.raises(KeyError, match="no entry for hosted model 'gpt-y'"):
        cost_of(p, hosted=True, model="gpt-y", hardware="box", prompt_tokens=1, completion_tokens=1, seconds=0)


def test_self_hosted_time_is_priced_per_hour_whatever_the_tokens():
    """Breaks caught: seconds read as minutes or hours, and tokens priced for a self-hosted model."""
    p = load_config(None, PRICES).pricing
    c = cost_of(p, hosted=False, model="gpt-x", hardware="box", prompt_tokens=10**9, completion_tokens=10**9,
                seconds=90.0)
    assert c["usd"] == 0.09 and c["rule"] == "self-hosted 90.0 s x $3.6/h on box"
    with pytest.raises(KeyError, match="no entry for 'gpu'"):
        cost_of(p, hosted=False, model="m", hardware="gpu", prompt_tokens=0, completion_tokens=0, seconds=1)


def test_teacher_cost_takes_the_discount_from_its_backend_unless_told():
    """Break caught: the evaluation's real-time teacher requests priced at the Batch API's discount."""
    batch = load_config(None, PRICES + ["teacher.model=gpt-x", "teacher.hosted=true", "teacher.backend=openai_batch"])
    assert teacher_cost(batch, 1_000_000, 0, 0.0)["usd"] == 1.0
    assert teacher_cost(batch, 1_000_000, 0, 0.0, batch=False)["usd"] == 2.0
    realtime = load_config(None, PRICES + ["teacher.model=gpt-x", "teacher.hosted=true"])
    assert teacher_cost(realtime, 1_000_000, 0, 0.0)["usd"] == 2.0


def test_cost_per_1k_requests_from_measured_seconds():
    """50 requests in 36 s, 18 s and 72 s on a $3.60/h machine: $0.036, $0.018 and $0.072 a round,
    so $0.72, $0.36 and $1.44 per 1k; two replicas side by side halve each.

    Breaks caught: the mean instead of the median, per request instead of per 1k, and replicas that
    do not share the machine's hour."""
    c = per_1k_cost([36.0, 18.0, 72.0], 50, 3.6)
    assert c == {"usd_per_1k": [0.72, 0.36, 1.44], "cost_per_1k_usd": 0.72, "low": 0.36, "high": 1.44}
    assert per_1k_cost([36.0, 18.0, 72.0], 50, 3.6, replicas=2)["cost_per_1k_usd"] == 0.36


def _model(key, role, gleu, cost, params=100, **kw):
    return {"key": key, "name": key, "role": role, "metrics": {"gleu": gleu}, "cost_per_1k_usd": cost,
            "parameters": params, "serving": None, **kw}


def test_a_free_student_and_a_larger_student_in_the_headline():
    """Breaks caught: "at - lower cost" for a student with no measured cost (a ratio over $0), and a
    student larger than the teacher called "the same size"."""
    t = _model("teacher", "teacher", 0.80, 0.01)
    free = _model("student", "distilled student", 0.82, 0.0, x_smaller=2.0)
    rep = {"eval": {"primary_metric": "gleu", "n": 100}, "models": [t, free]}
    free["cost_ratio"] = cost_ratio(t, free)
    text = verdict(rep)
    assert free["cost_ratio"] is None and "serving: no measured cost to compare; it is 2.0x smaller" in text
    assert " - " not in text and "lower" not in text
    big = _model("student", "distilled student", 0.82, 0.02, x_smaller=0.5)
    big["cost_ratio"] = cost_ratio(t, big)
    text = verdict({**rep, "models": [t, big]})
    assert "2.0x more expensive" in text and "it is 2.0x larger" in text and "same size" not in text


def test_ties_on_cost_go_to_the_better_model_and_on_both_to_the_first_listed():
    """Breaks caught: a tie on cost settled by list order when one model scores higher, and the teacher
    chosen as its own cheaper alternative."""
    models = [_model("teacher", "teacher", 0.80, 0.001), _model("a", "distilled student", 0.76, 0.004),
              _model("b", "distilled student", 0.78, 0.004), _model("c", "distilled student", 0.78, 0.004)]
    sel = choose_model(models, "gleu", 0.9)  # bar 0.72: all three students clear it at the same cost
    assert sel["chosen"] == "b" and sel["meets"] == ["b", "c", "a"]
    assert choose_model(models, "gleu", 0.5)["chosen"] != "teacher"


def test_same_size_and_unknown_size_in_the_headline_and_break_even_times():
    """Breaks caught: a same-size distillation presented as a smaller model, and break-even times in the
    wrong unit."""
    from distill.report.ledger import break_even
    from distill.report.phrases import size_phrase

    t = _model("teacher", "teacher", 0.80, 0.01)
    s = _model("student", "distilled student", 0.84, 0.002, x_smaller=1.0)
    s["cost_ratio"] = cost_ratio(t, s)
    text = verdict({"eval": {"primary_metric": "gleu", "n": 10}, "models": [t, s]})
    assert "Teacher and student have the same size here" in text and "x smaller" not in text
    assert "offline default" not in text  # said of any same-size run, not only the offline default's
    assert size_phrase(None) == "of unknown size relative to the teacher"
    # $1 one-off, $0.01 saved a request: 100 requests; at 10,000 a day 14 minutes, at 100 a day 1.0 days
    assert "(14 minutes at 10,000 requests a day)" in break_even(1.0, 10.0, 0.0, 10_000)["message"]
    assert "(1.0 days at 100 requests a day)" in break_even(1.0, 10.0, 0.0, 100)["message"]
