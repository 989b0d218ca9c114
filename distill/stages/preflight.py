"""Every check that can fail before work starts, so bad input fails fast, with one line naming the
file, line and field, and writes nothing: plugins import, filters exist and take their parameters,
seed and eval files parse and do not overlap, the teacher answers, the student fits in memory."""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from distill.config import Config, ConfigError, EvalSet, config_error, resolve_path
from distill.filters import UnknownFilter, check_filter
from distill.io import DataError, Examples, load_benchmark, load_examples, references
from distill.records import Row
from distill.tasks import ClassificationTask, ExtractionTask, Task, load_task
from distill.teacher import TeacherError
from distill.text import dedup_key, scrub


@dataclass
class Inputs:
    task: Task
    seeds: Examples
    eval_rows: Examples
    eval_sets: dict[str, Examples]  # the sets beside the headline one (eval.sets), by name


def preflight(cfg: Config, stages: tuple[str, ...]) -> Inputs:
    import_plugins(cfg)
    check_filters(cfg)
    check_prices(cfg)
    check_ladder(cfg)
    check_cascade(cfg)
    check_judge(cfg)
    task = load_task(cfg.task)
    seeds_path, eval_path = data_paths(cfg, task)
    columns = task.spec.fields.model_dump()
    seeds = load_examples(seeds_path, columns=columns, what="seed file")
    evals = load_eval_set(cfg, cfg.eval, eval_path, columns, ["eval"])
    sets = {name: load_eval_set(cfg, es, None, columns, ["eval", "sets", name]) for name, es in cfg.eval.sets.items()}
    check_published(cfg)
    check_templates(cfg, task, seeds)
    for rows, fields in ((seeds, columns), (evals, {**columns, **(cfg.eval.fields or {})}),
                         *((rows, {**columns, **(cfg.eval.sets[n].fields or {})}) for n, rows in sets.items())):
        check_answers(task, rows, fields["output"])
    for rows in (evals, *sets.values()):
        check_no_overlap(seeds, rows)
    if "generate" in stages or ("evaluate" in stages and "teacher" in cfg.eval.models):
        check_teacher(cfg)
    if "train" in stages:
        check_student_fits(cfg)
    return Inputs(task, seeds, evals, sets)


def load_eval_set(cfg: Config, es: EvalSet, default: Path | None, columns: dict, key: list[str]) -> Examples:
    """One eval set: a file (JSONL, CSV, parquet), or a benchmark's source + reference files."""
    if es.source and es.path:
        raise config_error(cfg, [*key, "source"], "give the eval set as `path` or as `source` + `references`, not both")
    if es.references and not es.source:
        raise config_error(cfg, [*key, "references"], "reference files need their `source` file")
    if es.source and not es.references:
        raise config_error(cfg, [*key, "source"], "a benchmark's source file needs its `references` (one file per annotator)")
    if es.source:
        return load_benchmark(resolve_path(es.source), [resolve_path(r) for r in es.references])
    path = resolve_path(es.path) if es.path else default
    if path is None:
        raise config_error(cfg, [*key, "path"], "an eval set needs its `path` (or `source` + `references`)")
    return load_examples(path, columns={**columns, **(es.fields or {})}, what="eval set")


def check_templates(cfg: Config, task: Task, seeds: Examples) -> None:
    """Every prompt the run will render, rendered once against a seed, and the task's JSON schema checked,
    before anything is spent: a syntax error, an undefined variable, a missing template, an empty
    topics.txt or an invalid schema is one line naming the file (and line)."""
    import jinja2
    import jsonschema

    folder, seed = task.folder, seeds[0]
    if task.spec.json_schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(task.spec.json_schema)
        except jsonschema.SchemaError as e:
            raise DataError(f"{folder / 'task.yaml'}: field 'schema': not a valid JSON schema: {e.message[:120]}") from None
    topics = folder / "topics.txt"
    if topics.exists() and not task.topics:
        raise DataError(f"{topics}: no topics (one a line), or delete the file")
    renders = [lambda: task.student_messages(seed["input"]), lambda: task.teacher_messages(seed["input"], [seed])]
    if (folder / "new_inputs.j2").exists() or task.programmatic_inputs(cfg.seed, 1, set()) is None:
        renders.append(lambda: task.new_inputs_messages([seed], task.topics[0], cfg.generation.inputs_per_request))
    if any(name == "judge" for name, _ in cfg.filter_specs()) or (folder / "judge.j2").exists():
        renders.append(lambda: task.judge_messages(seed["input"], str(seed["output"])))
    if cfg.eval.judge.enabled or (folder / "pairwise.j2").exists():
        renders.append(lambda: task.pairwise_messages(seed["input"], str(seed["output"]), seed["input"]))
    for render in renders:
        try:
            render()
        except jinja2.TemplateNotFound as e:
            raise DataError(f"{folder / e.name}: template not found") from None
        except jinja2.TemplateSyntaxError as e:
            raise DataError(f"{folder / (e.name or '?')}:{e.lineno}: template syntax: {e.message}") from None
        except jinja2.UndefinedError as e:
            raise DataError(f"{_template_place(e, folder)}: {e.message} (the variables: input, examples, topic, n, "
                            "labels, description, schema; judge.j2 also output and part; pairwise.j2 a, b and part)") from None


def _template_place(e: Exception, folder: Path) -> str:
    """file:line of the template frame an error was raised in (jinja keeps them in the traceback)."""
    import traceback

    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename.endswith(".j2")]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(folder)


def check_answers(task: Task, rows: Examples, column) -> None:
    """Seed and eval answers a classification or extraction task can hold: a label of `labels`, an
    object the schema accepts (a seed outside them would be shown to the teacher as an example, an
    eval row scored against an answer no model may give)."""
    if not isinstance(task, (ClassificationTask, ExtractionTask)):
        return
    name = column[0] if isinstance(column, list) else column
    for r in rows:
        for ref in references(r):
            text = ref if isinstance(ref, str) else json.dumps(ref)
            problem = task.format_problem(Row(id=r["id"], input=r["input"], output=text))
            if problem:
                labels = f" ({', '.join(task.labels)})" if isinstance(task, ClassificationTask) else ""
                raise DataError(f"{rows.where(r['id'])}: field '{name}': {problem}{labels}: {text[:60]!r}")


def check_published(cfg: Config) -> None:
    """Every published result names an eval set of the run and a metric of the task."""
    names = [cfg.eval.name, *cfg.eval.sets]
    if len(set(names)) < len(names):
        raise config_error(cfg, ["eval", "sets"], f"'{cfg.eval.name}' names the headline eval set (eval.name) already")
    for p in cfg.eval.published:
        if p.set not in names:
            raise config_error(cfg, ["eval", "published"], f"{p.system}: set '{p.set}' is not an eval set of this run "
                               f"(known: {', '.join(names)})")


def check_prices(cfg: Config) -> None:
    """Every model the run prices has a price: a hosted teacher its token prices, every machine its hourly one."""
    t = cfg.teacher
    if t.hosted and t.model not in cfg.pricing.models:
        raise config_error(cfg, ["pricing", "models"], f"no price for the hosted teacher '{t.model}' (add {t.model}: "
                           "{input_per_1m: ..., output_per_1m: ..., source: ..., as_of: ...})")
    for keys, hw in [(["teacher", "hardware"], None if t.hosted else t.hardware), (["student", "hardware"], cfg.student.hardware),
                     *((["students", "hardware"], s.hardware) for s in cfg.students)]:
        if hw is not None and hw not in cfg.pricing.hardware:
            raise config_error(cfg, keys, f"'{hw}' has no price in pricing.hardware "
                               f"(known: {', '.join(sorted(cfg.pricing.hardware))})")


def check_ladder(cfg: Config) -> None:
    """A logit-level candidate learns from the teacher, its stored logprobs, or a student trained
    before it; a candidate starts from the base or from a student trained before it."""
    earlier: list[str] = []
    depth: dict[str | None, int | None] = {}  # the layers each candidate has, where known
    for name, s, t in cfg.student_candidates():
        where = ["students", str(len(earlier))] if name else ["training"]
        have = depth.get(s.init_from) if s.init_from else _base_layers(s)
        if s.keep_layers and have and s.keep_layers >= have:
            raise config_error(cfg, [*(where if name else ["student"]), "keep_layers"],
                               f"{s.keep_layers} is not fewer than the {have} layers it would be cut from")
        depth[name] = s.keep_layers or have
        if t.method != "sft" and t.kd_teacher not in ("teacher", "logprobs", *earlier):
            raise config_error(cfg, [*where, "kd_teacher"], f"'{t.kd_teacher}' is neither 'teacher', 'logprobs' nor a "
                               "student listed before this one in `students` (it must be trained first to teach)")
        if s.init_from is not None and s.init_from not in earlier:
            raise config_error(cfg, [*where, "init_from"], f"'{s.init_from}' is not a student listed before this one "
                               "in `students` (it must be trained first)")
        earlier.append(name)


def _base_layers(student) -> int | None:
    from distill.models.load import student_layers

    try:
        return student_layers(student)
    except (OSError, ValueError):
        return None  # an unreadable base is the memory check's and the trainer's to name


def check_cascade(cfg: Config) -> None:
    """The eval engine must be here; the cascade needs both its models evaluated, and one student to put first."""
    c = cfg.eval.cascade
    if cfg.eval.engine == "llama-server":
        from distill.teacher.gguf_server import llama_server_binary

        if llama_server_binary() is None:
            raise config_error(cfg, ["eval", "engine"], "llama-server not found (build it: python -m "
                               "distill.teacher.build_server; or eval.engine: transformers)")
    if not c.enabled:
        return
    if not {"teacher", "student"} <= set(cfg.eval.models):
        raise config_error(cfg, ["eval", "models"], "eval.cascade needs both 'teacher' and 'student' evaluated")
    names = [n for n, _, _ in cfg.student_candidates()]
    if c.student not in names and not (c.student is None and names == [None]):
        raise config_error(cfg, ["eval", "cascade", "student"], f"{c.student!r} is not a student of this config "
                           f"(students: {', '.join(str(n) for n in names)})")


def check_judge(cfg: Config) -> None:
    """eval.judge compares with the teacher's answers only when the teacher is evaluated, and judges only
    models the evaluation asks."""
    j = cfg.eval.judge
    if not j.enabled:
        return
    if j.against == "teacher" and "teacher" not in cfg.eval.models:
        raise config_error(cfg, ["eval", "models"], "no 'teacher', but eval.judge compares with the teacher's answers: "
                           "evaluate the teacher too, or set eval.judge.against: reference")
    known = [k for k in cfg.eval.models if k != "student"] + ["student" if n is None else f"student:{n}"
                                                              for n, _, _ in cfg.student_candidates()]
    if j.models is not None and (unknown := [k for k in j.models if k not in known]):
        raise config_error(cfg, ["eval", "judge", "models"], f"{unknown[0]!r} is not evaluated (the models: "
                           f"{', '.join(known)})")
    hosted = cfg.teacher.hosted if j.hosted is None else j.hosted
    model, hardware = j.model or cfg.teacher.model, j.hardware or cfg.teacher.hardware
    if hosted and model not in cfg.pricing.models:
        raise config_error(cfg, ["eval", "judge", "model"], f"no price for the hosted judge '{model}' (add it under "
                           "pricing.models, or set eval.judge.hosted: false)")
    if not hosted and hardware not in cfg.pricing.hardware:
        raise config_error(cfg, ["eval", "judge", "hardware"], f"'{hardware}' is not in pricing.hardware "
                           f"(known: {', '.join(cfg.pricing.hardware)})")


def import_plugins(cfg: Config) -> None:
    """Modules named under `plugins:` (they register filters or tasks), importable from the config's folder."""
    folder = cfg.plugin_dir or (str(Path(cfg._source).resolve().parent) if cfg._source != "config" else None)
    for i, mod in enumerate(cfg.plugins):
        added = folder is not None and folder not in sys.path
        if added:
            sys.path.append(folder)
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise config_error(cfg, ["plugins"], f"plugin '{mod}' cannot be imported ({e})") from None
        except Exception as e:  # noqa: BLE001 - the plugin's own code failed; name it, not our traceback
            import traceback

            where = traceback.extract_tb(e.__traceback__)[-1]
            raise config_error(cfg, ["plugins"], f"plugin '{mod}' raised {type(e).__name__}: {e} "
                                                 f"({where.filename}:{where.lineno})") from None


def check_filters(cfg: Config) -> None:
    for spec in cfg.filters:
        name, params = (spec, {}) if isinstance(spec, str) else (spec.name, dict(spec.model_extra or {}))
        try:
            check_filter(name, params)
        except UnknownFilter as e:
            raise config_error(cfg, ["filters"], str(e)) from None


def data_paths(cfg: Config, task: Task) -> tuple[Path, Path]:
    """The seed and eval files: the config's when it names them, else the task folder's own."""
    out = []
    eval_key = ["eval", "source"] if cfg.eval.source else ["eval", "path"]
    for given, which, key in ((cfg.seeds_path, "seeds", ["seeds_path"]), (cfg.eval.source or cfg.eval.path, "eval", eval_key)):
        path = resolve_path(given) if given else task.data_path(which)
        if path is None:
            raise config_error(cfg, key, f"task '{task.name}' has no {which} file of its own; name one here")
        out.append(path)
    return out[0], out[1]


def check_no_overlap(seeds: Examples, evals: Examples) -> None:
    """The eval set must be held out: no eval input, nor any of a row's several references, may also be a
    seed's input or output."""
    seen = {}
    for s in seeds:
        for f in ("input", "output"):
            seen.setdefault(dedup_key(s[f]), s["id"])
    for e in evals:
        several = references(e) if len(references(e)) > 1 else []  # a benchmark's references are sentences too
        for field, text in [("input", e["input"]), *(("output", r) for r in several)]:
            if (sid := seen.get(dedup_key(text))) is not None and (field == "input" or dedup_key(text) != dedup_key(e["input"])):
                raise DataError(f"{evals.where(e['id'])}: field '{field}': eval row '{e['id']}' "
                                f"overlaps seed '{sid}' ({seeds.where(sid)}); the eval set must be held out")


def check_teacher(cfg: Config) -> None:
    """A local teacher's weights exist; a remote teacher answers, accepts the key and serves the model."""
    import httpx

    from distill.models.load import default_gguf

    t, ep = cfg.teacher, cfg.teacher.endpoint
    if t.adaptation.method == "lora" and t.backend == "openai_batch":
        raise ConfigError("teacher.adaptation: a LoRA-adapted teacher runs in-process; use backend openai "
                          "(served by transformers here) or vllm_offline (vLLM's LoRA support)")
    if t.adaptation.method == "lora" and t.adaptation.base and not (resolve_path(t.adaptation.base) / "config.json").exists():
        raise ConfigError(f"teacher.adaptation.base: {t.adaptation.base}: not a transformers model directory (no config.json)")
    if t.logprobs and (t.backend == "vllm_offline" or t.adaptation.method == "lora"):
        raise ConfigError("teacher.logprobs: kept only from OpenAI-protocol replies (backends openai, openai_batch); a "
                          "teacher run in-process has its weights here: use training.kd_teacher: teacher instead")
    if t.backend == "vllm_offline":
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("teacher.backend: vllm_offline needs vLLM in this environment (pip install '.[vllm]')")
        return
    if ep.launch_local and t.backend != "openai_batch":
        from distill.teacher.gguf_server import engine_of, llama_server_binary

        engine = engine_of(ep.local)
        if engine == "llama-server" and llama_server_binary() is None:
            where = os.environ.get("DISTILL_LLAMA_SERVER") or "this environment's bin/ or the PATH"
            raise ConfigError(f"teacher.endpoint.local.engine: llama-server not found in {where} (build it: python -m "
                              "distill.teacher.build_server; or set teacher.endpoint.local.engine: llama-cpp-python)")
        if engine == "llama-cpp-python" and importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError("teacher.endpoint.launch_local: the local teacher needs llama-cpp-python: "
                              "pip install 'distill[local]' (or set teacher.endpoint.base_url)")
        try:
            gguf = resolve_path(ep.local.gguf) if ep.local.gguf else default_gguf()
        except FileNotFoundError as e:
            raise ConfigError(f"teacher.endpoint.local.gguf: {e}") from None
        if not gguf.exists():
            raise ConfigError(f"teacher.endpoint.local.gguf: {gguf}: file not found")
        return
    if not ep.base_url:
        raise ConfigError("teacher.endpoint.base_url: required when teacher.endpoint.launch_local is false")
    key = cfg.api_key()
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = scrub(ep.base_url)  # printed without user:pass@
    try:
        r = httpx.get(ep.base_url.rstrip("/") + "/models", headers=headers, timeout=10)
    except httpx.HTTPError as e:
        raise TeacherError(f"teacher.endpoint.base_url {url}: unreachable ({type(e).__name__}: {scrub(str(e), key)})") from None
    if r.status_code in (401, 403):
        raise TeacherError(f"teacher.endpoint.api_key: rejected by {url} (HTTP {r.status_code}); "
                           f"set ${ep.api_key_env}")
    if r.status_code != 200:
        return  # some servers do not list models; the first request will tell
    try:
        served = [m["id"] for m in r.json().get("data", [])]
    except (ValueError, TypeError, KeyError):
        return
    if served and t.model not in served:
        raise TeacherError(f"teacher.model '{t.model}': not served by {url} "
                           f"(it serves: {', '.join(served[:10])}{', ...' if len(served) > 10 else ''})")


def check_student_fits(cfg: Config) -> None:
    """Refuse a student whose training would not fit in this machine's memory (GPU or RAM)."""
    from distill.models.load import student_parameters, training_bytes

    params = student_parameters(cfg.student)
    need = training_bytes(params, lora=cfg.training.lora)
    have, where = available_memory()
    if need > have:
        name = cfg.student.base or "the default SmolLM2-135M student"
        mode = "LoRA" if cfg.training.lora else "full fine-tuning"
        raise ConfigError(f"student.base: {name} has {params / 1e9:.2f}B parameters; {mode} needs about "
                          f"{need / 2**30:.1f} GiB but {where} has {have / 2**30:.1f} GiB available "
                          f"(try training.lora=true or a smaller student)")


def available_memory() -> tuple[int, str]:
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "the GPU"
    import psutil

    return psutil.virtual_memory().available, "this machine"
