"""Greedy batched generation with transformers: the in-process engine of the evaluation harness and of
the serving measurement."""
from __future__ import annotations

import time
from collections.abc import Callable


def engine_name(batch_size: int, dtype=None) -> str:
    import torch

    n, precision = torch.get_num_threads(), "bf16" if dtype == torch.bfloat16 else "fp32"
    return f"transformers (batch {batch_size}, {precision}, {n} thread{'s' if n != 1 else ''})"


PREFIX_MIN_TOKENS = 32  # a shared prompt prefix at least this long is computed once and reused


def generate_batched(model, tok, messages: list[list[dict]], *, batch_size: int, max_new_tokens: int,
                     temperature: float = 0.0, seed: int | None = None,
                     on_batch: Callable[[int], None] | None = None, confidence: bool = False,
                     prefix_cache: dict | None = None) -> list[dict]:
    """One answer per conversation: {"raw", "finish_reason", "error", "latency_s", "prompt_tokens",
    "cached_tokens", "completion_tokens"}, and with `confidence` the mean log-probability of the
    answer's tokens (end of turn included) as "confidence". Greedy unless temperature > 0 (then sampled
    under `seed`). Every request of a batch waits for the whole batch (that is its latency). The one
    batched loop of the evaluation, the serving measurement and the in-process teacher.

    With `prefix_cache` (a dict kept by the caller) the prompt prefix every conversation shares (the
    system prompt and the shots), when at least PREFIX_MIN_TOKENS long, is computed once and its
    key/value cache reused by every batch, as a serving engine's prompt cache does."""
    import torch

    model.eval()
    sampling = {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(seed or 0)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0}
    ids = [tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True), add_special_tokens=False)
           ["input_ids"] for m in messages]
    prefix = shared_prefix(ids) if prefix_cache is not None else []
    out = []
    with torch.inference_mode():
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            enc = padded(chunk, len(prefix), tok.pad_token_id)
            past = prefix_kv(model, prefix, prefix_cache, len(chunk)) if prefix else None
            t0 = time.perf_counter()
            gen = model.generate(**enc, past_key_values=past, max_new_tokens=max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                 output_scores=confidence, return_dict_in_generate=True, **sampling)
            dt = time.perf_counter() - t0
            new = gen.sequences[:, enc["input_ids"].shape[1]:]
            logp = model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True) if confidence else None
            for j in range(len(chunk)):
                chosen = new[j][new[j] != tok.pad_token_id]
                stopped = bool((chosen == tok.eos_token_id).any()) or len(chosen) < max_new_tokens
                a = {"raw": tok.decode(new[j], skip_special_tokens=True), "finish_reason": "stop" if stopped else "length",
                     "error": None, "latency_s": dt, "prompt_tokens": len(chunk[j]), "cached_tokens": len(prefix),
                     "completion_tokens": len(chosen)}
                if logp is not None:
                    a["confidence"] = round(float(logp[j, :answer_length(new[j], tok.eos_token_id)].mean()), 5)
                out.append(a)
            if on_batch:
                on_batch(len(chunk))
    return out


def shared_prefix(ids: list[list[int]]) -> list[int]:
    """The token prefix every prompt shares (each keeps at least one token of its own), or [] when
    shorter than PREFIX_MIN_TOKENS."""
    if not ids:
        return []
    n = min(len(x) for x in ids) - 1
    first = ids[0]
    for x in ids[1:]:
        n = next((k for k in range(n) if x[k] != first[k]), n)
    return first[:n] if n >= PREFIX_MIN_TOKENS else []


def padded(chunk: list[list[int]], cached: int, pad_id: int) -> dict:
    """A batch's input ids and attention mask, left-padded; with a cached prefix of `cached` tokens the
    padding goes between the prefix and each prompt's own tokens, so the prefix sits at the same
    positions in every row (positions follow the attention mask, so each token keeps its own)."""
    import torch

    width = max(len(x) for x in chunk)
    rows, masks = [], []
    for x in chunk:
        gap = width - len(x)
        rows.append(x[:cached] + [pad_id] * gap + x[cached:])
        masks.append([1] * cached + [0] * gap + [1] * (len(x) - cached))
    return {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(masks)}


def prefix_kv(model, prefix: list[int], store: dict, batch: int):
    """A fresh copy of the prefix's key/value cache for a batch of `batch` rows (computed on first use)."""
    import copy

    import torch

    key = tuple(prefix)
    if key not in store:
        store[key] = model(input_ids=torch.tensor([prefix]), use_cache=True).past_key_values
    kv = copy.deepcopy(store[key])
    if batch > 1:
        kv.batch_repeat_interleave(batch)
    return kv


def answer_length(ids, eos_id: int) -> int:
    """Tokens the model chose: up to and including the first end of turn (later positions are padding)."""
    ends = (ids == eos_id).nonzero()
    return int(ends[0]) + 1 if len(ends) else len(ids)
