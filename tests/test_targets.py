"""Issue 37: the selection of the probe rows that seed a targeted round, on constructed predictions."""
from distill.records import Row
from distill.stages.targets import Probe, targets
from distill.tasks import load_task


def _probe(i: int, output: str, student: str, reference: str | None = None) -> Probe:
    return Probe(Row(id=f"r{i}", input=f"input {i}", output=output, reference=reference), student)


def test_classification_disagreement_and_the_checker():
    """A student label other than the teacher's is a miss; with a known label, the checker decides, and a
    row the teacher itself gets wrong is left out (nothing to learn from it)."""
    task = load_task("sentiment")
    probes = [_probe(0, "positive", "positive"),  # agrees: not a target
              _probe(1, "positive", "negative"),  # disagrees, no known label
              _probe(2, "negative", "positive", reference="negative"),  # checker: wrong label
              _probe(3, "positive", "negative", reference="negative"),  # the teacher is the one wrong: left out
              _probe(4, "negative", "neutral")]  # not a label at all
    got = targets(task, probes, agree_at=1.0)
    assert sorted(t.id for t in got) == ["r1", "r2", "r4"]
    assert next(t for t in got if t.id == "r2").reason.startswith("checker: wrong label (positive, expected negative)")
    assert next(t for t in got if t.id == "r1").reason.startswith("disagrees with the teacher")


def test_text_misses_are_ordered_worst_first_and_ties_by_a_stable_hash():
    """Rewrites: closeness is chrF between the student's and the teacher's answers; below agree_at is a
    miss; the worst miss first; equal scores in an order fixed by the seed, not by input order."""
    task = load_task("grammar")
    teacher = "She goes to the market every Saturday morning."
    probes = [_probe(0, teacher, teacher),
              _probe(1, teacher, "She go to market."),
              _probe(2, teacher, "Completely unrelated words here."),
              _probe(3, teacher, "Completely unrelated words here."),
              _probe(4, teacher, "She goes to the market every Saturday.")]
    got = targets(task, probes, agree_at=0.6)
    assert [t.id for t in got][-1] == "r1" and {t.id for t in got[:2]} == {"r2", "r3"}
    assert all(t.agreement < 0.6 for t in got) and "r0" not in {t.id for t in got} and "r4" not in {t.id for t in got}
    reversed_input = targets(task, probes[::-1], agree_at=0.6)
    assert [t.id for t in reversed_input] == [t.id for t in got]  # ties do not follow the input order
    orders = {tuple(t.id for t in targets(task, probes, agree_at=0.6, seed=s)[:2]) for s in range(8)}
    assert orders == {("r2", "r3"), ("r3", "r2")}  # the seed decides the tie
