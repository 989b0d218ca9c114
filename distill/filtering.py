"""The filter stage: generated.jsonl -> train.jsonl + dropped.jsonl + stats/filter.json + a HF dataset.

Nothing is deleted silently: every row of generated.jsonl ends up in exactly one of train.jsonl
and dropped.jsonl (failed teacher requests are dropped at stage "generate" with their error).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from distill.config import Config, resolve_path
from distill.filters import FilterContext, Row, run_filters
from distill.io import load_examples, read_json, read_jsonl, write_json, write_jsonl
from distill.tasks import get_task


def filter_stage(cfg: Config, run_dir: Path) -> dict:
    t0 = time.perf_counter()
    task = get_task(cfg.task)
    generated_path = run_dir / "data" / "generated.jsonl"
    if not generated_path.exists():
        raise FileNotFoundError(f"{generated_path}: not found (run `distill generate` first)")
    generated = read_jsonl(generated_path)
    seeds = load_examples(resolve_path(cfg.seeds_path), what="seed file")
    eval_rows = load_examples(resolve_path(cfg.eval.path), what="eval set")
    teacher = FilterTeacher(cfg, run_dir)
    ctx = FilterContext(task=task, seeds=seeds, eval_rows=eval_rows, teacher=teacher)

    ledger = [{"id": g["id"], "stage": "generate", "reason": g.get("error") or "failed",
               **({"raw": g["raw"]} if g.get("raw") is not None else {})}
              for g in generated if g.get("status") != "ok"]
    rows = [Row.from_dict(g) for g in generated if g.get("status") == "ok"]
    try:
        kept, dropped, stages = run_filters(cfg.filter_specs(), rows, ctx)
    finally:
        teacher.close()
    ledger += dropped

    write_jsonl(run_dir / "data" / "train.jsonl", [r.to_dict() for r in kept])
    write_jsonl(run_dir / "data" / "dropped.jsonl", ledger)
    if len(kept) + len(ledger) != len(generated):
        raise RuntimeError(f"{len(generated)} rows in, {len(kept)} kept + {len(ledger)} dropped out: a filter lost or duplicated rows")

    by_source = {}
    for r in kept:
        src = r.meta.get("source", "teacher")
        by_source[src] = by_source.get(src, 0) + 1
    stats = {
        "generated": len(generated),
        "failed_generation": sum(1 for g in generated if g.get("status") != "ok"),
        "kept": len(kept),
        "kept_by_source": by_source,
        "kept_with_edit": sum(1 for r in kept if r.input != r.output),
        "dropped": len(ledger),
        "stages": stages,
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }
    if teacher.used:
        stats["teacher"] = teacher.stats()
    export_dataset(cfg, run_dir, kept, stats)
    write_json(run_dir / "stats" / "filter.json", stats)
    return stats


class FilterTeacher:
    """The teacher as filters see it: the endpoint is started on the first request only, replies go
    through the run's request store (requests.filters.jsonl), so a re-run asks nothing twice, and
    usage and cost add up for the report like generation's."""

    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self._stack = ExitStack()
        self._url: str | None = None
        self.usage: list[dict] = []
        self.busy_s = 0.0
        self.used = False

    def structured(self, reqs: list, schema: dict, label: str) -> list[dict]:
        """Validated structured replies (see distill.structured.run_structured), in request order."""
        from distill.progress import progress_bar
        from distill.structured import run_structured
        from distill.teacher import RequestStore, teacher_endpoint

        self.used = True
        if self._url is None:
            self._url = self._stack.enter_context(teacher_endpoint(self.cfg, self.run_dir))
        store = RequestStore(self.run_dir / "data" / "requests.jsonl", writer="filters")
        t0 = time.perf_counter()
        try:
            with progress_bar(len(reqs), label) as advance:
                replies, usage = run_structured(self.cfg, self._url, store, reqs, schema, advance)
        finally:
            store.close()
        if usage.requests_sent:
            self.busy_s += time.perf_counter() - t0
        self.usage.append(usage.as_dict())
        return replies

    def stats(self) -> dict:
        from distill.generate import merge_usage
        from distill.teacher import teacher_cost

        u = merge_usage(self.usage).as_dict()
        cost = teacher_cost(self.cfg, u["prompt_tokens"], u["completion_tokens"], self.busy_s)
        return {"model": self.cfg.teacher.model, **u, "busy_seconds": round(self.busy_s, 2),
                "cost_usd": cost["usd"], "cost_rule": cost["rule"]}

    def close(self) -> None:
        self._stack.close()


def export_dataset(cfg: Config, run_dir: Path, kept: list[Row], stats: dict) -> Path:
    """The kept set as a Hugging Face dataset folder (parquet + dataset card), Hub-ready."""
    from datasets import Dataset

    task = get_task(cfg.task)
    records = [{"id": r.id, "input": r.input, "output": r.output,
                "prompt": task.student_messages(r.input),
                "completion": [{"role": "assistant", "content": r.output}],
                "meta": json.dumps(r.meta, ensure_ascii=False)} for r in kept]
    ds = Dataset.from_list(records)
    final = run_dir / "dataset"
    tmp = Path(tempfile.mkdtemp(dir=run_dir, prefix=".dataset."))
    try:
        (tmp / "data").mkdir()
        ds.to_parquet(str(tmp / "data" / "train-00000-of-00001.parquet"))
        (tmp / "README.md").write_text(dataset_card(cfg, run_dir, stats), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if cfg.export.push_to_hub:
        push_to_hub(cfg, final)
    return final


def dataset_card(cfg: Config, run_dir: Path, stats: dict) -> str:
    gen_path = run_dir / "stats" / "generate.json"
    gen = read_json(gen_path) if gen_path.exists() else {}
    g = cfg.generation
    filters = "\n".join(f"| `{s['stage']}` | `{json.dumps(s['params'])}` | {s['in']} | {s['kept']} | {s['dropped']} |"
                        for s in stats["stages"])
    return f"""---
license: apache-2.0
task_categories:
- text-generation
tags:
- synthetic
- distillation
- {cfg.task}
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# {cfg.task}: distilled training set

Synthetic data made by `distill` from a seed set and a teacher model, then filtered.

- **Seeds:** `{cfg.seeds_path}`
- **Teacher:** `{cfg.teacher.model}` ({cfg.teacher.few_shot}-shot, temperature {cfg.teacher.temperature}, {g.samples_per_input} sample(s) per input)
- **Generation:** {g.input_requests} Self-Instruct requests x {g.inputs_per_request} inputs, {g.seeds_per_prompt} seeds per prompt, input temperature {g.input_temperature}
- **Teacher usage:** {json.dumps(gen.get('totals', {}))}
- **Rows:** {stats['generated']} generated, {stats['kept']} kept ({stats['kept_with_edit']} with an edit), {stats['dropped']} dropped

## Filters
| filter | params | in | kept | dropped |
|---|---|---|---|---|
{filters}

Columns: `id`, `input`, `output`, `prompt`/`completion` (TRL conversational prompt-completion format, the
student's plain prompt), `meta` (JSON: source, error type, seed ids, topic, teacher, request keys).
"""


def push_to_hub(cfg: Config, folder: Path) -> None:
    from huggingface_hub import HfApi

    token = os.environ.get(cfg.export.hub_token_env)
    if not token or not cfg.export.hub_repo:
        raise ValueError("export.push_to_hub needs export.hub_repo and a token in $" + cfg.export.hub_token_env)
    api = HfApi(token=token)
    api.create_repo(cfg.export.hub_repo, repo_type="dataset", private=cfg.export.private, exist_ok=True)
    api.upload_folder(repo_id=cfg.export.hub_repo, folder_path=str(folder), repo_type="dataset")
