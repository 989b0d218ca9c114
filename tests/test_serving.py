"""The serving measurement measures the same work once, and holds still under machine load: the offline
default's models measured twice, the second time with a CPU-bound process occupying one of the two
cores throughout."""
import subprocess
import sys
from pathlib import Path

import pytest

from distill.report.phrases import cost_phrase, cost_ratio
from distill.stages.context import prepare_run
from distill.stages.eval_models import Progression, in_process_models
from distill.stages.serving import Served, measure, teacher_weights
from tests.conftest import tiny_llama


def direction(r: dict) -> str:
    """The phrase without its figure: cheaper, more expensive or no measurable difference."""
    return cost_phrase(r).split("x ", 1)[-1]


def _measure(ctx, twin: Path) -> dict:
    cfg, task = ctx.cfg, ctx.task
    sample = ctx.eval_rows[:cfg.eval.serving.requests]
    weights, _ = teacher_weights(cfg, ctx.dir)
    served = [Served("teacher", weights, [task.teacher_messages(r["input"], ctx.shots) for r in sample],
                     cfg.teacher.hardware)]
    # the 6-shot base student through another path to the same weights: measured on its own rather than
    # given the teacher's figures, so the test sees whether two measurements of one workload stay alike
    served += [Served(m.key, twin if m.key == "base_few_shot" else m.path, [m.messages(r["input"]) for r in sample],
                      m.hardware) for m in in_process_models(ctx, Progression(ctx))]
    out = measure(served, cfg.pricing, rounds=cfg.eval.serving.rounds, batch_size=cfg.eval.batch_size,
                  max_new_tokens=cfg.eval.max_new_tokens, threads=cfg.eval.serving.threads)
    rows = {k: {"key": k, "name": k, **v, "serving": v} for k, v in out.items()}
    return {k: cost_ratio(rows["teacher"], r) for k, r in rows.items() if k != "teacher"}


def test_the_same_weights_under_the_same_prompt_are_measured_once(tmp_path):
    """The offline default's teacher is its own base student under its k-shot prompt: that work is served
    once and both rows carry its seconds; the same weights under another prompt are measured on their own.
    Breaks caught: the twin served a second time (its own, different figures) or not at all (no row), and
    a precision other than the one the engine's name states."""
    from distill.config import load_config
    from distill.models.load import cpu_bf16

    path = tiny_llama(tmp_path / "m")
    shots = [[{"role": "user", "content": f"the dogs bark at night {w}"}] for w in ("she", "goes", "to", "the")]
    plain = [[{"role": "user", "content": w}] for w in ("she", "goes", "to", "the")]
    served = [Served("teacher", path, shots, "cpu-2core"), Served("base_few_shot", path, shots, "cpu-2core"),
              Served("base_student", path, plain, "cpu-2core")]
    lines = []
    out = measure(served, load_config(None, []).pricing, rounds=3, batch_size=4, max_new_tokens=4, threads=1,
                  log=lines.append, latency_requests=3)
    assert out["base_few_shot"]["seconds"] == out["teacher"]["seconds"] and len(out["teacher"]["seconds"]) == 3
    assert out["base_few_shot"]["measured_as"] == "teacher" and "measured_as" not in out["base_student"]
    # every round serves the teacher and the base student, each with a figure of its own, and no twin (the
    # tiny model's seconds round alike, so the rounds' log says what was served)
    assert len(lines) == 3 and all(x.split(": ", 1)[1].startswith(("teacher ", "base_student "))
                                   and x.count(" s") == 2 and "base_few_shot" not in x for x in lines)
    assert ("bf16" if cpu_bf16() else "fp32") in out["teacher"]["engine"]
    # issue 36: latency is each request served alone (one figure per request, the twin's the same), not the
    # quality pass's send-to-reply time with the other requests queued and batched alongside
    assert len(out["teacher"]["latency_s"]) == 3 and all(x > 0 for x in out["teacher"]["latency_s"])
    assert out["base_few_shot"]["latency_s"] == out["teacher"]["latency_s"] != out["base_student"]["latency_s"]
    fp32 = measure(served[:1], load_config(None, []).pricing, rounds=3, batch_size=4, max_new_tokens=4, threads=1,
                   precision="fp32", log=lines.append)
    assert "fp32" in fp32["teacher"]["engine"]


@pytest.mark.slow
def test_cost_verdict_and_ratios_hold_with_one_core_busy(tmp_path):
    """Breaks caught: cost read off one uninterleaved pass (the busy core lands on whichever model runs while it
    spins) and ratios of medians taken from different moments. The models are the offline default's
    before training: the teacher (its GGUF dequantised, 6-shot prompt, the shared prefix cached) and the
    base student under its plain prompt (it answers at length) and under the teacher's 6-shot prompt
    (the same work as the teacher: no difference may be claimed). The
    instruction prompt is left out: its ratio sits near the 10% resolution band, where the phrase may
    change with any noise, load or not; the phrase is required to hold only when the quiet ratio is
    clear of the band. Answers are capped at 24 tokens."""
    ctx = prepare_run(None, tmp_path / "run", ["eval.models=[teacher, base_student, base_few_shot]",
                                               "eval.serving.requests=8", "eval.max_new_tokens=24"])
    with ctx:
        twin = tmp_path / "same-weights"
        twin.symlink_to(teacher_weights(ctx.cfg, ctx.dir)[0], target_is_directory=True)
        quiet = _measure(ctx, twin)
        busy_proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy = _measure(ctx, twin)
        finally:
            busy_proc.kill()
            busy_proc.wait()
    print({k: (quiet[k], busy[k]) for k in quiet})
    assert set(quiet) == {"base_student", "base_few_shot"}
    for k in quiet:
        assert abs(busy[k]["ratio"] / quiet[k]["ratio"] - 1) < 0.25, (k, quiet[k], busy[k])
        if not 0.85 < quiet[k]["ratio"] < 1.2:  # clear of the 10% band: the phrase must not change under load
            assert direction(quiet[k]) == direction(busy[k]), (k, quiet[k], busy[k])
    # the teacher's 6-shot prefix is computed once (the engine's prompt cache), so its long prompt no longer
    # costs its length per request: the base student, answering at length, costs more
    assert quiet["base_student"]["ratio"] < 1.0 and busy["base_student"]["ratio"] < 1.0
    assert cost_phrase(quiet["base_few_shot"]) == "no measurable cost difference"
