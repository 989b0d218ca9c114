"""A task is a folder: `task.yaml` (kind, labels or schema, fields, metrics) beside its Jinja templates and,
usually, its seed and eval files. No Python is needed; a Task subclass (`task.py` in the folder, or an
installed package's `distill.tasks` entry point) adds what YAML cannot say.

Templates a task folder holds:
  system.j2      the teacher's instructions (few-shot seeds follow as chat turns)
  user.j2        one input as a user turn; also the student's whole plain prompt
  new_inputs.j2  the Self-Instruct request: sampled seeds + a topic -> new inputs
  topics.txt     optional: one topic per line, sampled into new_inputs.j2 for diversity
  judge.j2       optional: the rubric of the `judge` filter

The built-in tasks (`grammar`, `sentiment`) are folders of this package, shipped as package data.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.resources
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from distill.tasks.base import Task
from distill.tasks.kinds import KINDS, ClassificationTask, ExtractionTask, GenerationTask
from distill.tasks.spec import TaskError, TaskSpec, read_spec
from distill.text import raised_at

ENTRY_POINTS = "distill.tasks"
_TASKS: dict[str, type[Task]] = {}

__all__ = ["ClassificationTask", "ExtractionTask", "GenerationTask", "Task", "TaskError", "TaskSpec", "get_task",
           "known_tasks", "load_folder", "load_task", "register_task"]


def register_task(name: str):
    """Register a Task subclass under a name a config can use (`task: name`)."""
    def deco(cls):
        cls.name = name
        _TASKS[name] = cls
        return cls

    return deco


def _builtin_dir() -> Path:
    return Path(str(importlib.resources.files("distill.tasks")))


def known_tasks() -> dict[str, str]:
    """name -> where it comes from, for `distill tasks` and error messages."""
    out = {p.parent.name: "built in" for p in sorted(_builtin_dir().glob("*/task.yaml"))}
    out.update({n: f"registered ({c.__module__})" for n, c in _TASKS.items()})
    out.update({ep.name: f"entry point ({ep.value})" for ep in entry_points(group=ENTRY_POINTS)})
    return out


def is_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.startswith((".", "~"))


def load_task(ref: str) -> Task:
    """A task by folder path, or by name: registered from Python, built in, or an installed package's
    `distill.tasks` entry point (a Task subclass or a package whose folder holds task.yaml)."""
    if is_path(ref):
        return load_folder(Path(ref).expanduser())
    if ref in _TASKS:
        return _TASKS[ref]()
    if (_builtin_dir() / ref / "task.yaml").exists():
        return load_folder(_builtin_dir() / ref)
    for ep in entry_points(group=ENTRY_POINTS, name=ref):
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, Task):
            return obj()
        folder = Path(str(importlib.resources.files(obj.__name__))) if hasattr(obj, "__path__") else None
        if folder is None:
            raise TaskError(f"entry point {ENTRY_POINTS}:{ref} = {ep.value}: neither a Task subclass nor a task package")
        return load_folder(folder)
    raise TaskError(f"unknown task '{ref}' (known: {', '.join(sorted(known_tasks()))}; "
                    f"a task folder is named by path, e.g. task: ./{ref})")


get_task = load_task


def load_folder(folder: Path) -> Task:
    if not (folder / "task.yaml").exists():
        raise TaskError(f"{folder}: not a task folder (no task.yaml)" if folder.is_dir() else f"{folder}: task folder not found")
    spec = read_spec(folder / "task.yaml")
    cls = _python_class(spec, folder) or KINDS[spec.kind]
    return cls(spec, folder)


def _python_class(spec: TaskSpec, folder: Path) -> type[Task] | None:
    ref = spec.python or ("task.py" if (folder / "task.py").exists() else None)
    if ref is None:
        return None
    where = f"{folder / 'task.yaml'}: field 'python'"
    mod_ref, _, cls_name = ref.partition(":")
    if mod_ref.endswith(".py"):
        path = (folder / mod_ref).resolve()
        # one module per file: a second load of the task (a Dask worker, the flow) reuses it
        name = f"distill_task_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        module = sys.modules.get(name)
        if module is None:
            if not path.exists():
                raise TaskError(f"{where}: {path} not found")
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise TaskError(f"{raised_at(e, str(path))}: {type(e).__name__}: {e} (while importing the task's code)") from None
    else:
        try:
            module = importlib.import_module(mod_ref)
        except ImportError as e:
            raise TaskError(f"{where}: cannot import '{mod_ref}' ({e})") from None
        except Exception as e:
            raise TaskError(f"{where}: importing '{mod_ref}' raised {type(e).__name__}: {e}") from None
    if cls_name:
        cls = getattr(module, cls_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TaskError(f"{where}: '{ref}' is not a Task subclass")
        return cls
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Task) and v.__module__ == module.__name__]
    if len(found) != 1:
        raise TaskError(f"{where}: {mod_ref} defines {len(found)} Task subclasses; name one as {mod_ref}:ClassName")
    return found[0]
