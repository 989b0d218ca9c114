"""The teacher: one object whatever the backend, opened for a run with `open_teacher`.

    request.py     Request, the stored reply record (Usage lives in distill.stats)
    store.py       the append-only request store
    cost.py        pricing and the budget
    cached.py      the one wrapper (store + budget + usage) every backend runs under
    structured.py  JSON-schema replies, validated and retried
    backends/      openai, openai_batch, vllm_offline, transformers
    gguf_server.py   a GGUF behind llama.cpp (llama-server or llama-cpp-python): the local teacher, the
                     evaluation's self-hosted models, `distill serve-model`
    build_server.py  builds llama-server from llama-cpp-python's sdist
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from distill.config import Config
from distill.rundir import RunDir
from distill.stats import Usage
from distill.teacher.cached import Backend, run_cached
from distill.teacher.cost import Budget, cost_of, make_budget, spent_so_far, teacher_cost
from distill.teacher.request import Request, TeacherError, TeacherFatal, estimate_tokens, failed_record, reply_record
from distill.teacher.store import RequestStore
from distill.teacher.structured import response_format, run_structured
from distill.text import scrub

__all__ = ["Teacher", "open_teacher", "Request", "RequestStore", "Usage", "Budget", "TeacherError", "TeacherFatal", "cost_of",
           "teacher_cost", "make_budget", "spent_so_far", "estimate_tokens", "reply_record", "failed_record", "response_format"]


@dataclass
class Teacher:
    """The run's teacher. Plain data (config + backend settings), so it travels to shard workers."""

    cfg: Config
    backend: Backend

    @property
    def engine(self) -> str:
        return self.backend.engine

    def ask(self, reqs: list[Request], store: RequestStore | None = None, budget: Budget | None = None,
            on_done: Callable[[], None] | None = None) -> tuple[list[dict], Usage]:
        """Replies for reqs in order: reused from the store, or sent once (within the budget) and stored."""
        return run_cached(self.backend, reqs, store, budget, on_done)

    def structured(self, reqs: list[Request], schema: dict, store: RequestStore | None = None,
                   budget: Budget | None = None, on_done: Callable[[], None] | None = None) -> tuple[list[dict], Usage]:
        """Replies validated against schema (see distill.teacher.structured)."""
        return run_structured(lambda rs: self.ask(rs, store, budget), reqs, schema,
                              self.cfg.teacher.structured_retries, on_done)

    @property
    def slots(self) -> int:
        """Requests a launched local server decodes together (1 for any other endpoint)."""
        return getattr(self.backend, "slots", None) or 1

    def realtime(self, concurrency: int) -> "Teacher":
        """The same teacher answering request by request with at most `concurrency` in flight: the
        evaluation measures latency that way (a Batch API teacher is asked through the real-time API)."""
        from distill.teacher.backends.openai import OpenAIBackend
        from distill.teacher.backends.openai_batch import BatchBackend

        b = self.backend
        if isinstance(b, BatchBackend):
            b = OpenAIBackend(self.cfg, b.base_url, engine=f"OpenAI protocol ({scrub(b.base_url)})")
        if isinstance(b, OpenAIBackend):
            b = replace(b, concurrency=concurrency)
        return replace(self, backend=b)


@contextmanager
def open_teacher(cfg: Config, run: RunDir | None = None) -> Iterator[Teacher]:
    """The configured teacher for the duration: a local server is started and always stopped; an
    in-process engine loads on first use; a remote endpoint is taken as it is."""
    t = cfg.teacher
    adapted = run is not None and t.adaptation.method == "lora"
    if t.backend == "vllm_offline":
        from distill.teacher.backends.vllm_offline import VllmOfflineBackend

        yield Teacher(cfg, VllmOfflineBackend(cfg, lora_path=str(run.teacher_adapter) if adapted else None))
    elif adapted:
        from distill.teacher.backends.transformers import TransformersBackend

        if not (run.teacher_merged / "config.json").exists():
            raise TeacherError(f"{run.teacher_merged}: the LoRA-adapted teacher is not trained yet (the adapt stage: "
                               "`distill generate` or `distill run` runs it first)")
        yield Teacher(cfg, TransformersBackend(str(run.teacher_merged), engine="transformers in-process (LoRA-adapted)"))
    elif t.backend == "openai_batch":
        from distill.teacher.backends.openai_batch import BatchBackend

        yield Teacher(cfg, BatchBackend(cfg, _remote_url(cfg)))
    elif t.endpoint.launch_local:
        from distill.teacher.backends.openai import OpenAIBackend
        from distill.teacher.gguf_server import local_server

        with local_server(t, run.teacher_server_log if run is not None else None) as srv:
            yield Teacher(cfg, OpenAIBackend(cfg, srv.base_url, engine=srv.label, slots=srv.slots))
    else:
        from distill.teacher.backends.openai import OpenAIBackend

        yield Teacher(cfg, OpenAIBackend(cfg, _remote_url(cfg), engine=f"OpenAI protocol ({scrub(t.endpoint.base_url)})"))


def _remote_url(cfg: Config) -> str:
    if not cfg.teacher.endpoint.base_url:
        raise TeacherError("teacher.endpoint.base_url is required when teacher.endpoint.launch_local is false")
    return cfg.teacher.endpoint.base_url
