"""An in-process transformers teacher (the LoRA-adapted open teacher on CPU): same request store,
record schema and usage accounting as the server backends. Greedy requests run in batches; sampled
ones one by one, seeded by the request's seed so a re-run (or a cache miss) samples the same."""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from distill.models.load import load_model
from distill.teacher.cached import Session
from distill.teacher.request import Request, reply_record

_MODELS: dict[str, tuple] = {}


def _model(path: str):
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


@dataclass
class TransformersBackend:
    model_dir: str
    batch_size: int = 16
    engine: str = "transformers in-process"

    def send(self, reqs: list[Request], session: Session) -> None:
        groups: dict[tuple, list[Request]] = defaultdict(list)
        for r in reqs:
            if not session.admit(r):
                continue
            p = dict(r.params)
            temp = p.get("temperature", 1.0)
            # greedy requests batch together; a sampled one runs alone under its own seed
            groups[(r.max_tokens, temp, p.get("seed") if temp > 0 else None, r.key if temp > 0 else "")].append(r)
        if not groups:
            return
        model, tok = _model(self.model_dir)
        for (max_tokens, temp, seed, _), group in groups.items():
            for i in range(0, len(group), self.batch_size):
                chunk = group[i:i + self.batch_size]
                t0 = time.perf_counter()
                outs = _generate(model, tok, [r.message_dicts() for r in chunk], max_tokens, temp, seed)
                dt = time.perf_counter() - t0
                session.usage.requests_sent += len(chunk)
                session.usage.request_seconds += dt
                for r, (text, finish, pt, ct) in zip(chunk, outs):
                    session.finish(r, reply_record(r, text, finish, pt, ct, dt, engine="transformers"))
