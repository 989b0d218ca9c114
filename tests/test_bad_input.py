"""Bad input: a one-line error naming the file, line and field, exit code 2, and nothing written."""
import json

import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.testing.fake_openai import FakeOpenAI
from tests.conftest import ROOT

SEEDS = ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl"


def run_cli(*args):
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, (r.stderr if hasattr(r, "stderr") else r.output).strip()


def seeds_file(tmp_path, content: bytes):
    p = tmp_path / "seeds.jsonl"
    p.write_bytes(content)
    return p


GOOD = SEEDS.read_bytes()
FIRST = GOOD.split(b"\n")[0]


@pytest.mark.parametrize("name,content,expected", [
    ("missing", None, "seeds.jsonl: seed file not found"),
    ("empty", b"", "seeds.jsonl: seed file is empty"),
    ("malformed", FIRST + b"\n{\"id\": \"x\", \"input\": \n", "seeds.jsonl:2: malformed JSON"),
    ("no field", FIRST + b'\n{"id": "x", "input": "She go."}\n', "seeds.jsonl:2: field 'output': missing"),
    ("not utf8", FIRST + b'\n{"id": "x", "input": "caf\xe9", "output": "y"}\n', "seeds.jsonl:2: not UTF-8"),
    ("dup id", FIRST + b"\n" + FIRST + b"\n", "seeds.jsonl:2: field 'id': duplicate id 'seed-000'"),
])
def test_bad_seed_files(tmp_path, name, content, expected):
    path = tmp_path / "seeds.jsonl" if content is None else seeds_file(tmp_path, content)
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--run-dir", str(rd), "--set", f"seeds_path={path}")
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not rd.exists()


def test_eval_set_overlapping_the_seeds(tmp_path):
    ev = tmp_path / "eval.jsonl"
    row = json.loads(FIRST)
    ev.write_text(json.dumps({"id": "e1", "input": "Unrelated sentence here.", "output": "x"}) + "\n"
                  + json.dumps({"id": "e2", "input": row["input"], "output": row["output"]}) + "\n")
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--run-dir", str(rd), "--set", f"eval.path={ev}")
    assert code == 2 and f"{ev}:2: field 'input': eval row 'e2' overlaps seed 'seed-000'" in err
    assert not rd.exists()


@pytest.mark.parametrize("yaml_text,expected", [
    ("teacher:\n  modle: x\n", "c.yaml:2: field 'teacher.modle': unknown key"),
    ("generation:\n  samples_per_input: 0\n", "c.yaml:2: field 'generation.samples_per_input': Input should be greater"),
    ("filters:\n  - {name: length, min_wordz: 3}\n", "filter 'length' has no parameter 'min_wordz'"),
    # a hosted teacher nobody priced: stopped before any request, not after the money is spent
    ("teacher:\n  model: gpt-9\n  hosted: true\n", "c.yaml: field 'pricing.models': no price for the hosted teacher 'gpt-9'"),
    ("student:\n  hardware: tpu-v9\n", "c.yaml:2: field 'student.hardware': 'tpu-v9' has no price in pricing.hardware"),
    ("pricing:\n  hardware: {cpu-2core: {usd_per_hour: -1}}\n", "field 'pricing.hardware.cpu-2core.usd_per_hour'"),
    # a ladder student's name becomes students/<name>/: '..' would be the run directory itself
    ("students:\n  - {name: '..'}\n", "field 'students.0.name': student name '..' is not a safe name"),
    ("students:\n  - {name: ../../x}\n", "student name '../../x' is not a safe name"),
])
def test_bad_config(tmp_path, yaml_text, expected):
    c = tmp_path / "c.yaml"
    c.write_text(yaml_text)
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--config", str(c), "--run-dir", str(rd))
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not rd.exists()


def test_deployment_name_that_would_escape_runs(tmp_path):
    code, err = run_cli("serve", "--name", "../x")
    assert code == 2 and "deployment name '../x' is not a safe name" in err and len(err.splitlines()) == 1, err


def test_unreachable_teacher(tmp_path):
    from distill.teacher.local_server import free_port

    rd = tmp_path / "run"
    url = f"http://127.0.0.1:{free_port()}/v1"
    code, err = run_cli("generate", "--run-dir", str(rd), "--set", "teacher.endpoint.launch_local=false",
                        "--set", f"teacher.endpoint.base_url={url}")
    assert code == 2 and f"teacher.endpoint.base_url {url}: unreachable" in err and not rd.exists()


def test_teacher_model_the_server_does_not_know(tmp_path):
    rd = tmp_path / "run"
    with FakeOpenAI(models=["llama-3-8b", "qwen-7b"]) as fake:
        code, err = run_cli("generate", "--run-dir", str(rd), "--set", "teacher.endpoint.launch_local=false",
                            "--set", f"teacher.endpoint.base_url={fake.base_url}", "--set", "teacher.model=gpt-9")
    assert code == 2 and "teacher.model 'gpt-9': not served by" in err and "llama-3-8b, qwen-7b" in err
    assert not rd.exists() and fake.requests == []


def test_student_that_does_not_fit_in_memory(tmp_path):
    big = tmp_path / "big-student"
    big.mkdir()
    (big / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8192, "intermediate_size": 28672,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256}))
    rd = tmp_path / "run"
    code, err = run_cli("train", "--run-dir", str(rd), "--set", f"student.base={big}", "--set", "training.lora=false")
    assert code == 2 and "student.base:" in err and "B parameters; full fine-tuning needs about" in err, err
    assert not rd.exists()


def test_models_load_from_safetensors_only(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.models.load import load_model

    cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=64)
    d = tmp_path / "pickled"
    d.mkdir()
    cfg.save_pretrained(d)
    torch.save(LlamaForCausalLM(cfg).state_dict(), d / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        load_model(d)
