"""`distill init NAME --kind KIND`: a task folder and a config beside it, so the first run is one edit away.

The starters (`starters/<kind>/`) are small but real tasks: a few seeds and eval rows that run end to
end against the offline teacher, meant to be replaced by the user's own.
"""
from __future__ import annotations

import importlib.resources
import re
import shutil
from pathlib import Path

import jinja2

from distill.io import atomic_path, write_text_atomic
from distill.tasks.spec import TaskError

STARTERS = ("classification", "extraction", "generation")
_PER_KIND = {
    "classification": {"max_tokens": 8, "max_length": 96, "decontaminate_fields": "[input]",
                       "format_note": "drops answers that are not one of the labels"},
    "extraction": {"max_tokens": 64, "max_length": 192, "decontaminate_fields": "[input]",
                   "format_note": "drops answers that are not JSON satisfying the schema"},
    "generation": {"max_tokens": 48, "max_length": 128, "decontaminate_fields": "[input, output]",
                   "format_note": "drops empty answers and answers over answer_max_words"},
}


def new_task(name: str, kind: str, where: Path) -> tuple[Path, Path]:
    """Write where/NAME/ (task.yaml, templates, seeds, eval) and where/NAME.yaml; refuse to overwrite."""
    if kind not in STARTERS:
        raise TaskError(f"--kind {kind}: expected one of {', '.join(STARTERS)}")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise TaskError(f"task name '{name}': use letters, digits, '-' and '_' (it names a folder and the config)")
    folder, config = where / name, where / f"{name}.yaml"
    for p in (folder, config):
        if p.exists():
            raise TaskError(f"{p}: already exists; choose another name or remove it")
    starters = Path(str(importlib.resources.files("distill.tasks"))) / "starters"
    text = jinja2.Template((starters / "config.yaml.j2").read_text(), keep_trailing_newline=True).render(
        name=name, kind=kind, config=config.name, **_PER_KIND[kind])
    with atomic_path(folder, folder=True) as tmp:  # the folder and the config each appear whole or not at all
        shutil.copytree(starters / kind, tmp, dirs_exist_ok=True)
        spec = tmp / "task.yaml"
        spec.write_text(spec.read_text().replace("{{config}}", config.name))
    write_text_atomic(config, text)
    return folder, config
