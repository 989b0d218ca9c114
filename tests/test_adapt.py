"""Teacher adaptation by LoRA (distillation path step 1): a real TRL fine-tune of the open teacher on
the seeds, then generation and evaluation through the adapted teacher in-process, zero-shot."""
import pytest

from distill.io import read_json, read_jsonl
from distill.stages import adapt as adapt_stage
from distill.stages import evaluate, generate
from distill.stages.context import prepare_run
from tests.conftest import opened

pytestmark = pytest.mark.slow


def test_lora_adapted_teacher_generates_and_is_reported(tmp_path):
    ctx, cfg, rd = opened(prepare_run(None, tmp_path / "run", [
        "teacher.adaptation=lora", "teacher.adaptation.steps=3", "generation.input_requests=3",
        "generation.inputs_per_request=2", "teacher.max_tokens=32", "generation.input_max_tokens=64",
        "eval.models=[teacher]", "eval.max_rows=4"], stages=("generate",)))
    adapt_stage.run(ctx)
    stats = generate.run(ctx)
    adapt = read_json(rd / "stats" / "adapt.json")
    assert adapt["adaptation"] == "lora" and adapt["steps"] == 3 and adapt["seeds"] > 0
    assert (rd / "teacher" / "adapter" / "adapter_config.json").exists()
    assert (rd / "teacher" / "merged" / "config.json").exists()
    recs = read_jsonl(rd / "data" / "requests.jsonl")
    assert recs and all(r["engine"] == "transformers" for r in recs)
    answers = [r for r in recs if r["messages"][0]["role"] == "system"]
    assert answers and all(len(r["messages"]) == 2 for r in answers)  # zero-shot: system + input, no seed turns
    assert stats.counts.few_shot_ids == []
    t = stats.totals
    assert t.requests_sent == len(recs) and t.prompt_tokens == sum(r["usage"]["prompt_tokens"] for r in recs)

    adapt_stage.run(ctx)
    again = generate.run(ctx)  # neither retrained nor re-asked
    assert again.last.requests_sent == 0 and read_json(rd / "stats" / "adapt.json") == adapt
    ev = evaluate.run(ctx).models["teacher"]
    assert ev.engine == "transformers in-process (LoRA-adapted)" and "LoRA-adapted" in ev.prompt
    assert ev.n == 4 and ev.failed == 0
