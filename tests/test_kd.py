"""Logit-level and on-policy distillation: the sparse top-k loss against the dense one, the teacher's
view of the same completion tokens, a few real TRL steps of every method, and a teacher with another
tokenizer refused in one line."""
import json
import math
import subprocess

import pytest
import torch

from distill.config import Student, load_config
from distill.io import read_jsonl, write_jsonl
from distill.models.kd import dense_kd_loss, sparse_kd_loss
from distill.models.kd_train import KDCollator, KDSource, kd_examples
from distill.records import Row
from tests.conftest import ROOT, distill_cmd, tiny_llama


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """KL(p || q) per row, averaged: the textbook formula, one row at a time."""
    total = 0.0
    for p_row, q_row in zip(p_logits.double(), q_logits.double()):
        p, q = torch.softmax(p_row, -1), torch.softmax(q_row, -1)
        total += float(sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()) if pi > 0))
    return total / len(p_logits)


def test_sparse_top_k_loss_matches_the_dense_computation_on_the_same_logits():
    """Breaks caught: a tail bucket left out (top-1 of a confident teacher then costs nothing), the
    student's tail taken from the teacher's ids, padding ids counted, temperature applied to one side."""
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 40), torch.randn(5, 40) * 3
    t_logp = torch.log_softmax(teacher, -1)
    for temp in (1.0, 2.0):
        dense = dense_kd_loss(student, teacher, temp).item()
        assert dense == pytest.approx(_kl(teacher / temp, student / temp) * temp * temp, rel=1e-4)
        lp, ids = t_logp.topk(40, -1)  # k = the vocabulary: nothing in the tail
        assert sparse_kd_loss(student, ids, lp, temp).item() == pytest.approx(dense, rel=1e-4)

    # k = 3: the dense computation over 4 buckets (3 tokens + everything else), built by hand
    lp, ids = t_logp.topk(3, -1)
    s_logp = torch.log_softmax(student, -1)
    t_b = torch.cat([lp.exp(), 1 - lp.exp().sum(-1, keepdim=True)], -1)
    s_top = s_logp.gather(-1, ids).exp()
    s_b = torch.cat([s_top, 1 - s_top.sum(-1, keepdim=True)], -1)
    by_hand = _kl(t_b.log(), s_b.log())
    assert sparse_kd_loss(student, ids, lp).item() == pytest.approx(by_hand, rel=1e-4)
    # padding (id -1) is no token: k=3 padded to 5 is k=3
    pad_ids = torch.cat([ids, torch.full((5, 2), -1)], -1)
    pad_lp = torch.cat([lp, torch.zeros(5, 2)], -1)
    assert sparse_kd_loss(student, pad_ids, pad_lp).item() == pytest.approx(by_hand, rel=1e-4)
    # the loss is zero only where the student matches the teacher's buckets
    assert sparse_kd_loss(teacher, ids, lp).item() == pytest.approx(0, abs=1e-5)


@pytest.fixture(scope="module")
def tok():
    from distill.models.load import base_student_dir, load_model

    return load_model(base_student_dir(Student()))[1]


def _records(n=8):
    from distill.stages.train import to_prompt_completion
    from distill.tasks import get_task

    seeds = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")[:n]
    rows = [Row(id=s["id"], input=s["input"], output=s["output"]) for s in seeds]
    return get_task("grammar"), rows, to_prompt_completion(get_task("grammar"), rows)


def test_the_teacher_reads_its_own_prompt_over_the_same_completion_tokens(tok):
    """Breaks caught: teacher and student logits taken at different completion tokens (one sequence
    cut, an off-by-one in the shift), which silently trains on the wrong targets."""
    from distill.models.kd import completion_positions

    task, rows, records = _records(4)
    shots = [{"input": "He go.", "output": "He goes."}] * 3
    teacher_prompts = [task.teacher_messages(r.input, shots) for r in rows]
    examples, skipped = kd_examples(tok, records, 128, teacher_prompts)
    assert skipped == 0
    batch = KDCollator(tok.pad_token_id)(examples)
    s_pos, t_pos = completion_positions(batch["labels"]), completion_positions(batch["teacher_labels"])
    assert s_pos.sum() == t_pos.sum() > 0
    # the token each selected position predicts is the same, in the same order
    s_next = batch["input_ids"][:, 1:][s_pos[:, :-1]]
    t_next = batch["teacher_input_ids"][:, 1:][t_pos[:, :-1]]
    assert torch.equal(s_next, t_next)
    assert batch["teacher_input_ids"].shape[1] > batch["input_ids"].shape[1] + 30  # the shots are in it
    text = tok.decode(s_next[: len(examples[0]["input_ids"]) - examples[0]["labels"].count(-100)])
    assert text.startswith(rows[0].output)
    # a student sequence cut at max_length keeps the teacher's to the same tokens
    short, _ = kd_examples(tok, records[:1], len(examples[0]["input_ids"]) - 3, teacher_prompts[:1])
    assert short[0]["teacher_labels"][-1] == short[0]["labels"][-1]
    assert len(short[0]["input_ids"]) == len(examples[0]["input_ids"]) - 3


def test_on_policy_settings_reach_trl_and_vllm_sampling_is_planned_for_a_gpu(tmp_path):
    """The DistillationConfig on_policy trains with: the divergence, temperature and sampling length
    from training.*, the same schedule as SFT; vLLM sampling only on a GPU (its logic checked here on CPU)."""
    from distill.models.sft import device_plan, distillation_config

    t = load_config(overrides=["training.method=on_policy", "training.kd_beta=0.5", "training.kd_temperature=0.7",
                               "training.on_policy_max_new_tokens=24", "training.max_steps=7"]).training
    cpu = device_plan(t, cuda=False, bf16_ok=False, flash_attn=False)
    args = distillation_config(t, cpu, tmp_path)
    assert (args.beta, args.temperature, args.max_completion_length, args.max_steps) == (0.5, 0.7, 24, 7)
    assert args.use_vllm is False and args.use_cpu and args.learning_rate == t.learning_rate
    # the memory setting reaches TRL under transformers' current name (the old one warned on every run)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        saving = distillation_config(t.model_copy(update={"gradient_checkpointing": True}), cpu, tmp_path)
    assert saving.activation_checkpointing is True and args.activation_checkpointing is False
    gpu_t = t.model_copy(update={"on_policy_vllm": True})
    with pytest.raises(ValueError, match="on_policy_vllm needs a GPU"):
        distillation_config(gpu_t, cpu, tmp_path)
    gpu = device_plan(gpu_t.model_copy(update={"precision": "fp32"}), cuda=True, bf16_ok=True, flash_attn=False)
    on_gpu = distillation_config(gpu_t, gpu, tmp_path)  # fp32: TrainingArguments checks no device for it
    assert on_gpu.use_vllm is True and on_gpu.vllm_mode == "colocate" and not on_gpu.use_cpu


def _train_steps(tmp_path, method: str, kd: KDSource | None, steps=6, **over):
    from distill.models.load import base_student_dir, load_model, pruned_dir
    from distill.models.sft import device_plan, make_trainer

    t = load_config().training.model_copy(update={"lora": False, "max_steps": steps, "batch_size": 8, "learning_rate": 1e-3,
                                                  "logging_steps": 1, "warmup_ratio": 0.0, "method": method, **over})
    plan = device_plan(t, cuda=False, bf16_ok=False, flash_attn=False)
    torch.manual_seed(0)
    model, tok = load_model(pruned_dir(base_student_dir(Student()), 2))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    _, _, records = _records(8)  # one batch, seen every step: the loss must fall
    trainer = make_trainer(t, plan, model, tok, records, tmp_path / method, kd=kd)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v.detach(), before[k])]
    return losses, changed, trainer


@pytest.mark.slow
@pytest.mark.parametrize("method", ["logit_kd", "on_policy"])
def test_a_few_real_steps_of_each_method_lower_the_loss_and_change_the_weights(tmp_path, method):
    """Real TRL steps on CPU (a 2-layer cut of the base student, the 135M base as the teacher).
    SFT's own few-step test is in test_train_eval.py.

    Breaks caught: a loss built on detached logits or on the teacher's side (weights never change),
    the KD term dropped (logit_kd logs no `kd`), the on-policy trainer never sampling (no completion
    lengths logged)."""
    from distill.models.load import base_student_dir

    teacher = KDSource("the base model", path=base_student_dir(Student()))
    over = {"on_policy_fraction": 1.0, "on_policy_max_new_tokens": 16, "kd_beta": 0.0} if method == "on_policy" else {}
    losses, changed, trainer = _train_steps(tmp_path, method, teacher, **over)
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.8, losses
    assert "model.embed_tokens.weight" in changed and any("layers.1." in k for k in changed)
    logged = {k for h in trainer.state.log_history for k in h}
    if method == "logit_kd":
        assert {"ce", "kd"} <= logged
        assert trainer.state.log_history[-2]["kd"] < trainer.state.log_history[0]["kd"]
    else:
        assert "completions/mean_length" in logged


@pytest.mark.slow
def test_logit_kd_from_stored_top_k_logprobs_trains(tmp_path, tok):
    """The sparse path: top-k logprobs per completion token, as a teacher you can only call returns them."""
    from distill.models.load import base_student_dir, load_model

    teacher, _ = load_model(base_student_dir(Student()))
    _, _, records = _records(8)
    topk = []
    for ex in kd_examples(tok, records, 128)[0]:  # the teacher's top-5 at each of the completion's tokens
        with torch.no_grad():
            logits = teacher(torch.tensor([ex["input_ids"]])).logits[0, :-1]
        pos = [i for i, lab in enumerate(ex["labels"][1:]) if lab != -100]
        lp, ids = torch.log_softmax(logits[pos], -1).topk(5, -1)
        topk.append({"ids": ids.tolist(), "logprobs": lp.tolist()})
    topk[0] = None  # a row without stored logprobs (a seed) learns its own tokens
    losses, changed, trainer = _train_steps(tmp_path, "logit_kd", KDSource("stored", topk=topk))
    assert losses[-1] < losses[0] * 0.8 and "model.embed_tokens.weight" in changed
    assert trainer.train_dataset[0]["topk_ids"] == [[x] for x in trainer.train_dataset[0]["labels"] if x != -100]


@pytest.mark.slow
def test_a_teacher_with_another_tokenizer_is_refused_in_one_line_before_training(tmp_path):
    """Breaks caught: logits of two vocabularies compared position by position (garbage that trains
    without an error), and the refusal coming after the first candidate has already trained."""
    other = tiny_llama(tmp_path / "other-model")
    rd = tmp_path / "run"
    write = tmp_path / "c.yaml"
    write.write_text(json.dumps({
        "extends": str(ROOT / "configs" / "default.yaml"),
        "students": [{"name": "first", "keep_layers": 1, "lora": False, "max_steps": 1},
                     {"name": "other", "base": str(other), "max_steps": 1},
                     {"name": "small", "keep_layers": 2, "lora": False, "max_steps": 1, "method": "logit_kd",
                      "kd_teacher": "other"}]}))
    (rd / "data").mkdir(parents=True)
    seeds = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")[:8]
    write_jsonl(rd / "data" / "train.jsonl", [{"id": s["id"], "input": s["input"], "output": s["output"]} for s in seeds])
    r = subprocess.run(distill_cmd("train", "--config", str(write), "--run-dir", str(rd)), cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if "error" in line.lower()]  # besides a first GGUF conversion's progress
    assert len(err) == 1 and r.stderr.rstrip().endswith(err[0]), r.stderr
    assert "the student 'other' uses tokenizer 'other-model' (9 tokens), the student 'SmolLM2-135M-Instruct.Q4_1' " \
           "(49152 tokens)" in err[0] and "use method: sft" in err[0], err[0]
    assert not (rd / "students").exists(), "a candidate trained before the refusal"


def test_kd_teacher_names_are_checked_before_anything_runs():
    """A kd_teacher that is neither teacher, logprobs nor an earlier student stops in preflight."""
    from distill.config import ConfigError
    from distill.stages.preflight import check_ladder

    def check(*overrides):
        check_ladder(load_config(overrides=list(overrides)))

    with pytest.raises(ConfigError, match=r"field 'students.0.kd_teacher': 'b' is neither 'teacher', 'logprobs' nor "
                                          r"a student listed before this one"):
        check('students=[{"name": "a", "method": "logit_kd", "kd_teacher": "b"}, {"name": "b"}]')
    with pytest.raises(ConfigError, match="field 'training.kd_teacher': 'x' is neither"):
        check("training.method=on_policy", "training.kd_teacher=x")
    with pytest.raises(ConfigError, match="field 'students.0.init_from': 'b' is not a student listed before"):
        check('students=[{"name": "a", "init_from": "b"}, {"name": "b"}]')
    ok = load_config(overrides=['students=[{"name": "b"}, {"name": "a", "method": "logit_kd", "kd_teacher": "b"}]'])
    check_ladder(ok)
    assert [t.method for _, _, t in ok.student_candidates()] == ["sft", "logit_kd"]
