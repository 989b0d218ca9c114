"""End to end: wall time of the offline default `distill run`, stage by stage.

Runs the real command (Prefect flow on the ephemeral API, local llama.cpp teacher, TRL student) in a
child process into a new run directory under runs/, then reads the wall time each stage recorded
in the run's stats. What the stages do not account for (Prefect's temporary server, the teacher
server's start-up, imports) is the flow overhead. Prints one JSON object and appends it to
benchmarks/results/end_to_end.jsonl.

    python benchmarks/end_to_end.py                          # the offline default (about 20 minutes here)
    python benchmarks/end_to_end.py --config configs/sentiment.yaml --set training.epochs=1
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _record import record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", help="config file (default: the offline default)")
    ap.add_argument("--set", action="append", default=[], help="config override, as for `distill run`")
    args = ap.parse_args()
    run_dir = ROOT / "runs" / time.strftime("bench-%Y%m%d-%H%M%S")
    cmd = [sys.executable, "-m", "distill.cli", "run", "--run-dir", str(run_dir)]
    if args.config:
        cmd += ["--config", args.config]
    for s in args.set:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    total = time.perf_counter() - t0

    rep = json.loads((run_dir / "report.json").read_text())
    stage = {k: v for k, v in rep["wall_seconds"].items() if v is not None}
    record("end_to_end", {
        "command": " ".join(["distill run"] + cmd[6:]), "run_dir": str(run_dir.relative_to(ROOT)),
        "total_seconds": round(total, 1),
        "stage_seconds": stage,
        "flow_overhead_seconds": round(total - sum(stage.values()), 1),
        "teacher_requests": rep["teacher_usage"]["requests_sent"],
        "teacher_output_tokens": rep["teacher_usage"]["completion_tokens"],
        "rows_generated": rep["data"]["generated"], "rows_kept": rep["data"]["kept"],
        "train_steps": rep["training"]["steps"], "eval_rows": rep["eval"]["n"],
        "models_evaluated": len(rep["models"]),
        # every model's metrics with their 95% intervals (the primary metric first)
        "primary_metric": rep["eval"]["primary_metric"],
        "quality": {m["key"]: {k: [m["metrics"][k], iv["low"], iv["high"]] for k, iv in (m.get("intervals") or {}).items()}
                    for m in rep["models"]},
        # the largest single process among the run's (the flow, the teacher server)
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    })


if __name__ == "__main__":
    main()
