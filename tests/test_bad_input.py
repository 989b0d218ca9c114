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
    ("task: nosuchtask\n", "unknown task 'nosuchtask'"),
    # a cascade needs the two models it joins, and a student that exists
    ("eval:\n  models: [teacher, base_student]\n  cascade: {enabled: true}\n",
     "field 'eval.models': eval.cascade needs both 'teacher' and 'student' evaluated"),
    ("eval:\n  cascade: {enabled: true, student: big}\n", "field 'eval.cascade.student': 'big' is not a student of this config"),
])
def test_bad_config(tmp_path, yaml_text, expected):
    """Breaks caught: a traceback or several lines instead of one, an error without file, line and field,
    and a run directory created before the config was found bad."""
    c = tmp_path / "c.yaml"
    c.write_text(yaml_text)
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--config", str(c), "--run-dir", str(rd))
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not rd.exists()


def test_deployment_name_that_would_escape_runs(tmp_path):
    """Break caught: a deployment name used as a path unchecked (`../x` resolves outside runs/)."""
    code, err = run_cli("serve-flow", "--name", "../x")
    assert code == 2 and "deployment name '../x' is not a safe name" in err and len(err.splitlines()) == 1, err
    code, err = run_cli("serve", "--name", "../x")  # the old name: a notice, then the same refusal
    assert code == 2 and err.startswith("notice: `distill serve` is now `distill serve-flow`") and "../x" in err, err


def test_unreachable_teacher(tmp_path):
    from distill.teacher.gguf_server import free_port

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
    """Break caught: loading without use_safetensors=True (transformers would unpickle pytorch_model.bin,
    which can run code)."""
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


def _prepared(tmp_path, *sets):
    from distill.stages.context import prepare_run

    rd = tmp_path / "run"
    prepare_run(None, rd, list(sets)).close()
    return rd


@pytest.mark.parametrize("args,expected", [
    (["--config", "{dir}"], ": a directory, not a config file"),
    (["--set", "seeds_path={dir}"], ": seed file is a directory, not a file"),
    (["--set", "eval.path={dir}"], ": eval set is a directory, not a file"),
    (["--set", "eval.models=[1,2"], "--set eval.models=[1,2: not a valid value"),
])
def test_paths_and_values_that_are_not_what_they_should_be(tmp_path, args, expected):
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--run-dir", str(rd), *[a.format(dir=tmp_path) for a in args])
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not rd.exists()


def test_a_config_that_extends_itself_in_a_cycle(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    code, err = run_cli("generate", "--config", str(tmp_path / "a.yaml"), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "field 'extends': a cycle (a.yaml -> b.yaml -> a.yaml)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_evaluate_without_a_trained_student_stops_before_the_teacher(tmp_path):
    rd = _prepared(tmp_path)
    before = sorted(p.relative_to(rd) for p in rd.rglob("*") if p.name != ".lock")
    code, err = run_cli("evaluate", "--run-dir", str(rd))
    assert code == 2 and "no trained student (run `distill train` first)" in err, err
    assert sorted(p.relative_to(rd) for p in rd.rglob("*") if p.name != ".lock") == before  # no teacher started
    code, err = run_cli("evaluate", "--run-dir", str(tmp_path / "elsewhere"))
    assert code == 2 and "not a run directory (no config.yaml)" in err and not (tmp_path / "elsewhere").exists()


def test_every_row_filtered_out_is_one_line_not_a_traceback(tmp_path):
    rd = _prepared(tmp_path)
    (rd / "data").mkdir()
    (rd / "data" / "train.jsonl").write_text("")
    code, err = run_cli("train", "--run-dir", str(rd))
    assert code == 2 and "train.jsonl: no rows survived filtering" in err and len(err.splitlines()) == 1, err
    assert not (rd / "student").exists()


@pytest.mark.parametrize("damaged,expected", [
    ('{"key": "k2", "te', "requests.jsonl:2: not a JSON record"),
    ('{"text": "y", "error": null}', "requests.jsonl:2: a record without 'key'; the store is damaged"),
])
def test_a_damaged_line_in_the_middle_of_the_store_is_named(tmp_path, damaged, expected):
    """Breaks caught: a JSONDecodeError or KeyError traceback naming no file or line, and requests sent
    before the damage is found."""
    rd = _prepared(tmp_path, "teacher.model=fake-model")
    (rd / "data").mkdir()
    good = json.dumps({"key": "k1", "text": "x", "error": None})
    (rd / "data" / "requests.jsonl").write_text(good + "\n" + damaged + "\n" + good.replace("k1", "k3") + "\n")
    with FakeOpenAI() as fake:
        code, err = run_cli("generate", "--run-dir", str(rd), "--set", "teacher.endpoint.launch_local=false",
                            "--set", f"teacher.endpoint.base_url={fake.base_url}", "--set", "teacher.model=fake-model")
        assert fake.requests == []
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err


def test_a_plugin_that_raises_on_import_and_a_run_dir_that_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "brokenplug.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--run-dir", str(rd), "--set", "plugins=[brokenplug]")
    assert code == 2 and "plugin 'brokenplug' raised RuntimeError: boom (" in err and "brokenplug.py:2)" in err, err
    assert len(err.splitlines()) == 1 and not rd.exists()
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    code, err = run_cli("generate", "--run-dir", str(afile))
    assert code == 2 and "afile: is a file, not a run directory" in err and afile.read_text() == "not a directory"


def test_a_run_dir_where_nothing_can_be_written():
    code, err = run_cli("generate", "--run-dir", "/sys/distill-run")
    assert code == 2 and "/sys/distill-run: cannot be a run directory (Operation not permitted)" in err, err


@pytest.mark.parametrize("damaged,command,expected", [
    ("data/generated.jsonl", "filter", "generated.jsonl:2: not a JSON record"),
    ("stats/generate.json", "generate", "stats/generate.json: corrupt"),
])
def test_a_damaged_file_of_an_earlier_stage(tmp_path, damaged, command, expected):
    """Breaks caught: a traceback instead of one line naming the file and line, and a later stage that writes
    its output from a damaged input."""
    rd = _prepared(tmp_path, "teacher.model=fake-model")
    (rd / damaged).parent.mkdir(exist_ok=True)
    (rd / damaged).write_text('{"id": "a", "input": "x", "output": "y", "status": "ok"}\n{"id": "b", "inp\n')
    with FakeOpenAI() as fake:
        code, err = run_cli(command, "--run-dir", str(rd), "--set", "teacher.endpoint.launch_local=false",
                            "--set", f"teacher.endpoint.base_url={fake.base_url}", "--set", "teacher.model=fake-model")
        assert fake.requests == []
    assert code == 2 and expected in err and len(err.splitlines()) == 1, err
    assert not (rd / "data" / "train.jsonl").exists()


def test_llama_server_asked_for_but_not_built(tmp_path, monkeypatch):
    """Break caught: a missing binary found only when the server fails to start (after the run directory
    exists), or a message that does not say where it looked and how to build it."""
    monkeypatch.setenv("DISTILL_LLAMA_SERVER", str(tmp_path / "no-such-llama-server"))
    rd = tmp_path / "run"
    code, err = run_cli("generate", "--run-dir", str(rd), "--set", "teacher.endpoint.local.engine=llama-server")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("field 'teacher.endpoint.local.engine': llama-server not found in ") or \
        "teacher.endpoint.local.engine: llama-server not found in" in err, err
    assert str(tmp_path / "no-such-llama-server") in err and "python -m distill.teacher.build_server" in err
    assert not rd.exists()
    code, err = run_cli("evaluate", "--run-dir", str(rd), "--set", "eval.engine=llama-server",
                        "--set", "teacher.endpoint.local.engine=llama-cpp-python")
    assert code == 2 and len(err.splitlines()) == 1 and "field 'eval.engine': llama-server not found" in err, err
    assert not rd.exists()
