"""Which models the evaluation asks: the teacher, the base student under the prompts of the progression
before fine-tuning (instructions, the teacher's k shots, many shots, retrieved shots), the teacher under
the last two as an option, and every distilled student, each with its prompt."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from distill.config import resolve_path
from distill.models.load import base_student_dir, load_tokenizer
from distill.stages import gguf_eval
from distill.stages.context import RunContext
from distill.stages.prompt_examples import Retriever, example_pool, fitting, kept_rows, mean_pooled, varied

Shots = Callable[[str], list[dict]]  # the examples a prompt shows for one input

BASELINES = {  # key -> (name suffix, role, prompt description); {k}, {m}, {r}: the shot counts used
    "base_student": ("(base)", "base student", "plain prompt, zero-shot"),
    "base_zero_shot": ("(base, instructions)", "prompted base student", "the teacher's system prompt, zero-shot"),
    "base_few_shot": ("(base, {k}-shot)", "prompted base student", "the teacher's {k}-shot prompt"),
    "base_many_shot": ("(base, {m}-shot)", "prompted base student", "{m} shots of the seeds and kept rows"),
    "base_retrieval": ("(base, {r} retrieved)", "prompted base student", "the {r} nearest seeds and kept rows ({how})"),
}
TEACHER_STEPS = {  # the same last two steps for the teacher: "prompt the big model better"
    "teacher_many_shot": ("({m}-shot)", "prompted teacher", "{m} shots of the seeds and kept rows"),
    "teacher_retrieval": ("({r} retrieved)", "prompted teacher", "the {r} nearest seeds and kept rows ({how})"),
}


def model_key(ladder_name: str | None) -> str:
    """A distilled student's key in eval results and the report: "student", or "student:<name>" in a ladder."""
    return "student" if ladder_name is None else f"student:{ladder_name}"


@dataclass
class InProcess:
    """A self-hosted model the harness runs: the base student under one of its prompts, or a distilled student."""

    key: str
    name: str
    path: Path
    role: str
    hardware: str
    prompt: str
    messages: Callable[[str], list[dict]]


@dataclass
class Progression:
    """The shots of the prompt-only steps, made once per evaluation: the pool (seeds and kept rows, no
    eval row), the many-shot prompt's examples, and the retriever."""

    ctx: RunContext

    @cached_property
    def pool(self) -> list[dict]:
        c = self.ctx
        rule = next((params for name, params in c.cfg.filter_specs() if name == "decontaminate"), None)
        return example_pool(c.task, list(c.seeds), kept_rows(c.dir.train), c.all_eval_rows, rule)

    @cached_property
    def many(self) -> list[dict]:
        """As many shots as asked that fit the context with the longest eval input and its answer."""
        c, p = self.ctx, self.ctx.cfg.eval.progression
        tok = load_tokenizer(base_student_dir(c.cfg.student), trust_remote_code=c.cfg.student.trust_remote_code)
        longest = max((r["input"] for r in c.all_eval_rows), key=len, default="")
        limit = context_limit(c, tok)

        def fits(shots: list[dict]) -> bool:
            ids = tok.apply_chat_template(c.task.teacher_messages(longest, shots), add_generation_prompt=True,
                                          tokenize=True, return_dict=False)
            return len(ids) + c.cfg.eval.max_new_tokens <= limit

        return fitting(varied(self.pool, f"{c.cfg.seed}:many-shot", c.task, c.prompt_shots), p.many_shot, fits)

    @cached_property
    def retrieve(self) -> Retriever:
        c, p = self.ctx, self.ctx.cfg.eval.progression
        embed = None
        if p.retriever == "embedding":
            where = resolve_path(p.embedding_model) if p.embedding_model else base_student_dir(c.cfg.student)
            embed = mean_pooled(where, c.cfg.student.trust_remote_code)
        return Retriever(self.pool, p.retrieval_k or c.cfg.teacher.adaptation.few_shot, embed)

    def shots(self, key: str) -> Shots:
        """The examples of one step (a key of BASELINES or TEACHER_STEPS but base_student)."""
        if key == "base_zero_shot":
            return lambda x: []
        if key == "base_few_shot":
            return lambda x: self.ctx.prompt_shots
        if key.endswith("many_shot"):
            return lambda x: self.many
        return self.retrieve

    def counts(self, key: str) -> dict:
        """The placeholders of a step's name and prompt description."""
        c = self.ctx
        k, how = len(c.prompt_shots), c.cfg.eval.progression.retriever.replace("tfidf", "TF-IDF")
        return {"k": k, "how": how, "m": len(self.many) if key.endswith("many_shot") else 0,
                "r": self.retrieve.k if key.endswith("retrieval") else 0}


def context_limit(ctx: RunContext, tok) -> int:
    """Tokens a prompt and its answer must fit: the config's, else the eval server's slot, else the model's own."""
    p, local = ctx.cfg.eval.progression, ctx.cfg.teacher.endpoint.local
    if p.context_tokens:
        return p.context_tokens
    own = min(tok.model_max_length, 1 << 20)
    return min(own, local.n_ctx) if gguf_eval.eval_engine(ctx.cfg) == gguf_eval.SERVER else own


def in_process_models(ctx: RunContext, steps: Progression) -> list[InProcess]:
    """The configured baselines, then every distilled student, the run's own and those made elsewhere (one
    never trained stops the stage here, before the teacher is asked)."""
    cfg, task, wanted = ctx.cfg, ctx.task, ctx.cfg.eval.models
    out = []
    if any(k in wanted for k in BASELINES):
        base = base_student_dir(cfg.student)
        for key, (suffix, role, prompt) in BASELINES.items():
            if key not in wanted:
                continue
            messages = task.student_messages if key == "base_student" else prompted(task, steps.shots(key))
            n = steps.counts(key) if key != "base_student" else {}
            out.append(InProcess(key, f"{base.name.split('.')[0]} {suffix.format(**n)}", base, role,
                                 cfg.student.hardware, prompt.format(**n), messages))
    if "student" in wanted:
        for name, student, _ in cfg.student_candidates():
            sdir = ctx.dir.student(name)
            if not (sdir / "config.json").exists():
                raise FileNotFoundError(f"{sdir}: no trained student (run `distill train` first)")
            out.append(InProcess(model_key(name), student.name, sdir, "distilled student", student.hardware,
                                 "plain prompt, zero-shot", task.student_messages))
    for name, sdir in ctx.also_students.items():
        if not (Path(sdir) / "config.json").exists():
            raise FileNotFoundError(f"{sdir}: no such student")
        out.append(InProcess(model_key(name), f"{cfg.student.name} ({name})", Path(sdir), "distilled student",
                             cfg.student.hardware, "plain prompt, zero-shot", task.student_messages))
    return out


def prompted(task, shots: Shots) -> Callable[[str], list[dict]]:
    """The teacher's prompt (system prompt and shots as chat turns) with the examples of one step."""
    return lambda x: task.teacher_messages(x, shots(x))
