"""The stages of the distillation path, one module each, each `run(ctx) -> stats` over the run
context (`context.py`, built once per run after `preflight.py`): generate (with `adapt.py` and
`shards.py`), filter (with `dataset.py`), train, evaluate, report."""
