"""The filter registry: a filter is one function, registered by name, that returns a keep/drop
Verdict with a reason for each row; `run_filters` runs the configured ones in order."""
from __future__ import annotations

import inspect
import time
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable, Protocol

from distill.io import DataError
from distill.records import Message, Row
from distill.tasks import Task
from distill.text import raised_at


@dataclass(frozen=True)
class Verdict:
    kept: bool
    reason: str | None = None

    @classmethod
    def keep(cls) -> "Verdict":
        return _KEEP

    @classmethod
    def drop(cls, reason: str) -> "Verdict":
        return cls(False, reason)


_KEEP = Verdict(True)


class ModelAsker(Protocol):
    """What a filter may ask of the run's teacher: validated JSON replies, cached and costed like
    generation's (the filter stage provides it, starting the teacher on first use)."""

    def structured(self, messages: list[list[Message]], schema: dict, label: str, *, max_tokens: int = 16,
                   model: str | None = None) -> list[dict]:
        """One reply per conversation, in order: {"parsed": obj} when valid, else {"error", "raw"}."""


@dataclass
class FilterContext:
    task: Task
    seeds: list[dict]
    eval_rows: list[dict]
    teacher: ModelAsker | None = None  # None outside a filter stage


FilterFn = Callable[..., list[Verdict]]
_FILTERS: dict[str, FilterFn] = {}
_BEFORE_ANSWER: dict[str, Callable[[dict], bool]] = {}


class FilterFailed(DataError):
    """A plugin filter raised while filtering: named with the file and line, nothing written."""


class UnknownFilter(ValueError):
    pass


def register_filter(name: str, *, before_answer: bool | Callable[[dict], bool] = False) -> Callable[[FilterFn], FilterFn]:
    """Register `fn` under `name`. before_answer: whether its verdicts depend on nothing the teacher's
    answer brings (only rows' inputs, references and ids), given its YAML parameters; generation does
    not send the rows the leading such filters drop (`not_to_send`: the dedups on inputs)."""
    def deco(fn: FilterFn) -> FilterFn:
        _FILTERS[name] = fn
        _BEFORE_ANSWER[name] = before_answer if callable(before_answer) else (lambda params: before_answer)
        return fn

    return deco


def before_answer(specs: list[tuple[str, dict]]) -> int:
    """How many of the configured filters, from the first, can run before the teacher answers."""
    n = 0
    for name, params in specs:
        get_filter(name)
        if not _BEFORE_ANSWER.get(name, lambda p: False)(params):
            break
        n += 1
    return n


def not_to_send(specs: list[tuple[str, dict]], rows: list[Row], ctx: "FilterContext") -> set[str]:
    """The ids of the rows the leading filters that need no answer drop: generation never asks the
    teacher about them. The filter stage runs the same filters over the same rows again and records
    their verdicts; this only saves the requests."""
    k = before_answer(specs)
    if not k:
        return set()
    _, ledger, _ = run_filters(specs[:k], rows, ctx)
    return {e["id"] for e in ledger}


def _load_plugins() -> None:
    for ep in entry_points(group="distill.filters"):
        if ep.name not in _FILTERS:
            ep.load()


def get_filter(name: str) -> FilterFn:
    if name not in _FILTERS:
        _load_plugins()
    if name not in _FILTERS:
        raise UnknownFilter(f"unknown filter '{name}' (registered: {', '.join(sorted(_FILTERS))})")
    return _FILTERS[name]


def registered_filters() -> dict[str, FilterFn]:
    _load_plugins()
    return dict(_FILTERS)


def check_filter(name: str, params: dict) -> FilterFn:
    """The registered filter, after checking that it takes every given parameter."""
    fn = get_filter(name)
    sig = inspect.signature(fn)
    unknown = [p for p in params if p not in sig.parameters or p in ("rows", "ctx")]
    if unknown:
        raise UnknownFilter(f"filter '{name}' has no parameter '{unknown[0]}'")
    return fn


def apply_filter(name: str, params: dict, rows: list[Row], ctx: FilterContext) -> list[Verdict]:
    fn = check_filter(name, params)
    sig = inspect.signature(fn)
    kwargs = dict(params)
    if "ctx" in sig.parameters:
        kwargs["ctx"] = ctx
    try:
        verdicts = fn(rows, **kwargs)
    except Exception as e:
        if str(getattr(fn, "__module__", "")).startswith("distill."):
            raise  # the built-ins' own errors (a teacher that stopped answering) carry their message
        raise FilterFailed(f"filter '{name}' ({_where(e, fn)}) raised {type(e).__name__}: {e}") from None
    if len(verdicts) != len(rows):
        raise RuntimeError(f"filter '{name}' returned {len(verdicts)} verdicts for {len(rows)} rows")
    return verdicts


def _where(error: Exception, fn: FilterFn) -> str:
    code = getattr(fn, "__code__", None)  # a plain function; a callable object is named by its module
    return raised_at(error, code.co_filename, code.co_firstlineno) if code else str(getattr(fn, "__module__", fn))


def run_filters(specs: list[tuple[str, dict]], rows: list[Row], ctx: FilterContext):
    """Run the filter stages in order; each sees only what earlier ones kept.

    Returns (kept rows, ledger of {id, stage, reason}, per-stage stats).
    """
    ledger, stages = [], []
    for name, params in specs:
        t0 = time.perf_counter()
        verdicts = apply_filter(name, params, rows, ctx)
        kept = [r for r, v in zip(rows, verdicts) if v.kept]
        reasons = Counter()
        for r, v in zip(rows, verdicts):
            if not v.kept:
                ledger.append({"id": r.id, "stage": name, "reason": v.reason or "dropped"})
                reasons[reason_kind(v.reason)] += 1
        stages.append({"stage": name, "params": params, "in": len(rows), "kept": len(kept),
                       "dropped": len(rows) - len(kept), "seconds": round(time.perf_counter() - t0, 3),
                       "top_reasons": dict(reasons.most_common(5))})
        rows = kept
    return rows, ledger, stages


def reason_kind(reason: str | None) -> str:
    """Group reasons that differ only in ids or numbers ('near-duplicate of X')."""
    if not reason:
        return "dropped"
    return reason.split(" of ")[0].split(" (")[0].split(":")[0][:60]
