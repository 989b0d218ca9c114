"""The Task base class: how prompts are built from a task folder's templates, how replies are parsed,
which rows are well-formed, and how predictions are scored. Kinds that need no Python are in `kinds.py`;
a Task subclass adds what YAML cannot say (an error injector, inputs made by code)."""
from __future__ import annotations

import importlib.resources
import json
import random
import sys
from functools import cached_property
from pathlib import Path

import jinja2

from distill.records import Message, Row
from distill.tasks.spec import TaskError, TaskSpec, read_spec

DEFAULTS = Path(__file__).parent  # the package's default templates: judges/<kind>.j2


class Task:
    name = "base"
    primary_metric = "exact_match"
    # A JSON schema for the teacher's answer (structured output), with the field holding the output;
    # None = free text parsed by parse_answer.
    answer_schema: dict | None = None
    answer_field: str = "answer"

    def __init__(self, spec: TaskSpec | None = None, folder: Path | None = None):
        self.folder = folder or _class_folder(type(self))
        if spec is None:
            yaml_path = self.folder / "task.yaml"
            spec = read_spec(yaml_path) if yaml_path.exists() else TaskSpec()
        self.spec = spec
        if type(self).name in ("base", *KIND_NAMES):  # a registered subclass keeps its registered name
            self.name = spec.name or self.folder.name
        if spec.primary_metric:
            self.primary_metric = spec.primary_metric
        elif spec.kind == "rewrite" and type(self).primary_metric == "chrf":
            self.primary_metric = "gleu"  # the GEC GLEU: what rewriting benchmarks publish

    def files(self) -> list[Path]:
        """Every file the task is made of (templates, task.yaml, data, its Python): the cache fingerprint."""
        files = [p for p in self.folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
        for cls in type(self).__mro__:
            mod = sys.modules.get(cls.__module__)
            if mod is not None and getattr(mod, "__file__", None) and cls.__module__.split(".")[0] != "distill":
                files.append(Path(mod.__file__))
        if not (self.folder / "pairwise.j2").exists():
            files.append(DEFAULTS / self.pairwise_template)
        return sorted(set(files))

    @property
    def pairwise_template(self) -> str:
        """The pairwise judge's template: the folder's pairwise.j2, else the package's default for the kind."""
        return "pairwise.j2" if (self.folder / "pairwise.j2").exists() else f"judges/{self.spec.kind}.j2"

    def data_path(self, which: str) -> Path | None:
        """The task folder's own seed or eval file (task.yaml `seeds:` / `eval:`), when it has one."""
        name = self.spec.seeds if which == "seeds" else self.spec.eval
        return self.folder / name if name else None

    @cached_property
    def _env(self) -> jinja2.Environment:
        return jinja2.Environment(
            # the task folder's own templates first, then the package's defaults (judges/<kind>.j2)
            loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(self.folder), jinja2.FileSystemLoader(DEFAULTS)]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, template: str, **ctx) -> str:
        """A template of the folder, with task.yaml's labels, schema and description available to it."""
        spec = {"labels": self.spec.labels, "description": self.spec.description,
                "schema": json.dumps(self.spec.json_schema) if self.spec.json_schema else ""}
        return self._env.get_template(template).render(**{**spec, **ctx}).strip()

    @cached_property
    def topics(self) -> list[str]:
        p = self.folder / "topics.txt"
        return [t.strip() for t in p.read_text().splitlines() if t.strip()] if p.exists() else [""]

    # --- prompts -----------------------------------------------------------------------------
    def student_messages(self, text: str) -> list[Message]:
        """The student's plain prompt: the user turn only, no instructions, no examples.

        The empty system turn stops chat templates from inserting their default system prompt
        (about 20 tokens for SmolLM2), which would cost training and serving time on every request.
        """
        return [{"role": "system", "content": ""}, {"role": "user", "content": self.render("user.j2", input=text)}]

    def teacher_messages(self, text: str, shots: list[dict]) -> list[Message]:
        """The teacher adapted to the task by few-shot seeds, as alternating chat turns."""
        msgs = [{"role": "system", "content": self.render("system.j2")}]
        for s in shots:
            msgs.append({"role": "user", "content": self.render("user.j2", input=s["input"])})
            msgs.append({"role": "assistant", "content": s["output"]})
        msgs.append({"role": "user", "content": self.render("user.j2", input=text)})
        return msgs

    def judge_messages(self, text: str, output: str) -> list[Message]:
        """The judge's prompt for one row: the rubric (judge.j2 in the task folder) and the row."""
        if not (self.folder / "judge.j2").exists():
            raise ValueError(f"task '{self.name}' has no judge rubric ({self.folder / 'judge.j2'})")
        return [{"role": "system", "content": self.render("judge.j2", part="system", input=text, output=output)},
                {"role": "user", "content": self.render("judge.j2", part="user", input=text, output=output)}]

    def pairwise_messages(self, text: str, a: str, b: str) -> list[Message]:
        """The pairwise judge's prompt: which of answers A and B to the input is better (or a tie)."""
        parts = {part: self.render(self.pairwise_template, part=part, input=text, a=a, b=b) for part in ("system", "user")}
        return [{"role": "system", "content": parts["system"]}, {"role": "user", "content": parts["user"]}]

    def new_inputs_messages(self, examples: list[dict], topic: str, n: int) -> list[Message]:
        return [{"role": "user", "content": self.render("new_inputs.j2", examples=examples, topic=topic, n=n)}]

    # --- parsing and checks --------------------------------------------------------------------
    def parse_inputs(self, text: str) -> list[str]:
        """New inputs from a Self-Instruct reply."""
        raise NotImplementedError

    def parse_answer(self, text: str) -> str:
        """A model's reply -> the task output (used identically for every model in the harness)."""
        if self.answer_schema is not None:
            try:
                obj = json.loads(text)
            except ValueError:
                return text.strip()
            if isinstance(obj, dict) and isinstance(obj.get(self.answer_field), (str, int, float)):
                return str(obj[self.answer_field]).strip()
        return text.strip()

    def programmatic_inputs(self, seed: int, n: int, exclude: set[str]) -> list[dict] | None:
        """Optional: n inputs made by code, each with its known answer ({"input", "output", ...}),
        none of them in exclude (seed and eval inputs). Tasks that have them skip the teacher's
        Self-Instruct phase, and their rows carry the answer as the reference a checker compares with."""
        return None

    def inputs_like(self, examples: list[dict], seed: int | str, n: int, exclude: set[str]) -> list[dict] | None:
        """Optional, for a later generation round: n inputs made by code like the examples (rows the
        student got wrong: input, output), each with its known answer, none in exclude. Without it the
        round asks the teacher (Self-Instruct requests showing the examples)."""
        return None

    def check(self, row: Row) -> str | None:
        """Optional programmatic answer check: why the row's output is wrong, or None when it is right."""
        return None

    def corrupt(self, text: str, rng: random.Random) -> tuple[str, str] | None:
        """Optional error injector: a clean teacher-written text -> (input with an error, error type).

        Tasks that have one get inputs with a known reference answer (the clean text), so a filter
        can keep only teacher answers that restore it.
        """
        return None

    @property
    def has_injector(self) -> bool:
        return type(self).corrupt is not Task.corrupt

    @property
    def makes_inputs_like(self) -> bool:
        return type(self).inputs_like is not Task.inputs_like

    def format_problem(self, row: Row) -> str | None:
        """Why a generated row is malformed for this task, or None when it is fine."""
        return None

    def metric_names(self) -> list[str]:
        return self.spec.metrics or ["exact_match"]

    def baseline(self, sources: list[str], seeds: list[dict]) -> tuple[str, list[str]]:
        """The trivial answer every model must beat, named: for text, the input copied unchanged."""
        return "copy the input", list(sources)

    def metrics(self, predictions: list[str], references: list, sources: list[str]) -> dict[str, float]:
        """Every configured metric. A row's reference may be a list (several annotators): the built-in
        metrics use them all where their definition allows; the task's own metrics get the first."""
        from distill.tasks.metrics import METRICS, first_refs

        own = self.own_metrics()
        out = {}
        for name in self.metric_names():
            if name not in METRICS and name not in own:
                raise TaskError(f"{self.folder / 'task.yaml'}: field 'metrics': unknown metric '{name}' "
                                f"(known: {', '.join(sorted({**METRICS, **own}))})")
            out[name] = own[name](predictions, first_refs(references), sources) if name in own \
                else METRICS[name](predictions, references, sources)
        return out

    def own_metrics(self) -> dict:
        """Metrics only this task can compute (name -> f(predictions, references, sources))."""
        return {}

    def breakdown(self, predictions: list[str], references: list[str]) -> dict | None:
        """Optional per-class detail for the report (a confusion table for classification)."""
        return None


KIND_NAMES = ("classification", "extraction", "generation", "rewrite")


def _class_folder(cls: type) -> Path:
    """The folder of the nearest class in the hierarchy whose module's folder holds task.yaml or system.j2,
    so a subclass defined elsewhere reuses its parent's templates."""
    for c in cls.__mro__:
        folder = _module_folder(c.__module__)
        if folder is not None and ((folder / "task.yaml").exists() or (folder / "system.j2").exists()):
            return folder
    raise TaskError(f"task '{cls.name}': no folder with templates (task.yaml or system.j2) found")


def _module_folder(module: str) -> Path | None:
    """A package's own folder (its templates are package data), or a plain module's folder."""
    mod = sys.modules.get(module)
    if mod is None:
        return None
    if getattr(mod, "__path__", None):
        return Path(str(importlib.resources.files(module)))
    f = getattr(mod, "__file__", None)
    return Path(f).parent if f else None
