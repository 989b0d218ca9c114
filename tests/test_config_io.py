"""Config validation, overrides, redaction; validated input files; the crash-safe append log."""
import json

import pytest
import yaml

from distill.config import ConfigError, load_config, save_config
from distill.io import AppendLog, DataError, load_examples, write_text_atomic
from tests.conftest import ROOT


def test_default_config_loads_and_every_field_is_documented():
    from distill.config import field_help

    cfg = load_config()
    assert cfg.task == "grammar" and cfg.filter_specs()[0] == ("exact_dedup", {})
    undocumented = [name for name, _, help_ in field_help() if not help_]
    assert undocumented == []


def test_help_strings_say_what_and_why_in_a_sentence_or_two():
    """Breaks when a field's help grows into a lab notebook (figures belong in docs/)."""
    from pydantic import BaseModel

    from distill.config import field_help
    from distill.tasks.spec import TaskSpec

    def task_fields(model: type[BaseModel], prefix: str = ""):
        for name, f in model.model_fields.items():
            yield prefix + name, f.description or ""
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                yield from task_fields(f.annotation, f"{prefix}{name}.")

    helps = [(name, help_) for name, _, help_ in field_help()] + list(task_fields(TaskSpec))
    assert len(helps) > 100
    assert [(name, len(h)) for name, h in helps if len(h) > 400] == []


def test_unknown_key_names_file_line_and_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("task: grammar\nteacher:\n  model: x\n  temprature: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value) == f"{p}:4: field 'teacher.temprature': unknown key"


def test_out_of_range_value(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("teacher:\n  endpoint:\n    max_concurrency: 0\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: field 'teacher.endpoint.max_concurrency': Input should be greater"):
        load_config(p)


def test_unknown_filter_is_rejected_at_preflight_with_its_line(tmp_path):
    from distill.stages.preflight import preflight

    p = tmp_path / "c.yaml"
    p.write_text("filters:\n  - exact_dedup\n  - nope\n")
    cfg = load_config(p)  # the schema knows no filters; preflight checks them before anything runs
    with pytest.raises(ConfigError, match=r"c.yaml:1: field 'filters': unknown filter 'nope'"):
        preflight(cfg, ())


def test_set_overrides_nested_fields_with_yaml_types():
    cfg = load_config(None, ["teacher.max_tokens=12", "generation.samples_per_input=3", "eval.path=x.jsonl",
                             "student.base=null"])
    assert cfg.teacher.max_tokens == 12 and cfg.generation.samples_per_input == 3
    assert cfg.eval.path == "x.jsonl" and cfg.student.base is None
    with pytest.raises(ConfigError, match="field 'teacher.max_tokens'"):
        load_config(None, ["teacher.max_tokens=lots"])


def test_saved_config_never_holds_the_api_key(tmp_path):
    cfg = load_config(None, ["teacher.endpoint.api_key=sk-SENTINEL-123"])
    assert cfg.api_key() == "sk-SENTINEL-123"
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "SENTINEL" not in text
    assert yaml.safe_load(text)["teacher"]["endpoint"]["api_key"] is None
    assert load_config(tmp_path / "config.yaml").teacher.model == cfg.teacher.model


@pytest.mark.parametrize("content,expected", [
    (b"", "seed file is empty"),
    (b'{"id": "a", "input": "x", "output": "y"}\n{"id": "b", "input": "x"\n', ":2: malformed JSON"),
    (b'{"id": "a", "input": "x", "output": "y"}\n{"id": "b", "input": "x"}\n', ":2: field 'output': missing"),
    (b'{"id": "a", "input": "x", "output": ""}\n', ":1: field 'output': must be a non-empty string"),
    (b'{"id": "a", "input": "x", "output": "y"}\n{"id": "a", "input": "z", "output": "y"}\n',
     ":2: field 'id': duplicate id 'a' (first on line 1)"),
    (b'{"id": "a", "input": "x", "output": "y"}\n{"id": "b", "input": "\xff", "output": "y"}\n', ":2: not UTF-8"),
])
def test_bad_input_files_get_one_line_errors(tmp_path, content, expected):
    p = tmp_path / "seeds.jsonl"
    p.write_bytes(content)
    with pytest.raises(DataError) as e:
        load_examples(p, what="seed file")
    assert expected in str(e.value) and str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_append_log_discards_a_half_written_last_line(tmp_path):
    """Break caught: appending after a torn last line (the next record glued to garbage: the log reads
    as 2 records and a damaged line, not 1, 2, 4)."""
    p = tmp_path / "log.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    log = AppendLog(p)
    assert log.discarded_partial
    log.append({"a": 4})
    log.close()
    assert [r["a"] for r in AppendLog(p)] == [1, 2, 4]
    assert p.read_text().count("\n") == 3


def test_atomic_write_leaves_no_temp_files(tmp_path):
    """Break caught: a temp file not renamed or not removed after a write that succeeded."""
    write_text_atomic(tmp_path / "x" / "f.json", json.dumps({"ok": True}))
    assert [q.name for q in (tmp_path / "x").iterdir()] == ["f.json"]


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(path):
    """A multi-task config (`distill multitask`) is checked with each task's config and --set as it runs them."""
    from distill.config.multitask import load_multitask

    file = ROOT / "configs" / path
    if "tasks" in yaml.safe_load(file.read_text()):
        mt, files = load_multitask(file)
        cfgs = [load_config(f, t.set) for t, f in zip(mt.tasks, files)]
        assert len(cfgs) == len(mt.tasks) >= 2
    else:
        cfgs = [load_config(file)]
    for cfg in cfgs:
        assert cfg.teacher.hardware in cfg.pricing.hardware and cfg.student.hardware in cfg.pricing.hardware


def test_gpu_config_trains_bf16_padding_free_and_fans_generation_out_on_dask():
    from distill.models.sft import device_plan

    cfg = load_config(ROOT / "configs" / "gpu.yaml")
    plan = device_plan(cfg.training, cuda=True, bf16_ok=True, flash_attn=True)
    assert plan["precision"] == "bf16" and plan["padding_free"] and plan["attn_implementation"] == "flash_attention_2"
    assert cfg.generation.task_runner == "dask" and cfg.generation.shards > 1
    assert not cfg.teacher.endpoint.launch_local and cfg.teacher.endpoint.base_url.endswith("/v1")


def test_earlier_flat_teacher_keys_still_work_and_say_where_they_moved(tmp_path, capsys):
    """Breaks if an old key is dropped, lands in the wrong section, or loses to the file it overrides.
    Issue 36 (first run): the notice is one short line per key, not a Python FutureWarning with a source line."""
    from distill.config import teacher as teacher_config

    teacher_config._NOTICED.clear()
    old = tmp_path / "old.yaml"
    old.write_text("teacher:\n  launch_local: false\n  base_url: http://x/v1\n  few_shot: 2\n  max_requests: 7\n"
                   "  adaptation: few_shot\n")
    cfg = load_config(old)
    load_config(old)  # named once per process
    err = capsys.readouterr().err
    assert err.count("note: teacher.base_url is now teacher.endpoint.base_url (the old key still works)\n") == 1, err
    assert "Warning" not in err
    t = cfg.teacher
    assert (t.endpoint.launch_local, t.endpoint.base_url, t.adaptation.few_shot, t.budget.max_requests) == \
        (False, "http://x/v1", 2, 7)
    # --set with an old key overrides the new-style section of the file, and a method shorthand keeps the section
    child = tmp_path / "child.yaml"
    child.write_text("extends: old.yaml\nteacher:\n  adaptation:\n    few_shot: 4\n")
    cfg = load_config(child, ["teacher.max_concurrency=3", "teacher.adaptation=lora"])
    assert "teacher.max_concurrency is now teacher.endpoint.max_concurrency" in capsys.readouterr().err
    assert cfg.teacher.endpoint.max_concurrency == 3 and cfg.teacher.endpoint.base_url == "http://x/v1"
    assert cfg.teacher.adaptation.method == "lora" and cfg.teacher.adaptation.few_shot == 4
    assert "launch_local" not in cfg.redacted()["teacher"]  # saved in the new layout


def test_atomic_path_puts_a_whole_file_or_folder_in_place_with_an_ordinary_mode(tmp_path):
    """The one atomic-write helper. Breaks caught: a half-filled copy left in place after an error, mkstemp's
    0600 kept (a server running as another user could not read an exported GGUF), a folder another
    process finished first pulled from under its readers when asked to keep it."""
    import os

    from distill.io import atomic_path

    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "whole" and target.stat().st_mode & 0o777 == 0o666 & ~umask
    folder = tmp_path / "model"
    with atomic_path(folder, folder=True) as tmp:
        (tmp / "a").write_text("first")
    with atomic_path(folder, folder=True, keep_existing=True) as tmp:
        (tmp / "a").write_text("second")
    assert (folder / "a").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.txt"]
    with atomic_path(folder, folder=True) as tmp:
        (tmp / "b").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["b"]
