"""The kept set as a Hugging Face dataset folder (parquet + dataset card), Hub-ready."""
from __future__ import annotations

import json
import os
from pathlib import Path

from distill.config import Config
from distill.io import atomic_dir
from distill.progress import quiet_libraries
from distill.records import Row, prompt_completion
from distill.rundir import RunDir
from distill.stages.context import RunContext
from distill.stats import FilterStats, GenerateStats


def export_dataset(ctx: RunContext, kept: list[Row], stats: FilterStats) -> Path:
    from datasets import Dataset

    quiet_libraries()
    cfg, rd = ctx.cfg, ctx.dir
    records = [{"id": r.id, "input": r.input, "output": r.output,
                **prompt_completion(ctx.task.student_messages(r.input), r.output),
                "meta": json.dumps(r.meta, ensure_ascii=False)} for r in kept]
    ds = Dataset.from_list(records)
    final = rd.dataset
    with atomic_dir(final) as tmp:
        parquet, card = RunDir.dataset_files(tmp)
        parquet.parent.mkdir(parents=True)
        ds.to_parquet(str(parquet))
        card.write_text(dataset_card(cfg, rd, stats, ctx.seeds_path, ctx.task.spec.kind in ("rewrite", "generation")), encoding="utf-8")
    if cfg.export.push_to_hub:
        push_to_hub(cfg, final)
    return final


def dataset_card(cfg: Config, rd: RunDir, stats: FilterStats, seeds_path: Path, edits: bool = True) -> str:
    """The dataset's card; `edits`: the task rewrites its input, so how many kept rows change it is said."""
    usage = GenerateStats.read(rd.stats("generate")).totals.model_dump(exclude={"errors", "cost_rule", "finished_at"})
    edits = f" ({stats.kept_with_edit} with an edit)" if edits else ""
    g = cfg.generation
    rounds = (f"; in {g.rounds} rounds, {g.round_share:.0%} of the requests for the rounds after the first, which ask for "
              "inputs like the ones a student trained on the earlier rounds got wrong") if g.rounds > 1 else ""
    filters = "\n".join(f"| `{s['stage']}` | `{json.dumps(s['params'])}` | {s['in']} | {s['kept']} | {s['dropped']} |"
                        for s in stats.stages)
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

- **Seeds:** `{seeds_path}`
- **Teacher:** `{cfg.teacher.model}` ({cfg.teacher.adaptation.few_shot}-shot, temperature {cfg.teacher.temperature}, {g.samples_per_input} sample(s) per input)
- **Generation:** {g.input_requests} Self-Instruct requests x {g.inputs_per_request} inputs, {g.seeds_per_prompt} seeds per prompt, input temperature {g.input_temperature}{rounds}
- **Teacher usage:** {json.dumps(usage)}
- **Rows:** {stats.generated} generated, {stats.kept} kept{edits}, {stats.dropped} dropped

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
