"""Real TRL training of a few steps, the saved student, and the evaluation harness."""
import os
import subprocess

import pytest

from distill.config import load_config
from distill.io import read_json, read_jsonl, write_jsonl
from distill.models.sft import device_plan
from distill.stages.context import prepare_run
from distill.teacher.gguf_server import served_type
from tests.conftest import ROOT, TINY, distill_cmd, opened


def _seed_rows(n=24):
    seeds = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")
    return [{"id": s["id"], "input": s["input"], "output": s["output"], "reference": s["output"], "meta": {}}
            for s in seeds[:n]]


def test_the_6_shot_base_student_is_taken_as_the_teacher_only_when_it_is_the_same_file_server_and_requests():
    """Breaks caught: the teacher's answers copied into the 6-shot row when the teacher differs from the
    base student there (another file, sampled answers, other shots, another engine, not evaluated at all),
    or into another prompt's row."""
    from types import SimpleNamespace

    from distill.stages.gguf_eval import teacher_twin
    from distill.teacher.gguf_server import llama_server_binary

    few, zero = SimpleNamespace(key="base_few_shot"), SimpleNamespace(key="base_zero_shot")
    assert teacher_twin(load_config(None, []), few, True) is (llama_server_binary() is not None)
    assert not teacher_twin(load_config(None, []), zero, True)
    assert not teacher_twin(load_config(None, []), few, False)
    other_type = "q8_0" if served_type() == "bf16" else "bf16"  # the teacher's file, not the one evaluated
    for o in ("teacher.endpoint.local.weights=original", f"teacher.endpoint.local.weights={other_type}",
              "teacher.temperature=0.7", "eval.engine=transformers",
              "teacher.endpoint.local.engine=llama-cpp-python", "eval.models=[base_few_shot, student]"):
        assert not teacher_twin(load_config(None, [o]), few, True), o


def test_device_plan_bf16_and_padding_free_on_gpu_bf16_autocast_on_a_bf16_cpu_else_fp32():
    t = load_config().training
    gpu = device_plan(t, cuda=True, bf16_ok=True, flash_attn=True)
    assert gpu == {"precision": "bf16", "padding_free": True, "packing": False,
                   "attn_implementation": "flash_attention_2", "device": "cuda"}
    assert device_plan(t, cuda=True, bf16_ok=False, flash_attn=False)["precision"] == "fp16"
    assert device_plan(t, cuda=True, bf16_ok=True, flash_attn=False)["padding_free"] is False
    cpu = device_plan(t, cuda=False, bf16_ok=False, flash_attn=False)
    assert cpu["precision"] == "fp32" and cpu["padding_free"] is False and cpu["device"] == "cpu"
    assert device_plan(t, cuda=False, bf16_ok=True, flash_attn=False)["precision"] == "bf16"
    with pytest.raises(ValueError, match="AVX512-BF16 or AMX"):
        device_plan(t.model_copy(update={"precision": "bf16"}), cuda=False, bf16_ok=False, flash_attn=False)
    with pytest.raises(ValueError, match="needs a GPU"):
        device_plan(t.model_copy(update={"precision": "fp16"}), cuda=False, bf16_ok=True, flash_attn=False)
    # asked for on CPU, padding-free and packing run under SDPA (exact: see the loss test below)
    for asked in ({"padding_free": "on"}, {"packing": True}):
        plan = device_plan(t.model_copy(update=asked), cuda=False, bf16_ok=False, flash_attn=False)
        assert plan["attn_implementation"] == "sdpa" and (plan["padding_free"] or plan["packing"])


def test_on_cpu_the_fused_lm_head_scores_only_the_labelled_positions_with_the_same_log_probs():
    """Breaks caught: TRL's switch renamed or moved (every position scored again: CPU steps 25% slower, with
    nothing failing), a switch that changes the scores, and one left switched after training."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer import utils

    from distill.models.sft import compact_lm_head_on_cpu

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(0, 64, (2, 10))
    labels = ids.clone()
    labels[:, :6] = -100  # the prompt: no label
    scored, apply = [], utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        scored.append(hidden.shape[0])
        return apply(hidden, *args)

    utils._ChunkedLogProbFunction.apply = spy
    try:
        full = model(input_ids=ids, labels=labels, fused_lm_head=True)
        with compact_lm_head_on_cpu():
            compact = model(input_ids=ids, labels=labels, fused_lm_head=True)
        after = model(input_ids=ids, labels=labels, fused_lm_head=True)
    finally:
        utils._ChunkedLogProbFunction.apply = apply
    assert scored == [2 * 9, 2 * 4, 2 * 9]  # shifted by one: 9 positions a row, 4 of them labelled
    assert torch.allclose(full.log_probs, compact.log_probs, atol=1e-6) and torch.allclose(full.loss, compact.loss)
    assert torch.allclose(full.entropy, compact.entropy, atol=1e-6) and torch.equal(full.is_top1, compact.is_top1)
    assert torch.equal(after.log_probs, full.log_probs)


def test_adapters_trained_over_bf16_frozen_weights_merge_onto_the_fp32_weights():
    """Breaks caught: the adapters merged into the bf16 copy the student trained over (every weight of the
    saved student rounded to bf16), or the adapter values lost on the way to the fp32 copy."""
    import torch
    from peft import LoraConfig, get_peft_model

    from distill.config import Student
    from distill.models.load import base_student_dir, load_model
    from distill.models.sft import merge

    base = base_student_dir(Student())
    model, _ = load_model(base, dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.lora_A["default"].weight.dtype == torch.float32  # the adapters train in fp32
    torch.manual_seed(0)
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.02)
    delta = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight) * 2.0
    merged = merge(model, {"frozen_weights": "bf16", "device": "cpu"}, True, base)
    fp32, _ = load_model(base, dtype=torch.float32)
    want = fp32.model.layers[0].self_attn.q_proj.weight + delta
    got = merged.model.layers[0].self_attn.q_proj.weight
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)
    assert not torch.equal(got, got.to(torch.bfloat16).float())  # not bf16-rounded
    assert torch.equal(merged.model.layers[1].mlp.up_proj.weight, fp32.model.layers[1].mlp.up_proj.weight)


@pytest.mark.slow
def test_padding_free_batches_give_the_padded_loss_under_sdpa(tmp_path):
    """Concatenated rows must not attend to each other: through TRL's collator and loss on the real
    student, a padding-free batch scores the same loss as the padded batch of the same rows."""
    import torch

    from distill.config import Student
    from distill.models.load import base_student_dir, load_model
    from distill.models.sft import make_trainer
    from distill.records import Row
    from distill.stages.train import to_prompt_completion
    from distill.tasks import get_task

    t = load_config().training.model_copy(update={"lora": False, "batch_size": 6})
    records = to_prompt_completion(get_task("grammar"), [Row.from_dict(r) for r in _seed_rows(6)])
    model, tok = load_model(base_student_dir(Student()))
    losses, batches = {}, {}
    for mode in ("off", "on"):
        plan = device_plan(t.model_copy(update={"padding_free": mode}), cuda=False, bf16_ok=False, flash_attn=False)
        trainer = make_trainer(t, plan, model, tok, records, tmp_path / mode)
        batches[mode] = batch = next(iter(trainer.get_train_dataloader()))  # all 6 rows: one batch
        with torch.no_grad():
            losses[mode] = trainer.compute_loss(trainer.model, dict(batch)).item()
    flat = batches["on"]
    assert "attention_mask" not in flat and flat["input_ids"].shape[0] == 1
    assert int((flat["position_ids"][0] == 0).sum()) == 6
    assert flat["input_ids"].shape[1] == int(batches["off"]["attention_mask"].sum())  # no pad token left
    assert losses["on"] == pytest.approx(losses["off"], abs=1e-4)
    # what the test guards against: a mask over the whole sequence lets each row see the rows before it
    with torch.no_grad():
        leaky = trainer.compute_loss(trainer.model, {**flat, "attention_mask": torch.ones_like(flat["input_ids"])})
    assert abs(leaky.item() - losses["off"]) > 0.05


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from distill.stages import train

    rd = tmp_path_factory.mktemp("train") / "run"
    ctx, cfg, rd = opened(prepare_run(None, rd, ["training.max_steps=8", "training.batch_size=8",
                                     "training.logging_steps=1", "training.learning_rate=2e-3"]))
    write_jsonl(rd / "data" / "train.jsonl", _seed_rows(32))
    return cfg, rd, train.run(ctx)


@pytest.mark.slow
def test_training_changes_weights_and_lowers_the_loss(trained):
    import torch
    from safetensors.torch import load_file

    from distill.models.load import base_student_dir

    cfg, rd, stats = trained
    assert stats.steps == 8 and stats.lora
    losses = stats.losses
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    before = load_file(str(base_student_dir(cfg.student) / "model.safetensors"))
    after = load_file(str(rd / "student" / "model.safetensors"))
    assert set(before) == set(after), "LoRA was not merged into plain weights"
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("q_proj" in k for k in changed) and len(changed) >= 30
    assert not any("embed" in k for k in changed), "LoRA should leave the embeddings alone"


@pytest.mark.slow
def test_saved_student_loads_with_plain_from_pretrained_and_generates(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, rd, _ = trained
    assert (rd / "student" / "model.safetensors").exists()
    assert not list((rd / "student").glob("*.bin")), "weights must be safetensors only"
    tok = AutoTokenizer.from_pretrained(rd / "student")
    model = AutoModelForCausalLM.from_pretrained(rd / "student")
    enc = tok.apply_chat_template([{"role": "system", "content": ""},
                                   {"role": "user", "content": "Fix the grammar: She go to school."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()


@pytest.mark.slow
def test_distill_run_end_to_end_then_evaluate_another_file_without_retraining(tmp_path):
    rd = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [a for s in [*TINY, "eval.serving.rounds=3", "eval.cascade.enabled=true", "eval.judge.enabled=true",
                           "eval.judge.models=[base_few_shot, student]"]
            for a in ("--set", s)]
    r = subprocess.run(distill_cmd("run", "--run-dir", str(rd), *args), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"report: {rd / 'report.md'}" in r.stdout
    rep = read_json(rd / "report.json")
    assert [m["key"] for m in rep["models"]] == ["teacher", "base_student", "base_zero_shot", "base_few_shot",
                                                 "base_many_shot", "base_retrieval", "student", "cascade"]
    assert [m["role"] for m in rep["models"]][2:6] == ["prompted base student"] * 4
    engines = set()
    for m in rep["models"]:
        assert list(m["metrics"]) == ["gleu", "sari", "exact_match", "chrf", "google_bleu"] and m["cost_per_1k_usd"] > 0
        assert set(m["intervals"]) == set(m["metrics"])  # every metric with its interval, SARI's included
        assert m["latency_p95_s"] >= m["latency_p50_s"] > 0
        iv = m["interval"]
        assert iv["low"] <= iv["value"] <= iv["high"] and iv["value"] == pytest.approx(m["metrics"]["gleu"], abs=0.005)
        # every self-hosted model, the teacher included, priced by the one serving measurement
        assert len(m["serving"]["usd_per_1k"]) == 3 and m["cost_per_1k_usd"] == m["serving"]["cost_per_1k_usd"]
        engines.add(m["serving"]["engine"])
        if m["key"] != "teacher":
            assert m["vs_teacher"]["verdict"] in ("beats", "matches", "falls short of")
    assert len(engines) == 1 and "dequantised" in rep["models"][0]["cost_rule"]
    # the quality pass: every self-hosted model on llama-server alike, the student as a GGUF of the served type
    assert all(m["engine"].startswith("llama-server (local, 8 slots") for m in rep["models"][:7])
    served = f"smollm2-135m-distilled.{served_type()}.gguf"  # bf16 where the CPU computes it natively
    assert rep["models"][6]["engine"].endswith(served + ")")
    # the base student under the teacher's 6-shot prompt is the teacher (same file, prompt and server): its
    # answers and serving seconds are the teacher's, not asked or measured twice
    few, tea = rep["models"][3], rep["models"][0]
    assert few["engine"].endswith("the teacher's answers (same file, prompt and server)")
    assert few["serving"]["measured_as"] == "teacher" and few["serving"]["seconds"] == tea["serving"]["seconds"]
    assert (rd / "eval" / "eval" / "base_few_shot.jsonl").read_bytes() == (rd / "eval" / "eval" / "teacher.jsonl").read_bytes()
    # the file `distill export` ships when it is of the export's type (q8_0), else kept apart from the export
    assert (rd / ("export" if served_type() == "q8_0" else "served") / served).stat().st_size > 10_000_000
    assert not (rd / "export").exists() or served_type() == "q8_0"
    # the progression: many shots (as many as fit a slot of the eval server) and retrieved shots, each with its
    # prompt length, what the server's prompt cache reused, and its paired difference to the student
    many, near = rep["models"][4], rep["models"][5]
    assert many["name"].endswith("(base, 12-shot)") and many["prompt_tokens"] > 1.5 * rep["models"][3]["prompt_tokens"]
    assert near["name"].endswith("(base, 6 retrieved)") and "TF-IDF" in near["prompt"]
    assert many["cached_tokens"] > 0 and "prompt cache" in many["cost_rule"]
    steps = ["teacher", "base_student", "base_zero_shot", "base_few_shot", "base_many_shot", "base_retrieval"]
    assert rep["progression"]["student"] == "student" and rep["progression"]["steps"] == steps
    for m in rep["models"][:6]:
        d = m["vs_student"]["student"]
        assert d["low"] <= d["difference"] <= d["high"] and m["cost_vs_student"]["ratio"] > 0
    assert (rd / "progression.png").stat().st_size > 10_000
    assert [s["stage"] for s in rep["bill"]["one_off"]] == ["teacher generation", "teacher adaptation", "judge",
                                                           "evaluation's pairwise judge", "training", "evaluation"]
    usd = {s["stage"]: s["usd"] for s in rep["bill"]["one_off"]}
    assert usd["teacher generation"] > 0 and usd["training"] > 0 and usd["evaluation's pairwise judge"] > 0
    assert rep["data"]["generated"] == rep["data"]["kept"] + rep["data"]["dropped"]
    assert (rd / "frontier.png").stat().st_size > 10_000
    # the cascade: its routed share, the student's price plus the teacher's on that share, round by round
    cas, stu, tea = rep["models"][-1], rep["models"][6], rep["models"][0]
    share = cas["cascade"]["routed_share"]
    assert 0 <= share <= 1 and cas["role"] == "cascade" and f"{share:.0%} routed to the teacher" in cas["prompt"]
    assert cas["serving"]["usd_per_1k"] == [round(a + share * b, 7) for a, b in
                                            zip(stu["serving"]["usd_per_1k"], tea["serving"]["usd_per_1k"])]
    routed = [p["routed"] for p in read_jsonl(rd / "eval" / "eval" / "cascade.jsonl")]
    assert len(routed) == 8 and sum(routed) / 8 == share
    # latency is time per request wherever the serving measurement ran: eval.serving.latency_requests (8)
    # of its requests, each served alone
    lat = sorted(stu["serving"]["latency_s"])
    assert len(lat) == min(stu["serving"]["requests"], 8) and lat[0] <= stu["latency_p50_s"] <= stu["latency_p95_s"] <= lat[-1]
    md = (rd / "report.md").read_text()
    assert f"Latency: {len(lat)} requests, each alone" in md
    for text in ("gleu 95% CI", "gleu minus teacher (95% CI)", "gleu is the GLEU of grammatical error correction",
                 "sari is Xu et al.'s SARI", "## Was fine-tuning needed? The progression", "![the progression](progression.png)",
                 "| step | prompt | prompt tokens |", "## The whole bill", "Break-even",
                 "**Cascade:** the student answers first"):
        assert text in md, text
    # the pairwise judge (the local teacher): the models named against the teacher's answers, both
    # orders asked unless the answers are the same; the rows in report.md under the self-preference warning
    pj = rep["pairwise_judge"]
    assert pj["judge"] == "SmolLM2-135M-Instruct" and "is the teacher" in pj["warning"]
    assert list(pj["models"]) == ["base_few_shot", "student"]  # eval.judge.models, in the evaluation's order
    verdicts = read_jsonl(rd / "eval" / "eval" / "pairwise-judge.jsonl")
    asked = sum(v["model_first"] != "same answer" for v in verdicts)
    assert pj["requests_sent"] + pj["cache_hits"] == 2 * asked > 0 and pj["cost_usd"] > 0
    for key, res in pj["models"].items():
        mine = [v for v in verdicts if v["model"] == key]
        assert res["n"] == 8 == len(mine) and res["win"] + res["tie"] + res["loss"] == 8
        assert res["win"] == sum(v["model_first"] == "A" and v["model_second"] == "B" for v in mine)
        assert res["win_rate"]["low"] <= res["win_rate"]["value"] <= res["win_rate"]["high"]
    assert pj["models"]["base_few_shot"]["same_answer"] == 8  # the teacher's own answers: a tie, never asked
    assert "## Pairwise judge" in md and "> **Self-preference:** the judge is the teacher" in md
    assert f"| {rep['models'][6]['name']} | {pj['models']['student']['win']} |" in md
    page = (rd / "report.html").read_text()
    assert '<section id="judge">' in page and "Self-preference:" in page
    # evaluated again: every verdict asked before comes from the request store, none is sent twice
    ev = subprocess.run(distill_cmd("evaluate", "--run-dir", str(rd), "--set", "eval.models=[teacher,student]", "--set",
                                    "eval.judge.models=[student]", "--set", "eval.cascade.enabled=false", "--set",
                                    "eval.serving.rounds=1"),
                        cwd=ROOT, env=env, capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr[-3000:]
    again = read_json(rd / "eval" / "eval" / "summary.json")["judge"]
    assert list(again["models"]) == ["student"] and again["cache_hits"] > 0
    stored = [x["key"] for x in read_jsonl(rd / "data" / "requests.judge.jsonl") if x.get("error") is None]
    assert len(stored) == len(set(stored)) == pj["requests_sent"] + again["requests_sent"]

    # the model card carries the report's table, cascade row included
    ex = subprocess.run(distill_cmd("export", "--run-dir", str(rd), "--format", "hf"), cwd=ROOT, env=env,
                        capture_output=True, text=True)
    assert ex.returncode == 0, ex.stderr[-3000:]
    card = (rd / "export" / "hf" / "README.md").read_text()
    assert "| model | role | prompt |" in card and "| cascade |" in card and "95% paired bootstrap" in card
    # the verdict and the table end the console output, as in report.md
    out = " ".join(r.stdout.split())  # the console wraps lines
    assert "95% paired bootstrap" in out and "vs teacher" in out and "lower cost" not in md + out

    other = tmp_path / "other.jsonl"
    evals = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "eval.jsonl")[100:106]
    write_jsonl(other, evals)
    student_mtime = (rd / "student" / "model.safetensors").stat().st_mtime
    r = subprocess.run(distill_cmd("evaluate", "--run-dir", str(rd), "--set", f"eval.path={other}", "--set", "eval.max_rows=6",
                                   "--set", "eval.models=[teacher,base_student,student]", "--set", "eval.engine=transformers",
                                   "--set", "eval.judge.models=[student]"),
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = read_json(rd / "eval" / "other" / "summary.json")
    assert summary["n"] == 6 and set(summary["models"]) == {"teacher", "base_student", "student", "cascade"}
    assert [summary["models"][k]["engine"].split(" (")[0] for k in ("base_student", "student")] == ["transformers"] * 2
    assert (rd / "student" / "model.safetensors").stat().st_mtime == student_mtime
    assert read_json(rd / "eval" / "eval" / "summary.json")["n"] == 8  # the main eval is untouched

    # a tokenised benchmark beside the task's own set: a source file and 4 reference files, a published row
    from distill.text import detokenize, tokenize

    bench, rows = tmp_path / "bench", read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "eval.jsonl")[110:116]
    bench.mkdir()
    (bench / "test.src").write_text("".join(tokenize(r["input"]) + "\n" for r in rows))
    for i, pick in enumerate(("output", "output", "input", "output")):  # one annotator left the sentences alone
        (bench / f"test.ref{i}").write_text("".join(tokenize(r[pick]) + "\n" for r in rows))
    refs = ", ".join(str(bench / f"test.ref{i}") for i in range(4))
    sets = ["--set", f"eval.sets={{bench: {{source: {bench / 'test.src'}, references: [{refs}], tokenized: true}}}}",
            "--set", 'eval.published=[{system: Published-System, set: bench, metric: gleu, value: 61.4, '
                     'source: "Some et al. 2023, Table 2"}]']
    r = subprocess.run(distill_cmd("evaluate", "--run-dir", str(rd), "--set", "eval.max_rows=6", "--set",
                                   "eval.models=[teacher,student]", "--set", "eval.judge.models=[student]", *sets),
                       cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(distill_cmd("report", "--run-dir", str(rd), *sets), cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    bsum = read_json(rd / "eval" / "test" / "summary.json")
    assert bsum["name"] == "bench" and bsum["n"] == 6 and set(bsum["models"]) == {"teacher", "student"}
    assert bsum["tokenized"]
    for p in read_jsonl(rd / "eval" / "test" / "student.jsonl"):  # the model saw plain text; its answer is scored tokenised
        assert p["prediction"] == tokenize(detokenize(p["prediction"])) and len(p["references"]) == 4
    for m in bsum["models"].values():
        assert {"gleu", "sari"} <= set(m["intervals"])
        assert m["intervals"]["sari"]["low"] <= m["metrics"]["sari"] <= m["intervals"]["sari"]["high"]
    md = (rd / "report.md").read_text()
    bench_md = md.split("### bench", 1)[1]
    assert "4 references per row, tokenised" in bench_md
    assert "| Published-System (reported in Some et al. 2023, Table 2) | published |" in bench_md
    assert "| gleu | sari |" in bench_md
    assert "gleu minus teacher (95% CI)" in md.split("### bench", 1)[0]  # the headline table is still there


@pytest.mark.slow
def test_two_training_processes_share_the_batches_and_one_writes_the_student(tmp_path):
    """The multi-process path (`accelerate launch` on GPUs) checked with two CPU processes over gloo."""
    import sys
    from pathlib import Path

    rd = tmp_path / "run"
    prepare_run(None, rd, [])
    write_jsonl(rd / "data" / "train.jsonl", _seed_rows(32))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "distill.cli", "train",
                        "--run-dir", str(rd), "--set", "training.max_steps=2", "--set", "training.batch_size=4",
                        "--set", "training.logging_steps=1"],
                       cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    stats = read_json(rd / "stats" / "train.json")
    # each optimizer step took a batch from each process: 2 steps x 2 processes x 4 rows of 32
    assert stats["processes"] == 2 and stats["steps"] == 2 and stats["epochs"] == 0.5
    assert " ".join((r.stdout + r.stderr).split()).count("student saved to") == 1  # rich wraps long lines
    assert (rd / "student" / "model.safetensors").exists()
    assert not [p for p in rd.iterdir() if p.name.startswith(".student")], "a half-written student was left behind"
