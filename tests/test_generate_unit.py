"""Generation logic that needs no server: few-shot choice, the self-consistency vote, request planning."""
from distill.config import load_config
from distill.io import load_examples
from distill.stages.context import few_shot_examples
from distill.stages.shards import answer_requests, vote
from distill.tasks import get_task
from tests.conftest import ROOT

task = get_task("grammar")


def rep(text, finish="stop"):
    return {"text": text, "finish_reason": finish, "error": None}


def test_vote_takes_the_majority_and_keeps_the_counts():
    answer, votes, err = vote(task, [rep("She goes home."), rep("She went home."), rep(" She goes  home.")])
    assert answer == "She goes home." and err is None
    assert votes == {"She goes home.": 2, "She went home.": 1}


def test_vote_ties_go_to_the_earliest_sample_and_failures_do_not_vote():
    answer, votes, _ = vote(task, [{"text": None, "error": "boom"}, rep("B."), rep("A.")])
    assert answer == "B." and votes == {"B.": 1, "A.": 1}


def test_truncated_or_failed_replies_are_no_answer():
    answer, votes, err = vote(task, [rep("She goes", finish="length")])
    assert answer is None and err == "truncated reply (finish_reason=length)"
    answer, _, err = vote(task, [{"text": None, "error": "RateLimitError(429): slow down"}])
    assert answer is None and err.startswith("RateLimitError")


def test_k_samples_differ_only_by_seed_and_k1_is_greedy():
    seeds = load_examples(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")
    cfg = load_config(None, ["generation.samples_per_input=3"])
    shots = few_shot_examples(cfg, seeds)
    reqs = answer_requests(cfg, task, "She go home.", shots)
    assert len({r.key for r in reqs}) == 3 and [dict(r.params)["seed"] for r in reqs] == [0, 1, 2]
    assert all(dict(r.params)["temperature"] == cfg.generation.sample_temperature for r in reqs)
    [greedy] = answer_requests(load_config(), task, "She go home.", shots)
    assert dict(greedy.params)["temperature"] == 0.0


def test_few_shot_examples_are_fixed_varied_and_mostly_edits():
    seeds = load_examples(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")
    cfg = load_config()
    shots = few_shot_examples(cfg, seeds)
    assert shots == few_shot_examples(cfg, seeds)
    assert len(shots) == cfg.teacher.adaptation.few_shot
    assert len({s["error_type"] for s in shots}) == len(shots)
    assert sum(s["input"] == s["output"] for s in shots) <= 1


def test_few_shot_examples_go_round_robin_over_kinds_when_there_are_more_shots_than_kinds():
    seeds = load_examples(ROOT / "distill" / "tasks" / "sentiment" / "seeds.jsonl")
    cfg = load_config("configs/sentiment.yaml")
    shots = few_shot_examples(cfg, seeds)
    labels = [s["output"] for s in shots]
    assert len(shots) == 6 and labels.count("positive") == labels.count("negative") == 3
    # each round of two holds one of each label, so neither label piles up at the end of the prompt
    assert all(set(labels[i:i + 2]) == {"positive", "negative"} for i in range(0, 6, 2))
