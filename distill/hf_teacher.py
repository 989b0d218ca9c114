"""An in-process transformers teacher (the LoRA-adapted open teacher on CPU): same request store,
record schema and usage accounting as the server backends. Greedy requests run in batches; sampled
ones one by one, seeded by the request's seed so a re-run (or a cache miss) samples the same."""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

from distill.config import Config
from distill.teacher import Budget, Request, RequestStore, Usage, estimate_tokens, failed_record, reply_record

SCHEME = "transformers://"
_MODELS: dict[str, tuple] = {}


def _model(path: str):
    from distill.models import load_model

    if path not in _MODELS:
        _MODELS.clear()  # one teacher in memory at a time
        _MODELS[path] = load_model(Path(path))
    return _MODELS[path]


def _generate(model, tok, msgs: list[list[dict]], max_tokens: int, temperature: float, seed: int | None):
    import torch

    tok.padding_side = "left"
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    kw = {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(seed or 0)
        kw = {"do_sample": True, "temperature": temperature, "top_k": 0}
    with torch.inference_mode():
        gen = model.generate(**enc, max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, **kw)
    out = []
    for j, ids in enumerate(gen[:, enc["input_ids"].shape[1]:]):
        ids = ids[ids != tok.pad_token_id]
        stopped = bool((ids == tok.eos_token_id).any()) or len(ids) < max_tokens
        out.append((tok.decode(ids, skip_special_tokens=True).strip(), "stop" if stopped else "length",
                    int(enc["attention_mask"][j].sum()), len(ids)))
    return out


def run_transformers(cfg: Config, base_url: str, store: RequestStore | None, reqs: list[Request],
                     on_done: Callable[[], None] | None = None, budget: Budget | None = None,
                     batch_size: int = 16) -> tuple[list[dict], Usage]:
    model, tok = _model(base_url[len(SCHEME):])
    usage = Usage()
    results: dict[str, dict] = {}
    groups: dict[tuple, list[Request]] = defaultdict(list)
    for r in reqs:
        if r.key in results:
            continue
        if store is not None and (rec := store.get(r.key)) is not None:
            usage.cache_hits += 1
            results[r.key] = rec
            if on_done:
                on_done()
            continue
        p = dict(r.params)
        if budget is not None and not budget.admit(estimate_tokens(r.message_dicts()), p.get("max_tokens", 256), 1.0):
            usage.skipped += 1
            results[r.key] = failed_record(r, f"not sent: {budget.exhausted}", skipped=True)
            if on_done:
                on_done()
            continue
        results[r.key] = {}  # placeholder: queued
        temp = p.get("temperature", 1.0)
        # greedy requests batch together; a sampled one runs alone under its own seed
        groups[(p.get("max_tokens", 256), temp, p.get("seed") if temp > 0 else None, r.key if temp > 0 else "")].append(r)
    for (max_tokens, temp, seed, _), group in groups.items():
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            t0 = time.perf_counter()
            outs = _generate(model, tok, [r.message_dicts() for r in chunk], max_tokens, temp, seed)
            dt = time.perf_counter() - t0
            usage.requests_sent += len(chunk)
            usage.request_seconds += dt
            for r, (text, finish, pt, ct) in zip(chunk, outs):
                rec = reply_record(r, text, finish, pt, ct, dt, engine="transformers")
                usage.prompt_tokens += pt
                usage.completion_tokens += ct
                if budget is not None:
                    budget.settle(rec["usage"])
                if store is not None:
                    store.put(rec)
                results[r.key] = rec
                if on_done:
                    on_done()
    return [results[r.key] for r in reqs], usage
