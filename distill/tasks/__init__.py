"""A task = a folder: Jinja templates beside a small definition of how prompts are built, how replies
are parsed, which rows are well-formed, and how predictions are scored. The built-in tasks are
packages here (`distill/tasks/grammar/`), their templates shipped as package data.

Templates a task folder holds:
  system.j2      the teacher's instructions (few-shot seeds follow as chat turns)
  user.j2        one input as a user turn; also the student's whole plain prompt
  new_inputs.j2  the Self-Instruct request: sampled seeds + a topic -> new inputs
  topics.txt     optional: one topic per line, sampled into new_inputs.j2 for diversity
"""
from __future__ import annotations

import importlib
import importlib.resources
import json
import random
import sys
from functools import cached_property
from pathlib import Path

import jinja2

from distill.records import Message, Row

BUILTIN = ("grammar", "sentiment")

_TASKS: dict[str, type["Task"]] = {}


def register_task(name: str):
    def deco(cls):
        cls.name = name
        _TASKS[name] = cls
        return cls

    return deco


def get_task(name: str) -> "Task":
    if name not in _TASKS and name in BUILTIN:
        importlib.import_module(f"distill.tasks.{name}")  # registers it
    if name not in _TASKS:
        for builtin in BUILTIN:
            importlib.import_module(f"distill.tasks.{builtin}")
        raise ValueError(f"unknown task '{name}' (known: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]()


class Task:
    name = "base"
    primary_metric = "exact_match"
    # A JSON schema for the teacher's answer (structured output), with the field holding the output;
    # None = free text parsed by parse_answer.
    answer_schema: dict | None = None
    answer_field: str = "answer"

    @cached_property
    def prompt_dir(self) -> Path:
        """The folder of the nearest class in the hierarchy whose module's folder holds system.j2, so a
        subclass defined elsewhere reuses its parent's templates."""
        for cls in type(self).__mro__:
            folder = _module_folder(cls.__module__)
            if folder is not None and (folder / "system.j2").exists():
                return folder
        raise ValueError(f"task '{self.name}': no folder with templates (system.j2) found")

    @cached_property
    def _env(self) -> jinja2.Environment:
        return jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.prompt_dir),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(self, template: str, **ctx) -> str:
        return self._env.get_template(template).render(**ctx).strip()

    @cached_property
    def topics(self) -> list[str]:
        p = self.prompt_dir / "topics.txt"
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
        """The judge's prompt for one row: the rubric (prompts/<task>/judge.j2) and the row."""
        if not (self.prompt_dir / "judge.j2").exists():
            raise ValueError(f"task '{self.name}' has no judge rubric ({self.prompt_dir / 'judge.j2'})")
        return [{"role": "system", "content": self.render("judge.j2", part="system", input=text, output=output)},
                {"role": "user", "content": self.render("judge.j2", part="user", input=text, output=output)}]

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

    def format_problem(self, row: Row) -> str | None:
        """Why a generated row is malformed for this task, or None when it is fine."""
        return None

    def metrics(self, predictions: list[str], references: list[str], sources: list[str]) -> dict[str, float]:
        raise NotImplementedError


def _module_folder(module: str) -> Path | None:
    """A package's own folder (its templates are package data), or a plain module's folder."""
    mod = sys.modules.get(module)
    if mod is None:
        return None
    if getattr(mod, "__path__", None):
        return Path(str(importlib.resources.files(module)))
    f = getattr(mod, "__file__", None)
    return Path(f).parent if f else None
