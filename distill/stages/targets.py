"""Which probe rows seed the next generation round (issue 37): the rows where the first student fails.

A probe row is a kept row the student was not trained on (the teacher's answer is its output) with the
student's answer. The student fails a row when the task's checker rejects its answer (the row knows
its answer: an injected error, a label made by code), or, with no checker verdict, when its answer is
further from the teacher's than `agree_at`. Rows where the teacher itself fails the checker teach
nothing and are left out. The worst misses come first; ties are broken by a hash of the row id and
the run's seed, so the order is stable across re-runs and shard counts.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from distill.records import Row
from distill.tasks import ClassificationTask, ExtractionTask, Task


@dataclass(frozen=True)
class Probe:
    row: Row  # input, the teacher's answer (output) and the known answer (reference) when there is one
    student: str  # the student's parsed answer


@dataclass(frozen=True)
class Target:
    id: str
    input: str
    reason: str
    agreement: float  # 0-1: how close the student came to the answer it should have given


def agreement(task: Task, a: str, b: str) -> float:
    """1 for the same answer, 0 for another; between for text, as sentence chrF / 100."""
    if isinstance(task, (ClassificationTask, ExtractionTask)):
        return float(task.parse_answer(a) == task.parse_answer(b))
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(a, [b]).score / 100


def targets(task: Task, probes: list[Probe], *, agree_at: float, seed: int = 0) -> list[Target]:
    """The probe rows the student fails, worst first."""
    found = []
    for p in probes:
        known = p.row.reference is not None  # the checker has a verdict only where the row knows its answer
        if known and task.check(p.row):
            continue  # the teacher fails it too: no answer to learn from
        student_problem = task.check(replace(p.row, output=p.student)) if known else None
        score = agreement(task, p.student, p.row.output or "")
        if student_problem:
            found.append(Target(p.row.id, p.row.input, f"checker: {student_problem}", score))
        elif score < agree_at:
            found.append(Target(p.row.id, p.row.input, f"disagrees with the teacher ({score:.2f} < {agree_at:g})", score))
    return sorted(found, key=lambda t: (t.agreement, _tiebreak(t.id, seed)))


def _tiebreak(row_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()
