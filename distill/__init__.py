"""distill: a seed set and a teacher LLM in, a small student model and a price-performance report out.

The public API for configs, tasks and filters; the rest is reached through `distill run` and the
stage modules (`distill.stages`). Names load on first use, so importing one submodule (as the vLLM
environment's `distill.config` does) pulls in nothing else.
"""
from importlib import import_module

_EXPORTS = {
    "Config": "distill.config", "ConfigError": "distill.config", "load_config": "distill.config",
    "FilterContext": "distill.filters", "Verdict": "distill.filters", "register_filter": "distill.filters",
    "Row": "distill.records",
    "Task": "distill.tasks", "get_task": "distill.tasks", "load_task": "distill.tasks", "register_task": "distill.tasks",
    "ClassificationTask": "distill.tasks", "ExtractionTask": "distill.tasks", "GenerationTask": "distill.tasks",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'distill' has no attribute '{name}'")
    return getattr(import_module(_EXPORTS[name]), name)
