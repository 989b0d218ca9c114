"""Filtering at scale: exact dedup + MinHash near-dup + decontamination over N synthetic rows.

Rows are short sentences (6-20 words) from a fixed vocabulary; 10% are planted near-duplicates of an
earlier row (1-2 words changed) and 5% exact duplicates. Prints one JSON object and appends it to
benchmarks/results/filter_scale.jsonl.

    python benchmarks/filter_scale.py 10000 30000 100000
"""
from __future__ import annotations

import random
import resource
import sys
import time
from pathlib import Path

from distill.filters import FilterContext, Row, run_filters
from distill.tasks import get_task

sys.path.insert(0, str(Path(__file__).parent))
from _record import record  # noqa: E402

WORDS = ("time year people way day man thing woman life child world school state family student group country "
         "problem hand part place case week company system program question work government number night point "
         "home water room mother area money story fact month lot right study book eye job word business issue "
         "side kind head house service friend father power hour game line end member law car city community name "
         "president team minute idea kid body information back parent face others level office door health person "
         "art war history party result change morning reason research girl guy moment air teacher force education "
         "walks reads finds takes makes sees knows wants gives uses tells asks works seems feels tries leaves calls "
         "quickly slowly often never always today yesterday tomorrow happily quietly early late again soon").split()


def make_rows(n: int, seed: int = 0) -> tuple[list[Row], set[str], set[str]]:
    rng = random.Random(seed)
    rows, near, exact = [], set(), set()
    originals: list[str] = []
    for i in range(n):
        r = rng.random()
        if originals and r < 0.10:
            words = rng.choice(originals).split()
            for _ in range(rng.choice((1, 2))):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            text = " ".join(words)
            near.add(f"r{i}")
        elif originals and r < 0.15:
            text = rng.choice(originals)
            exact.add(f"r{i}")
        else:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 20))).capitalize() + "."
            originals.append(text)
        rows.append(Row(id=f"r{i}", input=text, output=text))
    return rows, near, exact


def bench(n: int) -> dict:
    rows, near, exact = make_rows(n)
    ctx = FilterContext(task=get_task("grammar"), seeds=[], eval_rows=[
        {"id": "e0", "input": "The teacher explains the lesson slowly.", "output": "The teacher explains the lesson slowly."}])
    specs = [("exact_dedup", {}), ("minhash_dedup", {}), ("decontaminate", {"ngram": 6})]  # built-in defaults
    t0 = time.perf_counter()
    kept, ledger, stages = run_filters(specs, rows, ctx)
    secs = time.perf_counter() - t0
    dropped = {d["id"] for d in ledger}
    planted = near | exact
    # a near-duplicate whose edit made it identical to another row counts as caught either way
    return {
        "rows": n,
        "seconds": round(secs, 2),
        "per_stage_seconds": {s["stage"]: s["seconds"] for s in stages},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "near_dup_recall": round(len(near & dropped) / max(len(near), 1), 4),
        "exact_dup_recall": round(len(exact & dropped) / max(len(exact), 1), 4),
        "false_drops": len(dropped - planted),
    }


def main(sizes: list[int]) -> None:
    results = [bench(n) for n in sizes]
    out = {"results": results}
    if len(results) > 1:
        out["growth"] = round(results[-1]["seconds"] / results[0]["seconds"], 2)
        out["size_ratio"] = round(results[-1]["rows"] / results[0]["rows"], 2)
    record("filter_scale", out)

if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000])
