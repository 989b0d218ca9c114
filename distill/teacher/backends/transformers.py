"""An in-process transformers teacher (the LoRA-adapted open teacher on CPU): same request store,
record schema and usage accounting as the server backends. Greedy requests run in batches; sampled
ones one by one, seeded by the request's seed so a re-run (or a cache miss) samples the same."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from distill.models.infer import generate_batched
from distill.models.load import load_model
from distill.teacher.cached import Session
from distill.teacher.request import Request, reply_record

_MODELS: dict[str, tuple] = {}


def _model(path: str):
    if path not in _MODELS:
        _MODELS.clear()  # one teacher in memory at a time
        _MODELS[path] = load_model(Path(path))
    return _MODELS[path]


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
                outs = generate_batched(model, tok, [r.message_dicts() for r in chunk], batch_size=len(chunk),
                                        max_new_tokens=max_tokens, temperature=temp, seed=seed)
                dt = outs[0]["latency_s"]
                session.usage.requests_sent += len(chunk)
                session.usage.request_seconds += dt
                for r, a in zip(chunk, outs):
                    session.finish(r, reply_record(r, a["raw"].strip(), a["finish_reason"], a["prompt_tokens"],
                                                   a["completion_tokens"], dt, engine="transformers"))
