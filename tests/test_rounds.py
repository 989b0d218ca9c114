"""Issue 37: generation rounds aimed at the student's misses: how the budget is split, which rows probe
the student, the inputs made like its misses, and a two-round run killed in round 2 and resumed."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from distill import faults
from distill.config import load_config
from distill.io import read_json, read_jsonl
from distill.records import Row
from distill.stages.round_plan import planned_requests, round_config, round_requests, split_probes
from distill.tasks.sentiment import FILLER, SUBJECTS, _bank, reviews_like
from tests.conftest import ROOT, TINY, distill_cmd


@pytest.mark.parametrize("config,by_code", [(None, False), ("configs/sentiment.yaml", True)])
def test_the_rounds_share_one_rounds_teacher_requests(config, by_code):
    """round_share of the requests one round would plan goes to the later rounds: Self-Instruct requests
    plus their answers, or answers alone for a task that makes its inputs by code; round 1 gets the rest.

    Breaks caught: a second round on top of the first's full budget (the comparison would not be at
    equal requests), and a code-made task's round budget spent as if it paid for Self-Instruct requests."""
    sets = ["generation.input_requests=100", "generation.inputs_per_request=3", "generation.rounds=3",
            "generation.round_share=0.4"]
    cfg = load_config(config, sets)
    one_round = planned_requests(cfg)
    assert one_round == 300 + (0 if by_code else 100)
    first, later = round_requests(cfg, 1), round_requests(cfg, 2)
    assert first == 60 and round_requests(cfg, 3) == later
    per_request = 3 if by_code else 4  # a later round's request and its answers
    assert later == int(one_round * 0.4 / 2 // per_request)
    spent = planned_requests(round_config(cfg, 1)) + 2 * later * per_request
    assert one_round - 2 * per_request <= spent <= one_round
    assert round_config(cfg, 2).generation.max_inputs == later * 3  # a long reply never buys more answers
    assert round_requests(load_config(config, sets[:2]), 1) == 100  # one round: as configured


def _row(i: int, round_no: int = 1, source: str = "teacher") -> Row:
    meta = {"source": source, **({"round": round_no} if round_no > 1 else {})}
    return Row(id=f"r{round_no}-{i}", input=f"in {i}", output=f"out {i}", meta=meta)


def test_probe_rows_come_from_the_round_before_and_are_never_trained_on():
    """The probes are n teacher rows of the round before, chosen by the seed (not by file order); every
    other row of the earlier rounds is trained on; a later round's rows are neither.

    Breaks caught: a probing student trained on its own probe rows (its misses would vanish), seeds
    among the probes, and probes that change when the kept file is reordered (a resumed round would
    aim elsewhere)."""
    kept = [_row(i, source="seed") for i in range(3)] + [_row(i + 3) for i in range(20)] + \
           [_row(i, 2) for i in range(10)] + [_row(i, 3) for i in range(5)]
    probes, rest = split_probes(kept, 2, 6, seed=0)
    assert len(probes) == 6 and all(p.meta["source"] == "teacher" and "round" not in p.meta for p in probes)
    assert {r.id for r in probes} | {r.id for r in rest} == {r.id for r in kept[:23]}
    assert not {r.id for r in probes} & {r.id for r in rest}
    assert {r.id for r in split_probes(kept[::-1], 2, 6, seed=0)[0]} == {r.id for r in probes}
    assert {r.id for r in split_probes(kept, 2, 6, seed=1)[0]} != {r.id for r in probes}
    assert len(split_probes(kept[:4], 2, 6, seed=0)[0]) == 1  # one teacher row of round 1: it probes
    probes3, rest3 = split_probes(kept, 3, 8, seed=0)
    assert {p.meta.get("round") for p in probes3} == {2} and len(rest3) == 33 - 5  # at most half of round 2's 10


def test_reviews_like_the_misses_keep_their_label_and_sentences():
    """Sentiment's later rounds make reviews by code like the ones the student got wrong: the same
    polarity sentences about another training subject, with the example's known label, none excluded.

    Breaks caught: a label taken from somewhere else than the example (the checker would keep wrong
    rows), a held-out eval subject leaking into training inputs, and duplicates of earlier inputs."""
    examples = [{"input": "I had read a few reviews first. I would not recommend the hotel.", "output": "negative"},
                {"input": "I loved the pizza. The pizza was excellent.", "output": "positive"}]
    exclude = {"I would not recommend the app."}
    made = reviews_like(examples, 0, 12, exclude)
    assert len(made) == 12 == len({m["input"] for m in made}) and not exclude & {m["input"] for m in made}
    train_subjects, held_out = _bank(False)[2], set(SUBJECTS) - set(_bank(False)[2])
    for m in made:
        text = m["input"].lower()
        assert m["output"] == ("negative" if "would not recommend" in text else "positive"), m
        assert any(s in text for s in train_subjects) and not any(s in text for s in held_out)
        assert "loved" in text or "would not recommend" in text
        assert sum(f in m["input"] for f in FILLER) <= 1  # the example's filler replaced, not added to
    assert reviews_like(examples, 0, 12, exclude) == made and reviews_like(examples, 1, 12, exclude) != made
    known = reviews_like([{**examples[0], "output": "positive", "reference": "negative"}], 0, 3)
    assert {m["output"] for m in known} == {"negative"}  # the known label, not a teacher's answer


def test_a_fault_point_inside_a_scope_counts_on_its_own(monkeypatch):
    """`round2:send@2` fires at the second send inside the round-2 scope, not at the second send of the
    process.

    Breaks caught: a scoped point that counts the sends before the scope (a test's kill would land in
    round 1)."""
    faults.reset()
    monkeypatch.setenv("DISTILL_FAULT", "round2:send@2=raise")
    for _ in range(5):
        faults.point("send")
    with faults.scope("round2"):
        faults.point("send")
        with pytest.raises(faults.InjectedFault, match="round2:send"):
            faults.point("send")
    faults.reset()


@pytest.mark.slow
def test_a_second_round_aims_at_the_first_students_misses_and_resumes_after_a_kill(tmp_path):
    """Two rounds against the local teacher, SIGKILLed at the second answer request of round 2 (its
    Self-Instruct requests answered), then re-run.

    The round-2 Self-Instruct prompts show the probe rows the first student got wrong (read back from
    that student's own answers), no eval input or reference reaches any teacher prompt, and no finished
    request is sent twice. The learning rate is near zero so the probing student keeps the base model's
    rambling answers and misses.

    Breaks caught: a round seeded by rows the student got right (or by seeds), probe or eval rows in a
    prompt, a round 2 that resends round 1 or itself after the kill, and a round whose rows are lost."""
    rd = tmp_path / "run"
    sets = [*TINY, "generation.input_requests=40", "generation.rounds=2", "generation.probe_rows=8",
            "training.max_steps=2", "training.learning_rate=1e-9", "eval.models=[student]"]
    args = ["run", "--run-dir", str(rd), *[a for s in sets for a in ("--set", s)]]
    asks = round_requests(load_config(None, sets), 2)  # round 2's Self-Instruct requests: then its answers go
    kill = {"DISTILL_FAULT": f"round2:send@{asks + 2}=kill"}
    assert _killed_run(args, kill, tmp_path / "killed.log") == -signal.SIGKILL
    assert not (rd / "stats" / "round2.json").exists()
    r = subprocess.run(distill_cmd(*args), cwd=ROOT, capture_output=True, text=True, env=_env({}))
    assert r.returncode == 0, r.stderr[-3000:]

    probes = read_jsonl(rd / "rounds" / "2" / "probes.jsonl")
    missed = {p["teacher"] for p in probes if p["student"].strip() != p["reference"].strip()}
    assert probes and missed  # the tiny teacher keeps few rows: a handful of probes at most
    assert [p["student"] for p in probes] == _answers(rd / "rounds" / "2" / "student", [p["input"] for p in probes])
    stats = read_json(rd / "stats" / "round2.json")
    assert stats["usage"]["cache_hits"] >= asks, "round 2's requests answered before the kill were sent again"
    assert stats["missed"] == len([p for p in probes if p["student"].strip() != p["reference"].strip()])
    seeds = {s["output"] for s in read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")}
    records = [x for f in sorted((rd / "data").glob("requests*.jsonl")) for x in read_jsonl(f)]
    prompts = [x["messages"][-1]["content"] for x in records if x["messages"][-1]["content"].startswith("Example sentences:")]
    shown = [{line[2:] for line in p.splitlines() if line.startswith("- ")} for p in prompts]
    round2 = [s for s in shown if not s <= seeds]
    assert round2 and all(s <= missed for s in round2), "a round-2 prompt shows a row the student got right"
    right = {p["teacher"] for p in probes} - missed
    assert not any(s & right for s in round2)

    eval_rows = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "eval.jsonl")
    sent = "\n".join(m["content"] for x in records for m in x["messages"])
    assert not [e for e in eval_rows if e["input"] in sent or e["output"] in sent]

    keys = [x["key"] for x in records if x.get("error") is None]
    assert len(keys) == len(set(keys)), "a finished request was sent twice"
    gen = read_jsonl(rd / "data" / "generated.jsonl")
    assert sum(g["meta"].get("round") == 2 for g in gen) == stats["rows_added"] > 0
    rep = read_json(rd / "report.json")
    assert [r["round"] for r in rep["rounds"]] == [1, 2]


def _answers(student: Path, inputs: list[str]) -> list[str]:
    """The probing student's greedy answers, asked again here (batch and token limit as in TINY)."""
    from distill.models.infer import generate_batched
    from distill.models.load import load_model
    from distill.tasks import load_task

    task = load_task("grammar")
    model, tok = load_model(student)
    out = generate_batched(model, tok, [task.student_messages(x) for x in inputs], batch_size=8, max_new_tokens=32)
    return [task.parse_answer(o["raw"]) for o in out]


def _env(extra: dict) -> dict:
    return {**os.environ, **extra}


def _killed_run(args: list[str], extra: dict, log: Path) -> int:
    """`distill` run in its own process group, which is killed after it ends (a SIGKILLed run leaves its
    temporary Prefect server behind, holding the output it inherited: so a file, not a pipe)."""
    with open(log, "w") as out:
        p = subprocess.Popen(distill_cmd(*args), cwd=ROOT, env=_env(extra), start_new_session=True, stdout=out,
                             stderr=subprocess.STDOUT)
        p.wait(timeout=900)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert p.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    return p.returncode
