"""Opt-in (`make test-vllm`, i.e. `pytest -m vllm`): the generation stage against a real vLLM OpenAI
server on this CPU, and the in-process vllm_offline backend, both compared with llama.cpp on the same
requests. vLLM runs from its own venv (`make vllm-env`): it pins an older transformers."""
import json
import subprocess

import pytest

from distill.io import read_jsonl
from distill.stages import generate
from distill.stages.context import prepare_run
from distill.teacher import Request, Teacher
from distill.teacher.backends.openai import OpenAIBackend
from distill.teacher.gguf_server import free_port
from distill.testing.vllm_cpu import SERVED_NAME, model_dir, vllm_env, vllm_python, vllm_server
from tests.conftest import ROOT, opened

PY = vllm_python()
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(PY is None, reason="no vLLM venv: run `make vllm-env` "
                                                   "(or point DISTILL_VLLM_PYTHON at one)")]
SMALL = ["generation.input_requests=6", "generation.inputs_per_request=3", "teacher.max_tokens=40"]


@pytest.fixture(scope="module")
def vllm_url(tmp_path_factory):
    with vllm_server(PY, free_port(), tmp_path_factory.mktemp("vllm") / "server.log") as url:
        yield url


def _store(rd):
    return {r["key"]: r for r in read_jsonl(rd / "data" / "requests.jsonl")}


def test_generation_against_a_real_vllm_server(vllm_url, tmp_path):
    rd_v_ctx, cfg_v, rd_v = opened(prepare_run(None, tmp_path / "vllm", [
        *SMALL, "teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={vllm_url}",
        "teacher.endpoint.max_concurrency=8"], stages=("generate",)))
    stats_v = generate.run(rd_v_ctx)
    rd_l_ctx, cfg_l, rd_l = opened(prepare_run(None, tmp_path / "llama", SMALL, stages=("generate",)))
    stats_l = generate.run(rd_l_ctx)

    rows_v, rows_l = read_jsonl(rd_v / "data" / "generated.jsonl"), read_jsonl(rd_l / "data" / "generated.jsonl")
    assert stats_v["counts"]["teacher_rows_ok"] > 0
    assert {tuple(sorted(r)) for r in rows_v} == {tuple(sorted(r)) for r in rows_l}  # one row schema
    assert {tuple(sorted(r["meta"])) for r in rows_v if r["meta"]["source"] == "teacher"} == \
           {tuple(sorted(r["meta"])) for r in rows_l if r["meta"]["source"] == "teacher"}
    store_v, store_l = _store(rd_v), _store(rd_l)
    assert {tuple(sorted(r)) for r in store_v.values()} == {tuple(sorted(r)) for r in store_l.values()}
    for stats, store in ((stats_v, store_v), (stats_l, store_l)):
        t = stats["totals"]
        assert t["requests_sent"] == len(store) + t["retries"] + t["failed"]
        assert t["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in store.values())
        assert t["completion_tokens"] == sum(r["usage"]["completion_tokens"] for r in store.values())
    # the Self-Instruct requests are the same requests on both servers: same keys, and the same prompt
    # tokens (same tokenizer and chat template). Their replies are sampled (temperature 0.9), so differ.
    shared = set(store_v) & set(store_l)
    assert len(shared) >= 6
    assert [store_v[k]["usage"]["prompt_tokens"] for k in shared] == [store_l[k]["usage"]["prompt_tokens"] for k in shared]


OFFLINE = r"""
import json, sys
from distill.config import load_config
from distill.teacher import Request, Teacher
from distill.teacher.backends.vllm_offline import VllmOfflineBackend
cfg = load_config(None, ["filters=[]", "teacher.backend=vllm_offline", "teacher.model=%(name)s",
                         "teacher.offline.model=%(model)s", "teacher.offline.dtype=float32",
                         "teacher.offline.enforce_eager=true", "teacher.offline.max_model_len=2048"])
reqs = [Request.make(cfg.teacher.model, m, temperature=0.0, max_tokens=40) for m in json.load(sys.stdin)]
recs, usage = Teacher(cfg, VllmOfflineBackend(cfg)).run(reqs)
print("RESULT " + json.dumps({"recs": recs, "usage": usage.model_dump()}))
"""


def test_vllm_offline_backend_answers_like_the_server(vllm_url, tmp_path):
    from distill.config import load_config
    from distill.tasks import get_task

    task = get_task("grammar")
    seeds = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")
    msgs = [task.teacher_messages(s["input"], seeds[:3]) for s in seeds[10:18]]
    script = OFFLINE % {"name": SERVED_NAME, "model": model_dir()}
    r = subprocess.run([str(PY), "-c", script], input=json.dumps(msgs), capture_output=True, text=True,
                       env=vllm_env(PY), cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    offline = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:])
    cfg = load_config(None, ["teacher.endpoint.launch_local=false", f"teacher.endpoint.base_url={vllm_url}"])
    reqs = [Request.make(SERVED_NAME, m, temperature=0.0, max_tokens=40) for m in msgs]
    served, usage = Teacher(cfg, OpenAIBackend(cfg, vllm_url)).run(reqs)
    assert [x["text"] for x in offline["recs"]] == [x["text"] for x in served]
    assert [x["usage"] for x in offline["recs"]] == [x["usage"] for x in served]
    assert [x["key"] for x in offline["recs"]] == [q.key for q in reqs]
    assert {k for k in offline["recs"][0] if k != "engine"} == set(served[0])
    u = offline["usage"]
    assert u["requests_sent"] == 8 and u["prompt_tokens"] == usage.prompt_tokens
    assert u["completion_tokens"] == usage.completion_tokens
