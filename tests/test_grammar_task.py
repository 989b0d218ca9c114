"""The grammar task: parsing replies, injecting errors, metrics."""
import json
import random
from pathlib import Path

from distill.tasks import get_task
from distill.tasks.grammar import INJECTORS

task = get_task("grammar")
ROOT = Path(__file__).resolve().parents[1]


def test_parse_inputs_keeps_sentences_and_drops_chatter_and_numbering():
    reply = ("Here are three sentences about pets:\n1. My dog sleeps on the sofa all afternoon.\n"
             "2) Cats like to sit in warm sunny windows.\n- Short.\nSure, I can write more!\n"
             '"Our rabbit eats fresh carrots every single morning."\n'
             "3. The hamster runs on its wheel all night,\n"
             '4. He feeds the fish twice a day - "He" is the subject of the sentence.\n'
             "5. This sentence uses the word pet in a new example.")
    assert task.parse_inputs(reply) == ["My dog sleeps on the sofa all afternoon.",
                                        "Cats like to sit in warm sunny windows.",
                                        "Our rabbit eats fresh carrots every single morning.",
                                        "The hamster runs on its wheel all night.",
                                        "He feeds the fish twice a day."]


def test_parse_answer_takes_the_first_line_without_labels_or_quotes():
    assert task.parse_answer('"She goes home."\nExplanation: verb') == "She goes home."
    assert task.parse_answer("Corrected sentence: She goes home.") == "She goes home."
    assert task.parse_answer("  She goes home.  ") == "She goes home."


def test_each_injector_changes_a_sentence_it_applies_to():
    cases = {
        "agreement": "She walks to the station every morning.",
        "tense": "Yesterday we walked to the old harbour.",
        "article": "He bought an umbrella at the market.",
        "preposition": "The keys are on the kitchen table.",
        "plural": "She adopted two kittens last spring.",
        "spelling": "I believe the library opens tomorrow.",
        "homophone": "Their garden is bigger than ours.",
        "capitalisation": "We flew to Madrid in June.",
        "word_order": "He always drinks coffee after lunch.",
    }
    for kind, sentence in cases.items():
        out = INJECTORS[kind](sentence, random.Random(1))
        assert out and out != sentence, kind


def test_agreement_injector_does_not_treat_plural_nouns_after_determiners_as_verbs():
    from distill.tasks.grammar import _drop_third_person_s

    assert _drop_third_person_s("The mountains look lovely in spring.", random.Random(0)) is None
    assert _drop_third_person_s("She likes the mountains.", random.Random(0)) == "She like the mountains."


def test_corrupt_is_deterministic_per_seed_and_reports_the_kind():
    s = "My brother usually walks his dog in the park."
    a, b = task.corrupt(s, random.Random(7)), task.corrupt(s, random.Random(7))
    assert a == b and a[0] != s and a[1] in INJECTORS


def test_metrics_reward_corrections_over_copies():
    src = ["She go home.", "He have a car."]
    ref = ["She goes home.", "He has a car."]
    perfect = task.metrics(ref, ref, src)
    copy = task.metrics(src, ref, src)
    assert perfect["exact_match"] == 100 and perfect["gleu"] == 100.0 and perfect["google_bleu"] == 1.0
    assert copy["exact_match"] == 0 and copy["gleu"] < perfect["gleu"] and copy["chrf"] < perfect["chrf"]
    assert copy["sari"] < perfect["sari"]


def test_shipped_data_meets_its_spec():
    seeds = [json.loads(line) for line in open(ROOT / "distill/tasks/grammar/seeds.jsonl")]
    evals = [json.loads(line) for line in open(ROOT / "distill/tasks/grammar/eval.jsonl")]
    assert len(seeds) >= 30 and len(evals) >= 150
    kinds = {s["error_type"] for s in seeds}
    assert {"agreement", "tense", "article", "preposition", "plural", "spelling", "homophone", "word_order",
            "capitalisation", "correct"} <= kinds
    seed_text = {s["input"] for s in seeds} | {s["output"] for s in seeds}
    assert not seed_text & ({e["input"] for e in evals} | {e["output"] for e in evals})
    unchanged = sum(e["input"] == e["output"] for e in evals) / len(evals)
    assert 0.07 <= unchanged <= 0.13
