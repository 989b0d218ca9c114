"""A user's own task: a folder with task.yaml, templates and data, no Python; named by path from a config
anywhere on disk; seed and eval files with their own column names, CSV or parquet; a task from an
installed package's entry point; the Prefect cache follows the task folder's files."""
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from distill.io import DataError, load_examples, read_json, read_jsonl
from tests.conftest import ROOT, TINY, distill_cmd


def _init(tmp_path, name="tickets", kind="classification"):
    r = subprocess.run(distill_cmd("init", name, "--kind", kind), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return tmp_path / name, tmp_path / f"{name}.yaml"


def _dry(config, cwd, *sets):
    args = [a for s in sets for a in ("--set", s)]
    return subprocess.run(distill_cmd("run", "--config", str(config), "--dry-run", *args), cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_init_scaffolds_a_task_that_checks_clean_from_another_directory(tmp_path):
    folder, config = _init(tmp_path)
    assert {p.name for p in folder.iterdir()} >= {"task.yaml", "system.j2", "user.j2", "new_inputs.j2", "seeds.jsonl",
                                                  "eval.jsonl"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = _dry(config, elsewhere)  # paths in the config resolve against its folder, not the cwd
    assert r.returncode == 0, r.stdout + r.stderr
    assert "answer_requests_at_most" in r.stdout
    again = subprocess.run(distill_cmd("init", "tickets"), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_eval_file_with_other_column_names_and_no_ids_works_through_fields(tmp_path):
    folder, config = _init(tmp_path)
    rows = read_jsonl(folder / "eval.jsonl")
    other = tmp_path / "tickets_eval.jsonl"
    other.write_text("".join(json.dumps({"ticket": r["input"], "team": r["output"]}) + "\n" for r in rows))
    with open(config, "a") as f:
        f.write(f"  path: {other.name}\n  fields: {{input: ticket, output: team, id: null}}\n")

    from distill.config import load_config
    from distill.stages.preflight import preflight

    inputs = preflight(load_config(config), ())
    assert [e["input"] for e in inputs.eval_rows] == [r["input"] for r in rows]
    assert [e["output"] for e in inputs.eval_rows] == [r["output"] for r in rows]
    ids = [e["id"] for e in inputs.eval_rows]
    assert len(set(ids)) == len(ids) and all(i.startswith("row-") for i in ids)
    assert ids == [e["id"] for e in preflight(load_config(config), ()).eval_rows]  # stable: from content

    lines = other.read_text().splitlines()
    lines[3] = json.dumps({"ticket": rows[3]["input"], "group": rows[3]["output"]})
    other.write_text("\n".join(lines) + "\n")
    r = _dry(config, tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith(f"{other}:4: field 'team': missing"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_csv_and_parquet_seed_files_load_with_a_column_mapping(tmp_path):
    import datasets

    rows = [{"text": f"ticket number {i}", "label": "bug" if i % 2 else "billing"} for i in range(5)]
    csv, pq = tmp_path / "s.csv", tmp_path / "s.parquet"
    datasets.Dataset.from_list(rows).to_csv(str(csv), index=False)
    datasets.Dataset.from_list(rows).to_parquet(str(pq))
    cols = {"input": "text", "output": "label", "id": None}
    for path in (csv, pq):
        got = load_examples(path, columns=cols)
        assert [(g["input"], g["output"]) for g in got] == [(r["text"], r["label"]) for r in rows]
    csv.write_text(csv.read_text().replace("ticket number 2,", ","))
    with pytest.raises(DataError) as e:
        load_examples(csv, columns=cols)
    assert str(e.value) == f"{csv}:4: field 'text': must be a non-empty string"


def test_a_task_yaml_mistake_is_one_line_naming_file_line_and_field(tmp_path):
    folder, config = _init(tmp_path)
    spec = folder / "task.yaml"
    spec.write_text(spec.read_text().replace("labels: [", "lables: ["))
    r = _dry(config, tmp_path)
    assert r.returncode == 2
    line = next(n for n, t in enumerate(spec.read_text().splitlines(), 1) if t.startswith("lables"))
    assert f"{spec}:{line}: field 'lables': unknown key" in r.stderr, r.stderr


def test_kinds_parse_and_score_without_python(tmp_path):
    from distill.tasks import load_task

    folder, _ = _init(tmp_path, "tickets", "classification")
    t = load_task(str(folder))
    assert t.parse_answer("Label: Feature_Request.") == "feature_request" and t.parse_answer("no idea") == "no idea"
    m = t.metrics(["bug", "bug", "billing", "nonsense"], ["bug", "billing", "billing", "account"], [])
    assert m == {"accuracy": 50.0, "macro_f1": 44.44, "answered_with_a_label": 75.0}
    assert t.breakdown(["bug", "nonsense"], ["bug", "account"])["confusion"]["account"]["(not a label)"] == 1
    assert "(not a label)" not in t.breakdown(["bug", "account"], ["bug", "account"])["confusion"]["bug"]

    folder, _ = _init(tmp_path, "contacts", "extraction")
    t = load_task(str(folder))
    ref = json.dumps({"name": "Ann Lee", "company": "Acme", "email": "ann@acme.com"})
    reply = 'Here you go: {"email": "ann@acme.com", "name": "Ann Lee", "company": "ACME Inc"}'
    assert json.loads(t.parse_answer(reply))["company"] == "ACME Inc"
    m = t.metrics([t.parse_answer(reply), "not json"], [ref, ref], [])
    assert m == {"field_f1": 44.44, "field_accuracy": 33.33, "object_match": 0.0, "schema_valid": 50.0}

    folder, _ = _init(tmp_path, "polite", "generation")
    t = load_task(str(folder))
    m = t.metrics(["Could you send the report?"], ["Could you please send the report?"], ["send report"])
    assert list(m) == ["exact_match", "chrf", "rouge_l"] and m["exact_match"] == 0.0 and 80 < m["rouge_l"] < 100


def test_a_task_from_an_installed_package_is_found_through_the_entry_point_group(tmp_path):
    pkg = tmp_path / "src"
    shutil.copytree(ROOT / "distill" / "tasks" / "starters" / "classification", pkg / "acme_tickets")
    (pkg / "acme_tickets" / "__init__.py").write_text("")
    (pkg / "acme_tickets" / "task.yaml").write_text(
        (pkg / "acme_tickets" / "task.yaml").read_text().replace("kind: classification", "name: acme\nkind: classification"))
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "acme-tickets"
        version = "1.0"
        [project.entry-points."distill.tasks"]
        acme = "acme_tickets"
        [tool.setuptools.package-data]
        acme_tickets = ["*.yaml", "*.j2", "*.txt", "*.jsonl"]
        """))
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}  # how a --target install is put on the path
    listed = subprocess.run(distill_cmd("tasks"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert "acme: entry point (acme_tickets)" in listed.stdout, listed.stdout + listed.stderr
    cfg = tmp_path / "acme.yaml"
    cfg.write_text("task: acme\n")
    r = subprocess.run(distill_cmd("run", "--config", str(cfg), "--dry-run"), cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    without = subprocess.run(distill_cmd("run", "--config", str(cfg), "--dry-run"), cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
    assert without.returncode == 2 and "unknown task 'acme'" in without.stderr


@pytest.mark.slow
def test_editing_a_user_template_reruns_generation_and_an_unrelated_edit_does_not(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from distill.flow import distill_flow

    folder, config = _init(tmp_path)
    rd = tmp_path / "run"
    params = dict(config_path=str(config), run_dir=str(rd), overrides=TINY, stages=["generate"])

    def generate_state():
        state = distill_flow(**params, return_state=True)
        assert state.is_completed(), state
        with get_client(sync_client=True) as client:
            run_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            tasks = client.read_task_runs(flow_run_filter=run_filter)
        return next(t.state.name for t in tasks if t.name.startswith("generate-"))

    assert generate_state() == "Completed"
    sent = read_json(rd / "stats" / "generate.json")["totals"]["requests_sent"]
    (tmp_path / "NOTES.md").write_text("an unrelated edit beside the config\n")
    assert generate_state() == "Cached"
    user = folder / "user.j2"
    user.write_text(user.read_text().replace("Ticket:", "Support ticket:"))
    assert generate_state() == "Completed"
    stats = read_json(rd / "stats" / "generate.json")
    assert len(stats["invocations"]) == 2 and stats["totals"]["requests_sent"] > sent  # new prompts, new requests


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["extraction", "generation"])
def test_each_kind_runs_the_whole_path_against_the_local_teacher(tmp_path, kind):
    """generate -> filter -> train (a few steps) -> evaluate -> report for a task that is only a folder.
    The classification kind runs this path in tests/test_wheel.py (`distill init tickets`, from the wheel)."""
    folder, config = _init(tmp_path, f"my-{kind}", kind)
    rd = tmp_path / "run"
    sets = [a for s in [*TINY, "eval.max_rows=6", "eval.models=[teacher,student]"] for a in ("--set", s)]
    r = subprocess.run(distill_cmd("run", "--config", str(config), "--run-dir", str(rd), *sets), cwd=tmp_path,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = read_json(rd / "report.json")
    expected = {"classification": ["accuracy", "macro_f1", "answered_with_a_label"],
                "extraction": ["field_f1", "field_accuracy", "object_match", "schema_valid"],
                "generation": ["exact_match", "chrf", "rouge_l"]}[kind]
    assert [m["role"] for m in rep["models"]] == ["teacher", "distilled student"]
    assert all(list(m["metrics"]) == expected for m in rep["models"])
    assert rep["data"]["generated"] > len(read_jsonl(folder / "seeds.jsonl"))  # the teacher added rows
    assert read_json(rd / "stats" / "train.json")["steps"] == 4
    md = (rd / "report.md").read_text()
    assert f"# distill report: my-{kind}" in md
    if kind == "classification":
        assert "## Confusion by label" in md
    if kind == "extraction":  # every kept row's answer satisfies the schema (the task_format filter)
        from distill.tasks import load_task

        task = load_task(str(folder))
        assert all(task.schema_problem(r["output"]) is None for r in read_jsonl(rd / "data" / "train.jsonl"))


def test_a_label_named_other_keeps_its_own_row_and_column_in_the_confusion_table():
    """Hardening round 3: the unparseable-answer bucket was also called "other", so a user's label `other`
    showed zeros and unparseable answers landed in the user's class."""
    from distill.tasks.metrics import confusion

    conf = confusion(["other", "meh", "bug"], ["other", "other", "bug"], ["bug", "other"])
    assert conf["other"] == {"bug": 0, "other": 1, "(not a label)": 1}
    assert conf["bug"] == {"bug": 1, "other": 0, "(not a label)": 0}
