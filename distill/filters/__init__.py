"""Filters: plain functions over a batch of rows that say keep or drop, with a reason, for each row.

Add one by writing a function and naming it in the config:

    from distill.filters import register_filter, Verdict

    @register_filter("no_digits")
    def no_digits(rows, *, field="input"):
        return [Verdict.drop("has digits") if any(c.isdigit() for c in getattr(r, field))
                else Verdict.keep() for r in rows]

    # config.yaml
    filters:
      - {name: no_digits, field: output}

A filter that needs the task, the seeds or the eval set takes a `ctx: FilterContext` argument; one
that asks a model calls `ctx.teacher.structured(messages, schema, label)`. One whose verdicts need no
answer says so (`register_filter(name, before_answer=...)`, as the dedups on inputs do): generation
asks the registry which rows the leading such filters drop (`not_to_send`) and never sends them.
The module holding it is named under `plugins:` in the config (imported before the filters are
checked), or registered by an installed package through the `distill.filters` entry point group.
"""
from distill.filters import builtin  # noqa: F401  (registers the built-in filters)
from distill.filters.registry import (
                                      FilterContext,
                                      ModelAsker,
                                      UnknownFilter,
                                      Verdict,
                                      apply_filter,
                                      before_answer,
                                      check_filter,
                                      get_filter,
                                      not_to_send,
                                      reason_kind,
                                      register_filter,
                                      registered_filters,
                                      run_filters,
)
from distill.records import Row

__all__ = ["Row", "Verdict", "FilterContext", "ModelAsker", "register_filter", "get_filter", "registered_filters",
           "check_filter", "apply_filter", "run_filters", "before_answer", "not_to_send", "reason_kind", "UnknownFilter"]
