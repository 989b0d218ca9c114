"""Every backend runs under the one cached wrapper (distill.teacher.cached): the same requests, the
same budget, give the same store records (keys and schema), the same usage and the same budget stop,
whatever carries the requests. Real llama.cpp server and real transformers; the fake OpenAI server
for the Batch API; a fake engine for vLLM (not installable here)."""
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from distill.config import load_config
from distill.io import read_jsonl
from distill.teacher import Budget, Request, RequestStore, Teacher

BACKENDS = ["openai_llama_cpp", "openai_batch", "vllm_offline", "transformers"]
RECORD_FIELDS = {"key", "model", "params", "messages", "text", "finish_reason", "usage", "latency_s", "error"}
# fields only some backends add, on top of the common record
EXTRA_FIELDS = {"openai_llama_cpp": set(), "openai_batch": {"batch_id"}, "vllm_offline": {"engine"},
                "transformers": {"engine"}}


class FakeVllm:
    """vllm.LLM's chat(): one output per conversation, in order, with token ids."""

    def chat(self, conversations, params, use_tqdm, lora_request):
        return [SimpleNamespace(prompt_token_ids=[0] * (7 + i), outputs=[SimpleNamespace(
            text=c[-1]["content"].upper(), token_ids=[1] * (2 + i), finish_reason="stop")])
            for i, c in enumerate(conversations)]


@contextmanager
def teacher_for(kind: str, model: str):
    if kind == "openai_llama_cpp":
        from distill.teacher.backends.openai import OpenAIBackend
        from distill.teacher.gguf_server import local_server

        cfg = load_config(None, [f"teacher.model={model}", "teacher.endpoint.max_concurrency=1"])
        with local_server(cfg.teacher) as srv:
            yield Teacher(cfg, OpenAIBackend(cfg, srv.base_url))
    elif kind == "openai_batch":
        from distill.teacher.backends.openai_batch import BatchBackend
        from distill.testing.fake_openai import FakeOpenAI

        with FakeOpenAI(models=[model]) as fake:
            cfg = load_config(None, [f"teacher.model={model}", "teacher.backend=openai_batch",
                                     "teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={fake.base_url}",
                                     "teacher.batch.poll_interval_s=0.05"])
            yield Teacher(cfg, BatchBackend(cfg, fake.base_url))
    elif kind == "vllm_offline":
        from distill.teacher.backends.vllm_offline import VllmOfflineBackend

        cfg = load_config(None, [f"teacher.model={model}", "teacher.backend=vllm_offline"])
        yield Teacher(cfg, VllmOfflineBackend(cfg, llm=FakeVllm(), to_params=dict))
    else:
        from distill.config import Student
        from distill.models.load import base_student_dir
        from distill.teacher.backends.transformers import TransformersBackend

        cfg = load_config(None, [f"teacher.model={model}"])
        yield Teacher(cfg, TransformersBackend(str(base_student_dir(Student())), batch_size=4))


@pytest.mark.slow
@pytest.mark.parametrize("kind", BACKENDS)
def test_every_backend_goes_through_the_one_cached_wrapper(kind, tmp_path):
    model = "SmolLM2-135M-Instruct"
    texts = ["She go to school.", "They was late.", "I has a cat.", "He like tea.", "We is here.", "It rain."]
    reqs = [Request.make(model, [{"role": "user", "content": f"Correct: {t}"}], temperature=0.0, max_tokens=8)
            for t in texts]
    reqs.insert(2, reqs[0])  # a repeat inside one call is sent once
    path = tmp_path / "requests.jsonl"
    with teacher_for(kind, model) as teacher:
        store = RequestStore(path)
        budget = Budget(max_requests=4, max_cost_usd=None, price=lambda pt, ct, s: 0.0)
        recs, usage = teacher.ask(reqs, store, budget)
        store.close()

        # budget: the first four distinct requests were admitted, the rest answered "not sent", unstored
        assert budget.exhausted == "teacher.budget.max_requests=4 reached" and budget.in_flight == 0
        assert [r["error"] is None for r in recs] == [True] * 5 + [False] * 2
        assert all(r["error"].startswith("not sent: teacher.budget.max_requests=4") and r.get("skipped") for r in recs[5:])
        assert recs[2] == recs[0]
        stored = read_jsonl(path)
        assert [r["key"] for r in stored] == [q.key for q in reqs[:2] + reqs[3:5]]
        for r in stored:
            assert set(r) - EXTRA_FIELDS[kind] == RECORD_FIELDS, sorted(r)
            assert r["error"] is None and r["usage"]["completion_tokens"] > 0 and r["model"] == model
            assert r["params"] == {"max_tokens": 8, "temperature": 0.0}
        # usage: what was sent, reused and skipped, and tokens that add up to the stored records
        assert (usage.requests_sent, usage.cache_hits, usage.skipped, usage.failed, usage.retries) == (4, 1, 2, 0, 0)
        assert usage.prompt_tokens == sum(r["usage"]["prompt_tokens"] for r in stored)
        assert usage.completion_tokens == sum(r["usage"]["completion_tokens"] for r in stored)
        assert budget.prompt_tokens == usage.prompt_tokens and budget.completion_tokens == usage.completion_tokens

        # a re-run with no budget sends only the two skipped requests and reuses the rest
        store = RequestStore(path)
        again, usage2 = teacher.ask(reqs, store)
        store.close()
    assert (usage2.requests_sent, usage2.cache_hits, usage2.skipped) == (2, 5, 0)
    assert [r["text"] for r in again[:5]] == [r["text"] for r in recs[:5]]
    assert len(read_jsonl(path)) == 6 and all(r["error"] is None for r in again)
