"""After a targeted round: retrain the student from the base on every kept row (what `distill` does) or
continue the probing student on the rows it has not seen (the probes and the later round's rows)?
Both students answer the eval set in the same harness; the paired 95% interval of the difference and
the training seconds of each are recorded.

    python benchmarks/round_init.py /tmp/targeted_rounds/grammar-s0-r2 /tmp/targeted_rounds/grammar-s1-r2 ...

Each argument is a finished run directory made with generation.rounds=2 (e.g. by targeted_rounds.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _record import record  # noqa: E402


def continued(rd, cfg, task, out: Path) -> tuple[Path, float]:
    """The round-2 probing student trained on, by SFT, on the kept rows it never saw."""
    from distill.io import read_jsonl
    from distill.records import Row
    from distill.stages.train import to_prompt_completion, train_one

    probes = {p["id"] for p in read_jsonl(rd.round_probes(2))}
    rows = [r for r in (Row.from_dict(d) for d in read_jsonl(rd.train)) if r.id in probes or r.meta.get("round") == 2]
    _, student, t = cfg.student_candidates()[0]
    t0 = time.perf_counter()
    stats = train_one(student, t.model_copy(update={"method": "sft"}), to_prompt_completion(task, rows), out / "checkpoints",
                      out / "student", out / "student" / "train_stats.json", None, rd.round_student(2), None)
    return out / "student", stats.wall_seconds or time.perf_counter() - t0


def predictions(cfg, task, folder: Path, rows: list[dict]) -> list[str]:
    from distill.models.infer import generate_batched
    from distill.models.load import load_model

    model, tok = load_model(folder)
    out = generate_batched(model, tok, [task.student_messages(r["input"]) for r in rows], batch_size=cfg.eval.batch_size,
                           max_new_tokens=cfg.eval.max_new_tokens, prefix_cache={})
    return [task.parse_answer(o["raw"]) if o["error"] is None else "" for o in out]


def main() -> None:
    from distill.io import references
    from distill.report.intervals import compare, difference, scorer
    from distill.rundir import RunDir
    from distill.stages.context import prepare_run
    from distill.stats import TrainStats

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/round_init"))
    args = ap.parse_args()
    for path in args.runs:
        rd = RunDir(path)
        with prepare_run(None, rd, [], save=False) as ctx:  # the run's own config, task and eval rows
            cfg, task, rows = ctx.cfg, ctx.task, list(ctx.eval_rows)
        folder, cont_s = continued(rd, cfg, task, args.out / path.name)
        refs, srcs, metric = [references(r) for r in rows], [r["input"] for r in rows], task.primary_metric
        scored = {name: scorer(task, metric, predictions(cfg, task, f, rows), refs, srcs)
                  for name, f in (("from_base", rd.student()), ("continued", folder))}
        ivs = compare(scored, len(rows), against=None, seed=0, n_resamples=1000)
        record("round_init", {
            "run": str(path), "task": cfg.task, "seed": cfg.seed, "metric": metric, "eval_rows": len(rows),
            "from_base": ivs["from_base"]["interval"], "continued": ivs["continued"]["interval"],
            "continued_minus_from_base": difference(scored["continued"], scored["from_base"], len(rows), n_resamples=1000),
            "train_seconds": {"from_base": TrainStats.read(rd.stats("train")).wall_seconds,
                              "continued": round(cont_s, 1)}})


if __name__ == "__main__":
    main()
