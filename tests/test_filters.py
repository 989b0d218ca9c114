"""Each built-in filter on crafted rows, and a user filter added with one function + one YAML entry."""
import textwrap

from distill.config import load_config
from distill.filters import FilterContext, Row, Verdict, register_filter, run_filters
from distill.stages.preflight import preflight
from distill.tasks import get_task


def rows(*pairs, ref=None):
    return [Row(id=f"r{i}", input=a, output=b, reference=ref) for i, (a, b) in enumerate(pairs)]


def ctx(eval_rows=()):
    return FilterContext(task=get_task("grammar"), seeds=[], eval_rows=list(eval_rows))


def run(name, rs, c=None, **params):
    kept, ledger, stages = run_filters([(name, params)], rs, c or ctx())
    return [r.id for r in kept], {d["id"]: d["reason"] for d in ledger}


def test_exact_dedup_ignores_case_punctuation_and_spacing():
    kept, dropped = run("exact_dedup", rows(("She go home.", "She goes home."), ("she  go home", "x"),
                                            ("He goes home.", "He goes home.")))
    assert kept == ["r0", "r2"]
    assert dropped == {"r1": "exact duplicate of r0"}


def test_minhash_dedup_drops_one_word_changes_and_keeps_distinct_sentences():
    rs = rows(("The old man walked his dog along the quiet river every morning.", ""),
              ("The old man walked his cat along the quiet river every morning.", ""),
              ("My sister bakes fresh bread for the whole family on Sundays.", ""),
              ("Our train to the coast was delayed by almost two hours.", ""))
    kept, dropped = run("minhash_dedup", rs)
    assert kept == ["r0", "r2", "r3"]
    assert dropped["r1"].startswith("near-duplicate of r0")


def test_minhash_dedup_keeps_sentences_that_only_share_a_run_of_words():
    # 5 of 6 words in order, but not a light edit of each other (the benchmark's one false drop
    # when similarity was difflib's ratio)
    rs = rows(("Gives house number game country case.", ""),
              ("Gives house number country case eye work result.", ""),
              ("Gives house number game country face.", ""))
    kept, dropped = run("minhash_dedup", rs)
    assert kept == ["r0", "r1"] and dropped["r2"].startswith("near-duplicate of r0")


def test_minhash_dedup_finds_the_kept_original_in_a_crowded_bucket():
    base = "the quick brown fox jumps over the lazy dog near the river bank today".split()
    texts = [" ".join(base)]
    for i in range(12):  # one word changed each time, at different places
        w = base[:]
        w[i] = f"word{i}"
        texts.append(" ".join(w))
    kept, dropped = run("minhash_dedup", rows(*[(t, "") for t in texts]))
    assert kept == ["r0"]
    assert all(reason.startswith("near-duplicate of r0") for reason in dropped.values())


def test_minhash_signatures_estimate_jaccard():
    from distill.filters.builtin import minhash_signatures

    a = [f"w{i}" for i in range(100)]
    b = a[:60] + [f"x{i}" for i in range(40)]  # Jaccard 60 / 140
    sigs = minhash_signatures([a, b, a], num_perm=512, chunk_shingles=50)
    assert (sigs[0] == sigs[2]).all()
    assert abs((sigs[0] == sigs[1]).mean() - 60 / 140) < 0.06


def test_length_bounds_on_every_field():
    rs = rows(("Too short.", "Too short."), ("This one has a good number of words.", "This one has a good number of words."),
              ("Fine input with enough words here.", "no"))
    kept, dropped = run("length", rs, min_words=3, max_words=12)
    assert kept == ["r1"]
    assert "input has 2 words" in dropped["r0"] and "output has 1 words" in dropped["r2"]


def test_task_format_drops_chatter_multiline_and_multi_sentence_outputs():
    rs = rows(("She go to school.", "She goes to school."),
              ("She go to school.", "The correct sentence is: She goes to school."),
              ("She go to school.", "She goes to school.\nI fixed the verb."),
              ("She go to school.", "She goes to school. This corrects the verb agreement."),
              ("She go to school.", "Here is the corrected sentence"))
    kept, dropped = run("task_format", rs)
    assert kept == ["r0"]
    assert dropped["r1"] == "output starts with chatter"
    assert dropped["r2"] == "output spans several lines"
    assert dropped["r3"] == "output has more than one sentence"
    assert dropped["r4"] == "output starts with chatter"


def test_edit_ratio_bounds():
    rs = rows(("She go to school every day.", "She goes to school every day."),
              ("She go to school every day.", "Every morning the children walk happily to the big school."))
    kept, dropped = run("edit_ratio", rs, max_ratio=0.5)
    assert kept == ["r0"] and dropped["r1"].startswith("edit ratio")


def test_agrees_with_reference_keeps_only_restorations():
    rs = [Row("a", "She go home.", "She goes home.", reference="She goes home."),
          Row("b", "She go home.", "She go home.", reference="She goes home."),
          Row("c", "She go home.", "She went home.", reference="She goes home."),
          Row("d", "free input", "anything", reference=None)]
    kept, dropped = run("agrees_with_reference", rs)
    assert kept == ["a", "d"]
    assert dropped == {"b": "teacher left the injected error in place", "c": "teacher answer differs from the reference"}


def test_decontaminate_drops_ngram_overlap_and_exact_eval_rows():
    ev = [{"id": "e1", "input": "The teacher explain the lesson slowly to the new students today.",
           "output": "The teacher explains the lesson slowly to the new students today."},
          {"id": "e2", "input": "Its raining.", "output": "It's raining."}]
    rs = rows(("Yesterday the teacher explain the lesson slowly to the new students.", "x y z"),
              ("It's raining.", "It's raining."),
              ("A completely different sentence about cooking dinner tonight.", "fine"))
    kept, dropped = run("decontaminate", rs, ctx(ev), ngram=6)
    assert kept == ["r2"]
    assert "6-gram" in dropped["r0"] and dropped["r1"] == "input equals an eval row"


def test_filters_run_in_order_each_seeing_only_survivors():
    rs = rows(("She go home now.", "She goes home now."), ("She go home now.", "She goes home now."),
              ("Hi.", "Hi."))
    kept, ledger, stages = run_filters([("exact_dedup", {}), ("length", {"min_words": 3})], rs, ctx())
    assert [s["in"] for s in stages] == [3, 2] and [s["kept"] for s in stages] == [2, 1]
    assert {d["stage"] for d in ledger} == {"exact_dedup", "length"}


def test_a_user_filter_is_one_function_and_one_yaml_entry(tmp_path):
    @register_filter("no_digits_test")
    def no_digits(rows, *, field="input"):
        return [Verdict.drop("has digits") if any(c.isdigit() for c in getattr(r, field)) else Verdict.keep()
                for r in rows]

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(textwrap.dedent("""
        filters:
          - exact_dedup
          - {name: no_digits_test, field: output}
    """))
    cfg = load_config(cfg_file)
    rs = rows(("I have 2 cats.", "I have two cats."), ("I has two cats.", "I have 2 cats."))
    kept, ledger, _ = run_filters(cfg.filter_specs(), rs, ctx())
    assert [r.id for r in kept] == ["r0"]
    assert ledger == [{"id": "r1", "stage": "no_digits_test", "reason": "has digits"}]


def test_a_plugin_module_named_in_the_config_registers_its_filter(tmp_path, monkeypatch):
    (tmp_path / "my_team_filters.py").write_text(textwrap.dedent("""
        from distill.filters import Verdict, register_filter

        @register_filter("shorter_than_input")
        def shorter_than_input(rows):
            return [Verdict.drop("output shorter than input") if len(r.output) < len(r.input) else Verdict.keep()
                    for r in rows]
    """))
    cfg_file = tmp_path / "c.yaml"  # the plugin sits beside the config: importable with no PYTHONPATH
    cfg_file.write_text("plugins: [my_team_filters]\nfilters: [shorter_than_input]\n")
    cfg = load_config(cfg_file)
    preflight(cfg, ())  # imports the plugins, then checks every filter named
    kept, ledger, _ = run_filters(cfg.filter_specs(), rows(("She go home.", "She goes home."), ("abcdef", "abc")), ctx())
    assert [r.id for r in kept] == ["r0"] and ledger[0]["reason"] == "output shorter than input"
