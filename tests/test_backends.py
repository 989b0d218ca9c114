"""The vllm_offline backend's mapping (request params -> SamplingParams, RequestOutput -> stored
record), tested without vLLM; and a run on a real GPU that skips cleanly where there is none."""
from types import SimpleNamespace

import pytest

from distill.config import load_config
from distill.teacher import Request, RequestStore, Teacher
from distill.teacher.backends.vllm_offline import VllmOfflineBackend, engine_kwargs, record_from_output, sampling_kwargs

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}


def test_sampling_params_follow_the_openai_request():
    msgs = [{"role": "user", "content": "hi"}]
    plain = Request.make("m", msgs, temperature=0.0, max_tokens=48)
    assert sampling_kwargs(plain) == {"temperature": 0.0, "max_tokens": 48}
    sampled = Request.make("m", msgs, temperature=0.7, max_tokens=10, seed=3, top_p=0.9, stop=["\n"])
    assert sampling_kwargs(sampled) == {"temperature": 0.7, "max_tokens": 10, "seed": 3, "top_p": 0.9, "stop": ["\n"]}
    js = Request.make("m", msgs, temperature=0.0, max_tokens=8, response_format={
        "type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA, "strict": True}})
    assert sampling_kwargs(js)["structured_outputs"] == {"json": SCHEMA}
    jo = Request.make("m", msgs, temperature=0.0, max_tokens=8, response_format={"type": "json_object", "schema": SCHEMA})
    assert sampling_kwargs(jo)["structured_outputs"] == {"json": SCHEMA}
    bare = Request.make("m", msgs, temperature=0.0, max_tokens=8, response_format={"type": "json_object"})
    assert sampling_kwargs(bare)["structured_outputs"] == {"json_object": True}


def test_engine_settings_come_from_the_config():
    cfg = load_config(None, ["teacher.backend=vllm_offline", "teacher.model=org/teacher-8b",
                             "teacher.offline.tensor_parallel_size=4", "teacher.offline.lora_path=/a",
                             "teacher.offline.max_model_len=4096"])
    kw = engine_kwargs(cfg)
    assert kw["model"] == "org/teacher-8b" and kw["tensor_parallel_size"] == 4 and kw["max_model_len"] == 4096
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 16 and "enforce_eager" not in kw


def _output(text, prompt_ids, token_ids, finish="stop"):
    return SimpleNamespace(prompt_token_ids=prompt_ids, outputs=[SimpleNamespace(text=text, token_ids=token_ids,
                                                                                 finish_reason=finish)])


def test_outputs_become_the_same_records_and_usage_as_the_server_path(tmp_path):
    msgs = [{"role": "user", "content": "Fix: she go."}]
    req = Request.make("m", msgs, temperature=0.0, max_tokens=48)
    rec = record_from_output(req, _output("She goes.", [1] * 17, [5, 6, 7]), 0.25)
    assert rec == {"key": req.key, "model": "m", "params": {"max_tokens": 48, "temperature": 0.0}, "messages": msgs,
                   "text": "She goes.", "finish_reason": "stop", "usage": {"prompt_tokens": 17, "completion_tokens": 3},
                   "latency_s": 0.25, "error": None, "engine": "vllm_offline"}

    class Engine:  # records what it is asked; vLLM's chat() returns one output per conversation, in order
        def __init__(self):
            self.calls = []

        def chat(self, conversations, params, use_tqdm, lora_request):
            self.calls.append(len(conversations))
            assert params == [{"temperature": 0.0, "max_tokens": 4}] * len(conversations)
            return [_output(c[-1]["content"].upper(), [0] * 10, [0] * (i + 1), "length" if i == 1 else "stop")
                    for i, c in enumerate(conversations)]

    cfg = load_config(None, ["teacher.backend=vllm_offline"])
    reqs = [Request.make("m", [{"role": "user", "content": f"s{i}"}], temperature=0.0, max_tokens=4) for i in range(3)]
    store = RequestStore(tmp_path / "requests.jsonl")
    engine = Engine()
    teacher = Teacher(cfg, VllmOfflineBackend(cfg, llm=engine, to_params=dict))
    recs, usage = teacher.ask(reqs + reqs[:1], store)  # a repeated request runs once
    assert [r["text"] for r in recs] == ["S0", "S1", "S2", "S0"] and recs[1]["finish_reason"] == "length"
    assert engine.calls == [3]
    assert (usage.requests_sent, usage.prompt_tokens, usage.completion_tokens) == (3, 30, 6)
    again, usage2 = teacher.ask(reqs, store)
    assert engine.calls == [3] and usage2.cache_hits == 3 and again == recs[:3]


def test_vllm_offline_on_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm", reason="vllm is an optional extra: pip install '.[vllm]'")
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    from distill.config import Student
    from distill.models.load import base_student_dir

    cfg = load_config(None, ["teacher.backend=vllm_offline", f"teacher.offline.model={base_student_dir(Student())}",
                             "teacher.offline.gpu_memory_utilization=0.3"])
    reqs = [Request.make(cfg.teacher.model, [{"role": "user", "content": "Fix the grammar: she go home."}],
                         temperature=0.0, max_tokens=16)]
    recs, usage = Teacher(cfg, VllmOfflineBackend(cfg)).run(reqs, RequestStore(tmp_path / "r.jsonl"))
    assert recs[0]["error"] is None and recs[0]["text"] and usage.completion_tokens > 0
