"""Greedy batched generation with transformers: the in-process engine of the evaluation harness and of
the serving measurement."""
from __future__ import annotations

import time
from collections.abc import Callable


def engine_name(batch_size: int, dtype=None) -> str:
    import torch

    n, precision = torch.get_num_threads(), "bf16" if dtype == torch.bfloat16 else "fp32"
    return f"transformers (batch {batch_size}, {precision}, {n} thread{'s' if n != 1 else ''})"


def generate_batched(model, tok, messages: list[list[dict]], *, batch_size: int, max_new_tokens: int,
                     temperature: float = 0.0, seed: int | None = None,
                     on_batch: Callable[[int], None] | None = None, confidence: bool = False) -> list[dict]:
    """One answer per conversation: {"raw", "finish_reason", "error", "latency_s", "prompt_tokens",
    "completion_tokens"}, and with `confidence` the mean log-probability of the answer's tokens (end of
    turn included) as "confidence". Greedy unless temperature > 0 (then sampled under `seed`). Every
    request of a batch waits for the whole batch (that is its latency). The one batched loop of the
    evaluation, the serving measurement and the in-process teacher."""
    import torch

    tok.padding_side = "left"
    model.eval()
    sampling = {"do_sample": False}
    if temperature > 0:
        torch.manual_seed(seed or 0)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0}
    out = []
    with torch.inference_mode():
        for i in range(0, len(messages), batch_size):
            chunk = messages[i:i + batch_size]
            texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            t0 = time.perf_counter()
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, output_scores=confidence, return_dict_in_generate=True,
                                 **sampling)
            dt = time.perf_counter() - t0
            new = gen.sequences[:, enc["input_ids"].shape[1]:]
            logp = model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True) if confidence else None
            for j in range(len(chunk)):
                ids = new[j]
                chosen = ids[ids != tok.pad_token_id]
                stopped = bool((chosen == tok.eos_token_id).any()) or len(chosen) < max_new_tokens
                a = {"raw": tok.decode(ids, skip_special_tokens=True), "finish_reason": "stop" if stopped else "length",
                     "error": None, "latency_s": dt, "prompt_tokens": int(enc["attention_mask"][j].sum()),
                     "completion_tokens": len(chosen)}
                if logp is not None:
                    a["confidence"] = round(float(logp[j, :answer_length(ids, tok.eos_token_id)].mean()), 5)
                out.append(a)
            if on_batch:
                on_batch(len(chunk))
    return out


def answer_length(ids, eos_id: int) -> int:
    """Tokens the model chose: up to and including the first end of turn (later positions are padding)."""
    ends = (ids == eos_id).nonzero()
    return int(ends[0]) + 1 if len(ends) else len(ids)
