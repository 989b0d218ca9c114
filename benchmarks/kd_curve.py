"""Learning curves of a depth-pruned student by training method: the held-out primary metric (GLEU
for grammar) every N steps of sft, logit_kd and on_policy on the same rows, with the training seconds
spent to get there (evaluation time excluded). It says how far each method is from the bar, and how
fast it moves towards it.

    python benchmarks/kd_curve.py --run runs/<id> --teacher runs/<id>/student --keep-layers 16 \\
        --steps 200 --every 50 --eval-rows 64

--run is a run directory with data/train.jsonl (the filtered rows); --teacher the weights whose
distribution logit_kd and on_policy learn (the run's SFT-distilled student: it reads the student's
plain prompt). --init and --prune say what is cut: the base model by default, evenly spaced layers;
`--init <run>/students/<kd teacher> --prune block` is configs/kd.yaml's recipe. The learning rate
follows one cosine schedule over --steps, so a point at step 50 of a 200-step curve is not a 50-step
run: the curve is the run seen from inside (--stop-after ends it early on that same schedule).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _record import record  # noqa: E402


def curve(method: str, args, rows, eval_rows, task) -> list[dict]:
    from transformers import TrainerCallback

    from distill.config import Student, load_config
    from distill.models.infer import generate_batched
    from distill.models.kd_train import KDSource
    from distill.models.load import base_student_dir, load_model, pruned_dir
    from distill.models.sft import device_plan, make_trainer
    from distill.stages.train import to_prompt_completion

    t = load_config().training.model_copy(update={
        "lora": False, "learning_rate": args.lr, "max_steps": args.steps, "method": method, "save_steps": 10**6,
        "logging_steps": 10})
    plan = {**device_plan(t, cuda=False, bf16_ok=False, flash_attn=False), "padding_free": False}
    if args.prune == "even" and not args.init:
        model, tok = load_model(pruned_dir(base_student_dir(Student()), args.keep_layers))
    else:
        from distill.models import prune

        model, tok = load_model(Path(args.init) if args.init else base_student_dir(Student()))
        keep = prune.choose(model, tok, args.prune, args.keep_layers,
                            [(task.student_messages(r.input), r.output) for r in rows])
        print(f"kept layers: {keep}", flush=True)
        prune.cut(model, keep)
    kd = None if method == "sft" else KDSource("teacher", path=Path(args.teacher))
    messages = [task.student_messages(r["input"]) for r in eval_rows]
    points, clock = [], {"train": 0.0, "since": time.perf_counter()}

    def evaluate(m, step: int) -> None:
        clock["train"] += time.perf_counter() - clock["since"]
        m.eval()
        out = generate_batched(m, tok, messages, batch_size=16, max_new_tokens=64)
        preds = [task.parse_answer(o["raw"]) if o["error"] is None else "" for o in out]
        score = task.metrics(preds, [r["output"] for r in eval_rows], [r["input"] for r in eval_rows])[task.primary_metric]
        m.train()
        points.append({"method": method, "step": step, "rows_seen": step * t.batch_size,
                       "train_seconds": round(clock["train"], 1), task.primary_metric: round(score, 4)})
        print(points[-1], flush=True)
        clock["since"] = time.perf_counter()

    class Every(TrainerCallback):
        def on_step_end(self, a, state, control, model=None, **kw):
            if state.global_step % args.every == 0:
                evaluate(model, state.global_step)
            if args.stop_after and state.global_step >= args.stop_after:
                control.should_training_stop = True

    records = to_prompt_completion(task, rows)
    trainer = make_trainer(t, plan, model, tok, records, Path(args.out) / method, kd=kd)
    trainer.add_callback(Every())  # no point at step 0: the fresh cut only babbles (GLEU ~0), slowly
    trainer.train()
    return points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run directory with data/train.jsonl")
    ap.add_argument("--teacher", required=True, help="weights logit_kd and on_policy learn from")
    ap.add_argument("--methods", nargs="+", default=["sft", "logit_kd", "on_policy"])
    ap.add_argument("--keep-layers", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--eval-rows", type=int, default=64, help="first N rows of the task's eval set")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--stop-after", type=int, help="stop here, the schedule still spanning --steps: the start of a "
                    "long curve, comparable point for point with one run to the end")
    ap.add_argument("--init", help="weights to cut (default: the base student); e.g. the run's SFT-distilled "
                    "student, Minitron's order: correct the teacher on the data, then prune, then distil")
    ap.add_argument("--prune", choices=["even", "block"], default="even",
                    help="which layers stay: evenly spaced, or all but the block that moves the hidden states least")
    ap.add_argument("--out", default="/tmp/kd_curve", help="scratch directory for checkpoints")
    args = ap.parse_args()

    from distill.io import read_jsonl
    from distill.records import Row
    from distill.tasks import get_task

    task = get_task("grammar")
    rows = [Row.from_dict(r) for r in read_jsonl(Path(args.run) / "data" / "train.jsonl")]
    eval_rows = read_jsonl(task.folder / "eval.jsonl")[: args.eval_rows]
    for method in args.methods:
        pts = curve(method, args, rows, eval_rows, task)
        record("kd_curve", {"method": method, "keep_layers": args.keep_layers, "prune": args.prune,
                            "init": "base" if not args.init else Path(args.init).name, "schedule_steps": args.steps,
                            "rows": len(rows), "lr": args.lr,
                            "eval_rows": len(eval_rows), "points": pts})


if __name__ == "__main__":
    main()
