"""Several tasks, one student base (`distill multitask`): bad input stopped before anything is made, the
merged adapter equal to its method's formula, and a tiny two-task run making and comparing every way."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from distill.cli import app
from distill.io import read_json, read_jsonl
from tests.conftest import ROOT, TINY

SHIPPED = ROOT / "distill" / "configs"
LAYER = "layers.0.self_attn.q_proj"


def run_cli(*args):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, (r.stderr if hasattr(r, "stderr") else r.output).strip()


def tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with the bundled student's tokenizer: built here, nothing downloaded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.config import Student
    from distill.models.load import base_student_dir

    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(folder)
    for f in base_student_dir(Student()).glob("*token*"):
        shutil.copy(f, folder / f.name)
    return folder


def lora(base: Path, out: Path, seed: int, alpha: int) -> Path:
    """A LoRA adapter with random A and B (init_lora_weights=False), as a trained one would be."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


def factors(adapter: Path, layer: str = LAYER) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, B, alpha / r) of one layer of a saved adapter."""
    w = load_file(str(adapter / "adapter_model.safetensors"))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    a = next(v for k, v in w.items() if layer in k and "lora_A" in k)
    b = next(v for k, v in w.items() if layer in k and "lora_B" in k)
    return a.astype(np.float64), b.astype(np.float64), cfg["lora_alpha"] / cfg["r"]


def ties_by_hand(tensors: list[np.ndarray], weights: list[float], density: float) -> np.ndarray:
    """TIES (Yadav et al. 2023) as PEFT applies it: keep each tensor's top-density share by magnitude, elect
    each entry's sign by the sum of the kept values, average the weighted values that agree with it."""
    kept = []
    for t in tensors:
        k = int(density * t.size)
        cut = np.sort(np.abs(t).ravel())[::-1][k - 1]
        kept.append(np.where(np.abs(t) >= cut, t, 0.0))
    stack = np.stack(kept)
    sign = np.where(stack.sum(0) >= 0, 1.0, -1.0)
    agree = np.sign(stack) == sign
    weighted = stack * np.array(weights)[:, None, None]
    return (weighted * agree).sum(0) / np.maximum(agree.sum(0), 1)


def check_formula(adapters: list[Path], merged: Path, method: str, weights: list[float], density: float | None) -> None:
    """The merged adapter's layer against the method's formula on the task adapters' same layer."""
    parts = [factors(a) for a in adapters]
    am, bm, sm = factors(merged)
    if method == "cat":  # task arithmetic, exact: the merged delta is the weighted sum of the deltas
        want = sum(w * s * b @ a for (a, b, s), w in zip(parts, weights))
        np.testing.assert_allclose(sm * bm @ am, want, rtol=1e-4, atol=1e-6)
    elif method == "ties":  # TIES on each factor, the weight and the LoRA scale split evenly between A and B
        root = [np.sqrt(w * s) for (_, _, s), w in zip(parts, weights)]
        np.testing.assert_allclose(am, ties_by_hand([a for a, _, _ in parts], root, density), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(bm, ties_by_hand([b for _, b, _ in parts], root, density), rtol=1e-4, atol=1e-6)
        assert sm == 1.0
    else:
        raise AssertionError(method)


@pytest.mark.parametrize("method,density", [("cat", None), ("ties", 0.5)])
def test_a_merged_adapter_is_its_methods_formula_and_the_student_carries_it(tmp_path, method, density):
    """Breaks if the weights, the LoRA scales or the density are passed wrong, or if the student saved is not
    the base with the merged delta added (one layer checked against numpy)."""
    from distill.models.merge import MERGED, merge_adapters

    base = tiny_llama(tmp_path / "base")
    adapters = {"a": lora(base, tmp_path / "a", 1, alpha=8), "b": lora(base, tmp_path / "b", 2, alpha=4)}
    weights = [1.0, 0.5]
    rank = merge_adapters(base, adapters, method=method, weights=weights, density=density, majority_sign="total",
                          svd_rank=None, seed=0, adapter_out=tmp_path / "merged", student_out=tmp_path / "student")
    assert rank == (8 if method == "cat" else 4)
    check_formula(list(adapters.values()), tmp_path / "merged" / MERGED, method, weights, density)
    am, bm, sm = factors(tmp_path / "merged" / MERGED)
    w0 = load_file(str(base / "model.safetensors"))
    w1 = load_file(str(tmp_path / "student" / "model.safetensors"))
    key = next(k for k in w0 if LAYER in k)
    np.testing.assert_allclose(w1[key], w0[key] + sm * bm @ am, rtol=1e-4, atol=1e-6)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["repeated", "bases", "weights"])
def test_bad_multitask_input_is_one_line_and_nothing_made(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    if case == "repeated":
        text = "tasks:\n  - config: default.yaml\n  - config: sentiment.yaml\n  - config: default.yaml\n    set: [seed=1]\n"
        expected = "mt.yaml:4: field 'tasks.2.config': task 'grammar' again (from default.yaml too): list each task once"
    elif case == "bases":
        base = tiny_llama(tmp_path / "other-base")
        write(tmp_path / "other.yaml", f"extends: {SHIPPED / 'sentiment.yaml'}\nstudent:\n  base: {base}\n")
        text = "tasks:\n  - config: default.yaml\n  - config: other.yaml\n"
        expected = f"other.yaml:3: field 'student.base': {base}, but task 'grammar' trains the bundled SmolLM2"
    else:
        text = ("tasks:\n  - config: default.yaml\n  - config: sentiment.yaml\nmerges:\n  - {method: cat}\n"
                "  - {method: ties, weights: [1.0, 0.5, 0.5]}\n")
        expected = "mt.yaml:6: field 'merges.1.weights': 3 weights for 2 tasks: give one per task"
    code, err = run_cli("multitask", "--config", str(write(tmp_path / "mt.yaml", text)))
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_two_tasks_one_student_could_not_tell_apart_are_refused(tmp_path, monkeypatch):
    """A task folder whose student prompt renders like grammar's (its user.j2 copied): a merged or joint
    student would answer both from the same prompt."""
    monkeypatch.chdir(tmp_path)
    edits = tmp_path / "edits"
    shutil.copytree(ROOT / "distill" / "tasks" / "grammar", edits, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    spec = (edits / "task.yaml").read_text()
    (edits / "task.yaml").write_text("\n".join(x for x in spec.splitlines() if not x.startswith("python:")) + "\n")
    write(tmp_path / "edits.yaml", f"extends: {SHIPPED / 'default.yaml'}\ntask: ./edits\n")
    mt = write(tmp_path / "mt.yaml", "tasks:\n  - config: default.yaml\n  - config: edits.yaml\n")
    code, err = run_cli("multitask", "--config", str(mt))
    assert code == 2 and "mt.yaml:3: field 'tasks.1.config': task 'edits' renders its student prompt as task " \
                         "'grammar' does" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()
    # with separate students only, no student answers two tasks: the same run is taken
    mt.write_text(mt.read_text() + "ways: [separate]\n")
    from distill.config.multitask import load_multitask
    from distill.stages.multitask import plan

    assert [r.name for r in plan(*load_multitask(mt), mt)] == ["grammar", "edits"]


def test_a_merge_weight_list_given_with_set_is_named_as_the_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mt = write(tmp_path / "mt.yaml", "tasks:\n  - config: default.yaml\n  - config: sentiment.yaml\n")
    code, err = run_cli("multitask", "--config", str(mt), "--set", "merges=[{method: ties, weights: [1]}]")
    assert code == 2 and "--set merges=[{method: ties, weights: [1]}]: field 'merges.0.weights': 1 weights for 2 tasks" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_tiny_two_task_run_makes_every_way_and_compares_them(tmp_path):
    """grammar and sentiment on the local llama.cpp teacher, a few rows each: the separate students, a TIES
    merge of their adapters (checked against the formula on one layer of the real adapters), the joint
    student; each evaluated on both tasks' eval rows, the merged one served as a GGUF; the report's
    per-task tables, serving bill and verdict."""
    tiny = json.dumps([*TINY, "eval.models=[teacher, student]", "eval.serving.latency_requests=2"])
    # sentiment's own end-to-end checks ride on this run: with its prompting baselines in the same harness
    senti = json.dumps([*TINY, "eval.models=[teacher, base_student, base_zero_shot, base_few_shot, student]",
                        "eval.serving.latency_requests=2"])
    mt = write(tmp_path / "mt.yaml", f"tasks:\n  - config: default.yaml\n    set: {tiny}\n  - config: sentiment.yaml\n"
               f"    set: {senti}\nmerges:\n  - {{method: ties, weights: [1.0, 0.8], density: 0.5}}\n")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    r = subprocess.run([sys.executable, "-m", "distill.cli", "multitask", "-c", str(mt), "-r", str(tmp_path / "run")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    for folder in ("tasks/grammar/student", "tasks/sentiment/student", "students/merged-ties-d0.5", "students/joint"):
        assert (run / folder / "model.safetensors").exists(), folder
    check_formula([run / "tasks/grammar/adapter", run / "tasks/sentiment/adapter"],
                  run / "adapters/merged-ties-d0.5/merged", "ties", [1.0, 0.8], 0.5)

    rep = json.loads((run / "report.json").read_text())
    ways = ["separate", "merged-ties-d0.5", "joint"]
    for table, metric in zip(rep["tasks"], ("gleu", "accuracy")):
        assert table["metric"] == metric and [x["way"] for x in table["rows"] if x["way"]] == ways
        for x in table["rows"][1:]:  # the teacher, then the base prompts (no way) and the ways
            assert x["low"] <= x["value"] <= x["high"]
            assert x["way"] is None or (x["vs_separate"] is None) == (x["way"] == "separate")
        summary = json.loads(next((run / "tasks" / table["task"] / "eval").glob("*/summary.json")).read_text())
        assert summary["models"]["student:merged-ties-d0.5"]["engine"].startswith("llama-server")
    bill = {b["way"]: b for b in rep["serving"]}
    assert bill["separate"]["deployments"] == 2 and bill["joint"]["deployments"] == 1
    assert bill["separate"]["usd_per_month"] >= 2 * bill["joint"]["usd_per_month"] > 0
    md = (run / "report.md").read_text()
    assert "## grammar: gleu on 8 eval rows" in md and "## sentiment: accuracy on 8 eval rows" in md
    assert rep["verdict"] in md and rep["verdict"].startswith(("The cheapest way that meets every task's bar",
                                                               "No way meets every task's bar"))
    import gguf
    assert len(gguf.GGUFReader(rep["gguf"]["merged-ties-d0.5"]).tensors) > 0
    check_sentiment_path(run / "tasks" / "sentiment")


def check_sentiment_path(rd: Path):
    """Sentiment's own run: reviews from code (no Self-Instruct requests), labels checked against the known
    ones, a student that learnt from the teacher's answers, and its prompting baselines in the report."""
    gen = read_jsonl(rd / "data" / "generated.jsonl")
    teacher_rows = [g for g in gen if g["meta"]["source"] == "teacher"]
    assert len(teacher_rows) == 12 and all(g["reference"] in ("positive", "negative") for g in teacher_rows)
    stats = read_json(rd / "stats" / "generate.json")
    assert stats["counts"]["parsed_inputs"] == 12 and stats["totals"]["requests_sent"] == 12
    kept = read_jsonl(rd / "data" / "train.jsonl")
    assert all(k["output"] == k["reference"] for k in kept)
    # most of the teacher's 12 answers agree with the known label and are kept
    assert sum(k["meta"]["source"] == "teacher" for k in kept) >= 6, [k["meta"]["source"] for k in kept]
    rep = read_json(rd / "report.json")
    assert rep["task"] == "sentiment" and rep["eval"]["primary_metric"] == "accuracy"
    assert {m["role"] for m in rep["models"]} == {"teacher", "base student", "prompted base student", "distilled student"}
    by_key = {m["key"]: m for m in rep["models"]}
    assert by_key["base_few_shot"]["prompt"] == "the teacher's 6-shot prompt" and "base_zero_shot" in by_key
    assert all(m["interval"] and m["serving"] for m in rep["models"])
