"""One blind generation round against a blind round plus a round aimed at the student's misses, at the
same number of teacher requests (issue 37): the distilled student's primary metric on the task's eval
set, the paired 95% interval of the difference per generation seed and over all seeds together.

    python benchmarks/targeted_rounds.py --tasks grammar sentiment --seeds 0 1 2 --out /tmp/targeted

Each (task, seed) is two `distill run`s with the offline default teacher: rounds=1, then rounds=2
(round_share of the same planned requests kept for round 2). Round 1 of the second run asks exactly
the first requests of the first (the same seeded plan, cut shorter), so its request store starts as a
copy of the first run's: those requests are counted for it, not sent twice. --set passes overrides to
both arms (e.g. a smaller generation for a quick look).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _record import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# only the student is evaluated (the comparison is between two students); one short serving round
ROUND_FIELDS = ("probe_rows", "missed", "rows_added", "student_quality")
FAST_EVAL = ["eval.models=[student]", "eval.serving.requests=8", "eval.serving.rounds=1", "eval.serving.latency_requests=1"]


def run(task: str, seed: int, rounds: int, out: Path, sets: list[str], copy_from: Path | None) -> Path:
    rd = out / f"{task}-s{seed}-r{rounds}"
    if not (rd / "report.json").exists():
        if copy_from is not None and not rd.exists():
            (rd / "data").mkdir(parents=True)
            for f in (copy_from / "data").glob("requests*.jsonl"):
                shutil.copy(f, rd / "data" / f.name)
        config = ["--config", f"configs/{task}.yaml"] if task != "grammar" else []
        overrides = [f"seed={seed}", f"generation.rounds={rounds}", *FAST_EVAL, *sets]
        cmd = [sys.executable, "-m", "distill.cli", "run", *config, "--run-dir", str(rd),
               *[a for s in overrides for a in ("--set", s)]]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{rd}: distill run failed:\n{done.stderr[-3000:]}")
        print(f"{rd.name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return rd


def arm(rd: Path) -> dict:
    """What one run spent and scored: teacher requests (sent or found in the copied store), rows kept,
    the student's predictions."""
    gen = json.loads((rd / "stats" / "generate.json").read_text())
    rep = json.loads((rd / "report.json").read_text())
    student = next(m for m in rep["models"] if m["key"] == "student")
    preds_file = next((rd / "eval").glob("*/student.jsonl"))
    preds = [json.loads(line) for line in preds_file.read_text().splitlines()]
    rounds = sorted((rd / "stats").glob("round*.json"))
    return {"requests": gen["totals"]["requests_sent"] + gen["totals"]["cache_hits"],
            "kept": json.loads((rd / "stats" / "filter.json").read_text())["kept"],
            "quality": student["metrics"][rep["eval"]["primary_metric"]], "interval": student.get("interval"),
            "rounds": [{k: v for k, v in json.loads(p.read_text()).items() if k in ROUND_FIELDS} for p in rounds],
            "predictions": preds}


def compare(task_name: str, pairs: list[tuple[dict, dict]], resamples: int) -> dict:
    """Targeted minus blind: per seed, and the mean over seeds (rows resampled together for every seed)."""
    from distill.report.intervals import difference, interval, scorer
    from distill.tasks import load_task

    task = load_task(task_name)
    metric = task.primary_metric

    def scorer_of(a: dict):
        rows = a["predictions"]
        return scorer(task, metric, [r["prediction"] for r in rows], [r.get("references") or [r["reference"]] for r in rows],
                      [r["input"] for r in rows])
    n = len(pairs[0][0]["predictions"])
    per_seed = [difference(scorer_of(t), scorer_of(b), n, seed=0, n_resamples=resamples) for b, t in pairs]
    fs = [(scorer_of(t), scorer_of(b)) for b, t in pairs]
    pooled = interval(lambda idx: np.mean([f(idx) - g(idx) for f, g in fs], axis=0), n, seed=0,
                      n_resamples=min(resamples, 500))
    return {"metric": metric, "eval_rows": n, "per_seed": per_seed,
            "mean_difference": {k: round(v, 2) for k, v in pooled.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["grammar", "sentiment"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("/tmp/targeted_rounds"))
    ap.add_argument("--set", dest="sets", action="append", default=[], help="an override for both arms")
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    for task in args.tasks:
        t0, pairs = time.perf_counter(), []
        for seed in args.seeds:
            blind = run(task, seed, 1, args.out, args.sets, None)
            targeted = run(task, seed, 2, args.out, args.sets, copy_from=blind)
            pairs.append((arm(blind), arm(targeted)))
        result = compare(task, pairs, args.resamples)
        record("targeted_rounds", {
            "task": task, "seeds": args.seeds, "overrides": args.sets, **result,
            "arms": [{"seed": s, **{name: {k: v for k, v in a.items() if k != "predictions"}
                                    for name, a in (("blind", b), ("targeted", t))}}
                     for s, (b, t) in zip(args.seeds, pairs)],
            "wall_seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    main()
