"""The progression before fine-tuning: the example pool (never an eval row), the many-shot and
retrieved shots, the shared-prefix cache of the in-process engine, the cheapest-sufficient-step rule
and the sentence that answers "was fine-tuning needed?"."""
import pytest

from distill.io import references
from distill.report.progression import fine_tuning_needed
from distill.report.select import cheapest_sufficient
from distill.stages.prompt_examples import Retriever, example_pool, fitting, varied
from distill.tasks import load_task
from distill.teacher import cost_of


def test_the_example_pool_leaves_out_every_eval_row_and_every_reference():
    """Breaks caught: an eval input, any of an eval row's references (not only the first), a variant of
    one in case and spacing, or a row sharing a 6-gram with one, shown to a model as an example."""
    task = load_task("grammar")
    ev = [{"id": "e1", "input": "He go to school every day by bus.", "output": "He goes to school every day by bus."},
          {"id": "e2", "input": "Me and him is friends.", "output": "He and I are friends.",
           "references": ["He and I are friends.", "Him and me are friends.", "He and I are good friends."]}]
    seeds = [{"input": "he  go to school every day by bus.", "output": "x"},           # the eval input, respaced
             {"input": "She sings well.", "output": "She sings well."}]                # clean
    kept = [{"input": "They is late.", "output": "Him and me are friends."},           # a second reference
            {"input": "We walked to school every day by bus last year.", "output": "ok"},  # a shared 6-gram
            {"input": "The cat sleep.", "output": "The cat sleeps.", "meta": {"error_type": "agreement"}},
            {"input": "She sings well.", "output": "dup"}]                             # a repeated input, once
    pool = example_pool(task, seeds, kept, ev)
    assert [r["input"] for r in pool] == ["She sings well.", "The cat sleep."]
    assert pool[1]["kind"] == "agreement" and pool[0]["kind"] == "none"
    texts = {t.lower() for r in pool for t in (r["input"], r["output"])}
    assert not texts & {t.lower() for e in ev for t in [e["input"], *references(e)]}


def test_many_shots_start_with_the_teachers_shots_vary_kinds_and_stop_where_the_prompt_fits():
    task = load_task("grammar")
    pool = [{"input": f"{k} {i}", "output": f"{k} {i}!", "kind": k} for k in ("a", "b", "c") for i in range(5)]
    first = [pool[7]]
    order = varied(pool, "s", task, first)
    assert order[0] is first[0] and len(order) == len(pool)
    assert {r["kind"] for r in order[1:4]} == {"a", "b", "c"}  # one of each kind before a second of any
    assert order == varied(pool, "s", task, first)              # fixed under its seed
    assert fitting(order, 50, lambda shots: sum(len(r["input"]) for r in shots) <= 15) == order[:5]
    assert fitting(order, 3, lambda shots: True) == order[:3]
    assert fitting(order, 10, lambda shots: False) == []


def test_the_retriever_puts_the_nearest_row_last_and_takes_k():
    pool = [{"input": t, "output": t.upper()} for t in
            ["the invoice was charged twice this month", "my password reset link expired",
             "the parcel arrived broken", "please add a dark mode to the app", "I was billed twice for one order"]]
    r = Retriever(pool, 2)
    got = r("why was I charged twice on my invoice")
    assert len(got) == 2 and got[-1]["input"] == "the invoice was charged twice this month"
    assert got[0]["input"] == "I was billed twice for one order"
    assert Retriever(pool, 10).k == 5


def test_the_prefix_cache_gives_the_same_greedy_answers_and_says_what_it_reused():
    """Breaks caught: padding placed before the cached prefix (positions shifted, answers change), the
    cache shared between batches without a copy (the second batch reads the first's keys), a prefix
    that swallows a whole prompt."""
    from distill.config import load_config
    from distill.io import read_jsonl
    from distill.models.infer import PREFIX_MIN_TOKENS, generate_batched, shared_prefix
    from distill.models.load import base_student_dir, load_model

    task = load_task("grammar")
    seeds, ev = read_jsonl(task.folder / "seeds.jsonl"), read_jsonl(task.folder / "eval.jsonl")
    model, tok = load_model(base_student_dir(load_config(None).student))
    msgs = [task.teacher_messages(r["input"], seeds[:8]) for r in ev[:5]]
    plain = generate_batched(model, tok, msgs, batch_size=3, max_new_tokens=16)
    store = {}
    cached = generate_batched(model, tok, msgs, batch_size=3, max_new_tokens=16, prefix_cache=store)
    assert [a["raw"] for a in cached] == [a["raw"] for a in plain]
    assert len(store) == 1 and all(a["cached_tokens"] > PREFIX_MIN_TOKENS for a in cached)
    assert [a["prompt_tokens"] for a in cached] == [a["prompt_tokens"] for a in plain]
    assert shared_prefix([[1] * 40, [1] * 40]) == [1] * 39  # each prompt keeps a token of its own
    assert shared_prefix([[1] * 40, [2] * 40]) == []


def _row(key, role, q, cost, diff=None, low=None, high=None, prompt=None):
    r = {"key": key, "name": key, "role": role, "prompt": prompt or key, "metrics": {"gleu": q},
         "interval": {"value": q, "low": q - 5, "high": q + 5}, "cost_per_1k_usd": cost, "serving": None}
    if diff is not None:
        r["vs_student"] = {"student": {"difference": diff, "low": low, "high": high, "verdict": "matches"}}
    return r


def test_the_cheapest_sufficient_step_is_the_cheapest_within_the_students_interval():
    """Breaks caught: a cheaper step outside the interval chosen, a dearer step chosen over a cheaper one
    that also reaches the student, a step read off its point estimate rather than its paired interval."""
    student = _row("student", "distilled student", 70, 0.001)
    models = [_row("base_zero_shot", "prompted base student", 40, 0.002, -30, -36, -24),
              _row("base_few_shot", "prompted base student", 66, 0.003, -4, -9.5, -0.2),   # cheap, short of it
              _row("base_retrieval", "prompted base student", 64, 0.004, -6, -12, 0.5),    # within: its interval reaches 0
              _row("base_many_shot", "prompted base student", 72, 0.009, 2, -3, 7),        # within, dearer
              student]
    p = cheapest_sufficient(models, "student")
    assert p["step"] == "base_retrieval" and p["closest"] == "base_many_shot"
    assert p["steps"] == ["base_zero_shot", "base_few_shot", "base_retrieval", "base_many_shot"]
    none = cheapest_sufficient(models[:2] + [student], "student")
    assert none["step"] is None and none["closest"] == "base_few_shot"


@pytest.mark.parametrize("step_cost, expect", [
    (0.004, "**not for quality**"),  # the step reaches it but costs 4x: the student is cheaper to serve
    (0.001, "**no**"),               # the step reaches it at the student's cost: ship the prompt
])
def test_was_fine_tuning_needed_names_the_step_and_the_cost_ratio(step_cost, expect):
    student = _row("student", "distilled student", 70, 0.001)
    step = _row("base_retrieval", "prompted base student", 68, step_cost, -2, -6, 1, prompt="the 6 nearest seeds")
    step["cost_vs_student"] = {"ratio": step_cost / 0.001, "low": step_cost / 0.001, "high": step_cost / 0.001,
                               "rounds": 1}
    rep = {"eval": {"primary_metric": "gleu"}, "models": [step, student],
           "progression": {"student": "student", "steps": ["base_retrieval"], "step": "base_retrieval",
                           "closest": "base_retrieval"}}
    text = fine_tuning_needed(rep)
    assert text.startswith(f"**Was fine-tuning needed?** {expect}: base_retrieval reaches the distilled student's gleu")
    assert ("4.0x cheaper" in text) == (step_cost == 0.004)
    assert ("ship the prompt" in text) == (step_cost == 0.001)


def test_no_prompt_only_step_reaching_the_student_answers_yes_with_the_closest():
    student = _row("student", "distilled student", 70, 0.001)
    step = _row("base_few_shot", "prompted base student", 60, 0.003, -10, -15, -5)
    rep = {"eval": {"primary_metric": "gleu"}, "models": [step, student],
           "progression": {"student": "student", "steps": ["base_few_shot"], "step": None, "closest": "base_few_shot"}}
    text = fine_tuning_needed(rep)
    assert text.startswith("**Was fine-tuning needed?** **yes**") and "-10 [-15, -5]" in text
    assert fine_tuning_needed({"eval": {"primary_metric": "gleu"}, "models": [student], "progression": None}) == ""


def test_a_hosted_prompt_cache_is_priced_at_its_cached_rate_only_when_configured():
    from distill.config import load_config

    cfg = load_config(None, overrides=["pricing.models.big.input_per_1m=2", "pricing.models.big.output_per_1m=8"])
    plain = cost_of(cfg.pricing, hosted=True, model="big", hardware="", prompt_tokens=1_000_000, completion_tokens=0,
                    seconds=0, cached_tokens=800_000)
    assert plain["usd"] == 2.0 and "cache" not in plain["rule"]
    cfg = load_config(None, overrides=["pricing.models.big.input_per_1m=2", "pricing.models.big.output_per_1m=8",
                                       "pricing.models.big.cached_input_per_1m=0.2"])
    c = cost_of(cfg.pricing, hosted=True, model="big", hardware="", prompt_tokens=1_000_000, completion_tokens=0,
                seconds=0, cached_tokens=800_000)
    assert c["usd"] == pytest.approx(0.2 * 2 + 0.8 * 0.2) and "800000 prompt tokens from the provider's prompt cache" in c["rule"]


def _lookup_task(tmp_path):
    """A task only retrieval can answer: each account belongs to one desk, arbitrarily; the seeds name every
    account with its desk, the eval rows ask about the same accounts in other words."""
    import json
    import random
    import subprocess

    from tests.conftest import distill_cmd

    r = subprocess.run(distill_cmd("init", "lookup", "--kind", "classification"), cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    folder, rng = tmp_path / "lookup", random.Random(7)
    labels = ["red", "blue", "green", "black", "white", "gold"]
    syll = ["zor", "blax", "quen", "tiv", "mur", "dak", "pell", "vos", "rith", "gan", "lum", "fex", "bor", "nix", "tal"]
    names = sorted({f"{rng.choice(syll)}{rng.choice(syll)}".capitalize() + " " + f"{rng.choice(syll)}{rng.choice(syll)}"
                    .capitalize() for _ in range(60)})[:40]
    desk = {n: labels[i % len(labels)] for i, n in enumerate(names)}
    seeds = [{"id": f"s{i:02d}", "input": f"Account {n}: which desk handles it?", "output": desk[n]} for i, n in enumerate(names)]
    evals = [{"id": f"e{i:02d}", "input": f"Which desk handles account {n}?", "output": desk[n]} for i, n in enumerate(names)]
    (folder / "seeds.jsonl").write_text("".join(json.dumps(x) + "\n" for x in seeds))
    (folder / "eval.jsonl").write_text("".join(json.dumps(x) + "\n" for x in evals))
    spec = (folder / "task.yaml").read_text()
    (folder / "task.yaml").write_text(spec.replace("labels: [billing, bug, feature_request, account, shipping]",
                                                   f"labels: {json.dumps(labels)}"))
    (folder / "system.j2").write_text("Each account belongs to one desk. Reply with the desk only, one of: "
                                      "{{ labels | join(', ') }}.\n")
    (folder / "user.j2").write_text("{{ input }}\n")
    return tmp_path / "lookup.yaml", seeds, evals


@pytest.mark.slow
def test_retrieved_shots_beat_the_fixed_shots_where_the_answer_is_in_the_data(tmp_path):
    """Eval inputs that are paraphrases of seeds with the same answers: the retrieved shots put the matching
    seed before the question, the teacher's fixed 6 shots cannot. Breaks caught: retrieval over the wrong
    rows (the eval set, or nothing), the nearest row not shown, the step's answers or prompts not its own."""
    import os
    import subprocess

    from distill.io import read_json, read_jsonl
    from distill.report.intervals import difference, scorer
    from tests.conftest import ROOT, distill_cmd

    config, seeds, evals = _lookup_task(tmp_path)
    sets = ["generation.input_requests=4", "generation.inputs_per_request=2", "training.max_steps=2",
            "training.batch_size=4", "eval.models=[base_few_shot,base_retrieval,teacher_retrieval,student]",
            "eval.serving.requests=4",
            "eval.serving.rounds=1"]
    rd = tmp_path / "run"
    r = subprocess.run(distill_cmd("run", "--config", str(config), "--run-dir", str(rd),
                                   *[a for s in sets for a in ("--set", s)]),
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                       timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = read_json(rd / "report.json")
    few, near = ({m["key"]: m for m in rep["models"]}[k] for k in ("base_few_shot", "base_retrieval"))
    assert near["name"].endswith("(base, 6 retrieved)") and near["prompt_tokens"] > 0
    preds = {k: read_jsonl(rd / "eval" / "eval" / f"{k}.jsonl") for k in ("base_few_shot", "base_retrieval")}
    assert [p["input"] for p in preds["base_retrieval"]] == [e["input"] for e in evals]
    from distill.tasks import load_task

    task = load_task(str(tmp_path / "lookup"))
    refs, srcs = [[e["output"]] for e in evals], [e["input"] for e in evals]
    f, g = (scorer(task, "accuracy", [p["prediction"] for p in preds[k]], refs, srcs)
            for k in ("base_retrieval", "base_few_shot"))
    d = difference(f, g, len(evals), seed=0, n_resamples=2000)
    assert d["low"] > 0, (d, near["metrics"], few["metrics"])
    assert near["metrics"]["accuracy"] > few["metrics"]["accuracy"]
    # the teacher under the same retrieved shots (here the same model file): the same prompts, so the same lengths
    tr = {m["key"]: m for m in rep["models"]}["teacher_retrieval"]
    assert tr["role"] == "prompted teacher" and tr["name"].endswith("(6 retrieved)")
    assert tr["prompt_tokens"] == near["prompt_tokens"] and tr["metrics"]["accuracy"] > few["metrics"]["accuracy"]
    assert [p["input"] for p in read_jsonl(rd / "eval" / "eval" / "teacher_retrieval.jsonl")] == srcs
    for k, m in (("base_few_shot", few), ("base_retrieval", near)):  # each step with its difference to the student
        assert "student" in m["vs_student"] and m["cost_per_1k_usd"] > 0
    assert "## Was fine-tuning needed? The progression" in (rd / "report.md").read_text()


def test_the_embedding_retriever_uses_the_base_models_own_hidden_states():
    """The option beside TF-IDF: cosine over the mean-pooled last hidden state of a local model (the base
    student's by default, nothing downloaded). Breaks caught: padding averaged into the embedding (a
    short text's vector changes with the batch it is embedded in), vectors not unit length."""
    import numpy as np

    from distill.config import load_config
    from distill.models.load import base_student_dir
    from distill.stages.prompt_examples import mean_pooled

    embed = mean_pooled(base_student_dir(load_config(None).student))
    texts = ["The cat sleeps on the warm sofa.", "Quarterly revenue grew by four percent.", "A dog barks."]
    together = embed(texts)
    alone = np.concatenate([embed([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-4) and np.allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    pool = [{"input": t, "output": t} for t in texts]
    assert Retriever(pool, 1, embed)("The cat sleeps on the sofa.")[0]["input"] == texts[0]
