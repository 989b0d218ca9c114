"""Structured output: the schema reaches the server in its dialect, invalid replies are retried with
new requests and then recorded as failed with their raw text (in the row and the ledger), and the
judge filter drops rows with its score as the reason, through the same cache and cost accounting."""
import json
import re

import pytest

from distill.config import load_config
from distill.io import read_json, read_jsonl, write_jsonl
from distill.stages import filter as filtering
from distill.stages import generate
from distill.stages.context import prepare_run
from distill.tasks import register_task
from distill.tasks.grammar import Grammar
from distill.teacher.structured import response_format, validate
from distill.testing.fake_openai import FakeOpenAI, plausible_reply
from tests.conftest import ROOT, opened

SCHEMA = {"type": "object", "properties": {"corrected": {"type": "string", "minLength": 1}},
          "required": ["corrected"], "additionalProperties": False}


@register_task("grammar_json")
class GrammarJSON(Grammar):
    """Grammar correction whose teacher answers {"corrected": "..."} (loaded through `plugins:`)."""
    answer_schema = SCHEMA
    answer_field = "corrected"  # its templates are Grammar's: a subclass finds its parent's folder


def test_response_format_per_server_dialect():
    local = load_config(None, [])
    remote = load_config(None, ["teacher.endpoint.launch_local=false", "teacher.endpoint.base_url=http://x/v1"])
    assert response_format(local, SCHEMA, "a") == {"type": "json_object", "schema": SCHEMA}
    assert response_format(remote, SCHEMA, "a") == {
        "type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}
    assert response_format(load_config(None, ["teacher.structured_output=none"]), SCHEMA, "a") is None


@pytest.mark.parametrize("text,why", [
    ('{"corrected": "Fine."}', None),
    ("", "empty reply"),
    ('{"corrected": ', "not JSON"),
    ('{"corrected": ""}', "schema: corrected: '' should be non-empty"),
    ('{"fixed": "x"}', "schema: 'corrected' is a required property"),
    ('["x"]', "schema: ['x'] is not of type 'object'"),
])
def test_validate_names_the_problem(text, why):
    obj, err = validate(text, SCHEMA)
    assert (obj is None) == (why is not None)
    if why:
        assert err.startswith(why), err


def _json_teacher(body: dict) -> str:
    """Self-Instruct replies as usual; answers: 'Tom' rows never valid, 'Anna' rows valid only on a retry."""
    text = plausible_reply(body)
    if body["messages"][0]["role"] != "system":
        return text
    if "Tom" in text:
        return "Sure! Here is the corrected sentence."
    if "Anna" in text and body.get("temperature", 0) < 0.7:
        return '{"corrected": '
    return json.dumps({"corrected": text})


def _json_task_run(tmp_path, fake, seeds, *extra):
    return prepare_run(None, tmp_path / "run", [
        "plugins=[tests.test_structured]", "task=grammar_json", f"seeds_path={seeds}", "teacher.adaptation.few_shot=0",
        "teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model", *extra],
        stages=("generate",))


def test_invalid_structured_replies_are_retried_then_recorded_with_raw_text(tmp_path):
    """Breaks caught: an invalid reply kept, retried with the same cached request (same temperature and seed:
    the same invalid reply), or failed without its raw text."""
    seeds = tmp_path / "seeds.jsonl"
    rows = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")[:6]
    rows[0]["input"], rows[0]["output"] = "Tom go to school.", "Tom goes to school."
    rows[1]["input"], rows[1]["output"] = "Anna like tea.", "Anna likes tea."
    write_jsonl(seeds, rows)
    with FakeOpenAI(reply=_json_teacher) as fake:
        ctx, cfg, rd = opened(_json_task_run(tmp_path, fake, seeds, "teacher.structured_retries=2", "generation.input_requests=8",
                                 "generation.inputs_per_request=2", "generation.seeds_per_prompt=2"))
        stats = generate.run(ctx)
        answers = [b for b in fake.requests if b["messages"][0]["role"] == "system"]
        n_sent = len(fake.requests)
        assert answers and all(b["response_format"]["type"] == "json_schema" for b in answers)
        assert all(b["response_format"]["json_schema"]["schema"] == SCHEMA for b in answers)
        again = generate.run(ctx)
        assert len(fake.requests) == n_sent, "a re-run sent requests again"
    gen = read_jsonl(rd / "data" / "generated.jsonl")
    teacher_rows = [r for r in gen if r["meta"]["source"] == "teacher"]
    assert teacher_rows and all(r["status"] == "ok" for r in teacher_rows)  # the fake's sentences are valid JSON
    assert again.counts == stats.counts

    # now the seeds as inputs: Tom never valid, Anna valid on the first retry
    from distill.stages.shards import answer_requests
    from distill.teacher import RequestStore, Teacher
    from distill.teacher.backends.openai import OpenAIBackend
    task = GrammarJSON()
    with FakeOpenAI(reply=_json_teacher) as fake:
        cfg2 = cfg.model_copy(deep=True)
        cfg2.teacher.endpoint.base_url = fake.base_url
        reqs = [answer_requests(cfg2, task, r["input"], [])[0] for r in rows[:3]]
        store = RequestStore(tmp_path / "store" / "requests.jsonl")
        replies, usage = Teacher(cfg2, OpenAIBackend(cfg2, fake.base_url)).structured(reqs, SCHEMA, store)
        store.close()
        sent = [(b["messages"][-1]["content"], b["temperature"], b.get("seed")) for b in fake.requests]
    tom, anna, other = replies
    assert tom["error"].startswith("invalid reply after 3 attempt(s): not JSON") and tom["raw"].startswith("Sure!")
    assert tom["attempts"] == 3 and anna["attempts"] == 2 and other["attempts"] == 1
    assert anna["parsed"] == {"corrected": "Anna like tea."} and anna["error"] is None
    assert usage.requests_sent == 3 + 2 + 1 and usage.errors == {"InvalidStructuredReply": 1}
    assert sorted(t for m, t, s in sent if "Tom" in m) == [0.0, 0.7, 0.7]  # retries are new requests


def test_structured_failures_reach_the_ledger(tmp_path):
    """Break caught: a failed structured row left out of the drop ledger (it vanishes between generate and filter)."""
    seeds = tmp_path / "seeds.jsonl"
    rows = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")[:6]
    write_jsonl(seeds, rows)

    def teacher(body):
        text = plausible_reply(body)
        if body["messages"][0]["role"] == "system" and "neighbour" in text.lower():
            return '{"answer": "wrong key"}'
        return json.dumps({"corrected": text}) if body["messages"][0]["role"] == "system" else text

    with FakeOpenAI(reply=teacher) as fake:
        ctx, cfg, rd = opened(_json_task_run(tmp_path, fake, seeds, "teacher.structured_retries=1",
                                             "generation.input_requests=10",
                                 "generation.inputs_per_request=3", "filters=[exact_dedup]"))
        generate.run(ctx)
    gen = read_jsonl(rd / "data" / "generated.jsonl")
    failed = [r for r in gen if r["status"] == "failed"]
    assert failed and all("neighbour" in r["input"].lower() for r in failed)
    assert all(r["error"].startswith("invalid reply after 2 attempt(s): schema:") for r in failed)
    filtering.run(ctx)
    ledger = {d["id"]: d for d in read_jsonl(rd / "data" / "dropped.jsonl") if d["stage"] == "generate"}
    assert set(ledger) == {r["id"] for r in failed}
    assert all(d["raw"] == '{"answer": "wrong key"}' and "required property" in d["reason"] for d in ledger.values())


def test_judge_drops_low_scores_and_invalid_replies_with_reasons(tmp_path):
    def judge_reply(body):
        row = body["messages"][-1]["content"]
        if "Output: ???" in row:
            return "I think it is fine"
        return json.dumps({"score": 2 if "picnic" in row else 5})

    rows = [{"id": f"r{i}", "input": f"She go to school number {i}.", "output": out, "reference": None,
             "status": "ok", "error": None, "meta": {}}
            for i, out in enumerate(["She goes to school.", "We had a picnic.", "???", "She goes to school."])]
    with FakeOpenAI(reply=judge_reply, models=["fake-model"]) as fake:
        ctx, cfg, rd = opened(prepare_run(None, tmp_path / "run", [
            "teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}", "teacher.model=fake-model",
            "teacher.hosted=true", "pricing.models={fake-model: {input_per_1m: 1000, output_per_1m: 2000}}",
            "filters=[{name: judge, min_score: 3}]"]))
        write_jsonl(rd / "data" / "generated.jsonl", rows)
        stats = filtering.run(ctx)
        sent = len(fake.requests)
        assert sent == 4 + 2  # the invalid one was retried twice
        filtering.run(ctx)
        assert len(fake.requests) == sent, "judge requests are cached across re-runs"
    dropped = {d["id"]: d["reason"] for d in read_jsonl(rd / "data" / "dropped.jsonl")}
    assert dropped["r1"] == "judge score 2 < 3"
    assert dropped["r2"].startswith("judge gave no valid score: invalid reply after 3 attempt(s)") and "raw" in dropped["r2"]
    kept = read_jsonl(rd / "data" / "train.jsonl")
    assert {r["id"]: r["meta"]["judge_score"] for r in kept} == {"r0": 5, "r3": 5}
    # six requests of 10 prompt and 5 completion tokens: 6 x (10 x $1000 + 5 x $2000) / 1M
    t = stats.teacher
    assert t["requests_sent"] == 6 and t["prompt_tokens"] == 60 and t["completion_tokens"] == 30
    assert t["cost_usd"] == pytest.approx(0.12) and t["cost_rule"].startswith("hosted tokens x price of fake-model")


@pytest.mark.slow
def test_judge_option_of_the_default_config_against_the_local_teacher(tmp_path):
    """The default config's judge, switched on, against the real llama.cpp teacher (grammar-constrained JSON)."""
    seeds = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")[:8]
    rows = [{"id": s["id"] + suffix, "input": s["input"], "output": out, "reference": None, "status": "ok",
             "error": None, "meta": {}}
            for s in seeds for suffix, out in (("-good", s["output"]), ("-bad", "We had a picnic by the lake."))]
    ctx, cfg, rd = opened(prepare_run(None, tmp_path / "run", ["filters.judge.enabled=true", "filters.judge.min_score=5"]))
    assert [n for n, _ in cfg.filter_specs()][-1] == "judge"
    write_jsonl(rd / "data" / "generated.jsonl", rows)
    stats = filtering.run(ctx)
    judge = next(s for s in stats.stages if s["stage"] == "judge")
    assert stats.teacher["requests_sent"] >= judge["in"] > 0
    assert stats.teacher["cost_rule"].startswith("self-hosted")
    ledger = [d for d in read_jsonl(rd / "data" / "dropped.jsonl") if d["stage"] == "judge"]
    assert len(ledger) == judge["dropped"]
    # grammar-constrained JSON: every reply is a valid score, so every drop names the score it got
    assert all(re.fullmatch(r"judge score [1-4] < 5", d["reason"]) for d in ledger), ledger
    kept = read_jsonl(rd / "data" / "train.jsonl")
    assert all(r["meta"]["judge_score"] == 5 for r in kept)
    # the off-topic answers never reach the judge (the cheaper filters drop them first, with a reason);
    # every row the judge saw is kept with its score or dropped with it
    earlier = [d for d in read_jsonl(rd / "data" / "dropped.jsonl") if d["stage"] != "judge"]
    assert {d["id"] for d in earlier} == {r["id"] for r in rows if r["id"].endswith("-bad")}
    good = sorted(r["id"] for r in rows if r["id"].endswith("-good"))
    assert sorted([r["id"] for r in kept] + [d["id"] for d in ledger]) == good
    assert read_json(rd / "stats" / "filter.json")["teacher"]["requests_sent"] == stats.teacher["requests_sent"]
