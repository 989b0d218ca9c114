"""The progression path: the frontier and the choice on fixed numbers, depth-pruned students, and a
small ladder trained, evaluated and reported for real."""
import pytest
import torch

from distill.config import load_config
from distill.models.prune import even_layers
from distill.report import choose_model, frontier_keys
from distill.report.tables import fmt_params


def _m(key, role, q, cost):
    return {"key": key, "name": key, "role": role, "metrics": {"gleu": q}, "cost_per_1k_usd": cost}


MODELS = [_m("teacher", "teacher", 0.80, 0.0120), _m("base", "base student", 0.15, 0.0040),
          _m("s135", "distilled student", 0.84, 0.0043), _m("s79", "distilled student", 0.77, 0.0030),
          _m("s57", "distilled student", 0.60, 0.0022), _m("worse", "distilled student", 0.59, 0.0025)]


def test_frontier_keeps_only_undominated_models_cheapest_first():
    # teacher: s135 is cheaper and better; base: s135 costs a little more but s79 is cheaper and better;
    # "worse" costs more than s57 and scores less
    assert frontier_keys(MODELS, "gleu") == ["s57", "s79", "s135"]
    tie = MODELS + [_m("s57-twin", "distilled student", 0.60, 0.0022)]  # identical points dominate neither
    assert frontier_keys(tie, "gleu") == ["s57", "s57-twin", "s79", "s135"]


def test_cheapest_model_meeting_the_target_is_chosen():
    sel = choose_model(MODELS, "gleu", 0.95)  # bar 0.76: s79 (0.77) is the cheapest that clears it
    assert sel["bar"] == pytest.approx(0.76) and sel["chosen"] == "s79" and sel["meets"] == ["s79", "s135"]
    assert sel["message"].startswith("Ship **s79**")
    assert choose_model(MODELS, "gleu", 1.0)["chosen"] == "s135"  # only the student above the teacher
    assert choose_model(MODELS, "gleu", 0.7)["chosen"] == "s57"  # bar 0.56: the cheapest clears it
    assert choose_model(MODELS, "gleu", None)["chosen"] is None


def test_no_model_meeting_the_target_is_said_plainly():
    sel = choose_model(MODELS, "gleu", 1.1)  # bar 0.88: nobody, not even the best student
    assert sel["chosen"] is None and sel["meets"] == []
    assert sel["message"].startswith("**No student reaches 110% of the teacher's gleu (0.88)**")
    assert "the best, s135, scores 0.84" in sel["message"]


def test_even_layers_are_evenly_spaced_with_both_ends():
    assert even_layers(30, 8) == [0, 4, 8, 12, 17, 21, 25, 29]
    assert even_layers(30, 16)[0] == 0 and even_layers(30, 16)[-1] == 29 and len(even_layers(30, 16)) == 16
    assert even_layers(30, 30) == list(range(30)) and even_layers(30, 1) == [0]


def test_ladder_config_extends_the_default():
    cfg = load_config("configs/ladder.yaml")
    default = load_config(None)
    assert cfg.filter_specs() == default.filter_specs() and cfg.generation == default.generation
    assert [s.name for s in cfg.students] == ["smollm2-135m-lora", "smollm2-L16-full", "smollm2-L8-full"]
    cands = cfg.student_candidates()
    assert [k for k, _, _ in cands] == ["smollm2-135m-lora", "smollm2-L16-full", "smollm2-L8-full"]
    assert cands[0][2].lora is True and cands[1][2].lora is False and cands[1][2].learning_rate == 2e-4
    assert cfg.quality_target == 0.95


def test_kd_config_compares_three_methods_on_the_16_layer_cut():
    cfg = load_config("configs/kd.yaml")
    cands = {k: (s, t) for k, s, t in cfg.student_candidates()}
    assert list(cands) == ["smollm2-135m-lora", "L16-sft", "L16-logit-kd", "L16-on-policy"]
    cut = [cands[k] for k in ("L16-sft", "L16-logit-kd", "L16-on-policy")]
    assert [t.method for _, t in cut] == ["sft", "logit_kd", "on_policy"]
    # Minitron's order: the distilled 135M student is cut (its least useful block) and teaches the cut
    assert {(s.keep_layers, s.prune, s.init_from) for s, _ in cut} == {(16, "block", "smollm2-135m-lora")}
    assert {t.max_steps for _, t in cut} == {200} and {t.learning_rate for _, t in cut} == {2e-4}
    assert not any(t.lora for _, t in cut) and all(t.kd_teacher == "smollm2-135m-lora" for _, t in cut[1:])
    assert cfg.quality_target == 0.9 and cfg.generation.input_requests == 640


@pytest.mark.slow
def test_small_ladder_trains_evaluates_and_reports(tmp_path):
    from distill.io import read_jsonl, write_jsonl
    from distill.stages import evaluate, report, train
    from distill.stages.context import prepare_run
    from tests.conftest import ROOT, opened

    seeds = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")
    ctx, cfg, rd = opened(prepare_run(None, tmp_path / "run", [
        "students=[{name: big}, {name: small, keep_layers: 6, prune: block, lora: false, learning_rate: 3.0e-4, "
        "method: logit_kd, kd_teacher: big}, "
        "{name: warm, init_from: small, lora: false, max_steps: 1, method: on_policy, kd_teacher: big}]",
        "training.on_policy_max_new_tokens=8",
        "quality_target=0.5", "training.max_steps=2", "training.batch_size=4", "training.save_steps=2",
        "eval.models=[base_student, student]", "eval.max_rows=6", "eval.batch_size=6", "eval.max_new_tokens=24"]))
    write_jsonl(rd / "data" / "train.jsonl", [{"id": s["id"], "input": s["input"], "output": s["output"],
                                              "reference": s["output"], "meta": {}} for s in seeds])
    stats = train.run(ctx)
    small = stats.students["small"]
    assert small.keep_layers == 6 and small.lora is False and small.steps == 2
    # a block cut: the first layers and the last kept, one contiguous run of the 30 dropped
    kept = small.kept_layers
    assert len(kept) == 6 and kept[-1] == 29 and sum(b - a > 1 for a, b in zip(kept, kept[1:])) == 1
    assert small.base == str(rd / "checkpoints" / "pruned-base-block-L6")
    # the cut student learned the distribution of the one trained before it
    assert small.method == "logit_kd" and small.kd_teacher == "the student 'big'"
    assert stats.students["big"].method == "sft"
    warm = stats.students["warm"]  # on-policy from the cut student's weights, not from the base
    assert warm.base == str(rd / "students" / "small") and warm.keep_layers == 6 and warm.method == "on_policy"
    assert warm.parameters == small.parameters
    assert small.parameters < 0.5 * stats.students["big"].parameters
    assert (rd / "students" / "small" / "config.json").exists() and (rd / "students" / "big" / "config.json").exists()
    # init_from with keep_layers cuts the trained weights of the earlier student, not the base's
    from distill.config import LadderStudent
    from distill.models.load import load_model
    from distill.stages.train import candidate_base

    path, layers = candidate_base(LadderStudent(name="cut", init_from="big", keep_layers=4), ctx.dir, [])
    assert path == rd / "checkpoints" / "pruned-big-even-L4" and layers == [0, 10, 19, 29]
    # an evenly spaced cut of the base comes from the cache and names its layers all the same
    even_path, even_kept = candidate_base(LadderStudent(name="e", keep_layers=4), ctx.dir, [])
    assert even_kept == [0, 10, 19, 29] and not str(even_path).startswith(str(rd))
    cut_model, _ = load_model(path)
    big_model, _ = load_model(rd / "students" / "big")
    assert cut_model.config.num_hidden_layers == 4
    assert torch.equal(cut_model.model.layers[1].mlp.down_proj.weight,
                       big_model.model.layers[10].mlp.down_proj.weight)
    ev = evaluate.run(ctx)
    assert set(ev.models) == {"base_student", "student:big", "student:small", "student:warm"}
    assert ev.models["student:small"].failed == 0
    rep = report.run(ctx)
    assert [r["key"] for r in rep["models"]][:1] == ["base_student"] and len(rep["models"]) == 4
    assert rep["frontier"] and set(rep["frontier"]) <= {r["key"] for r in rep["models"]}
    # no teacher evaluated: nothing to measure the target against, and the report says nothing false
    assert rep["selection"]["chosen"] is None
    md = (rd / "report.md").read_text()
    assert f"| small | {fmt_params(small.parameters)} | 6 (" in md
    assert "| full | logit_kd from the student 'big' | 2 |" in md and "| LoRA | sft | 2 |" in md
    assert (rd / "frontier.png").stat().st_size > 0
