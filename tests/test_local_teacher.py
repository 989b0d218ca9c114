"""The local teacher's two engines on the real servers: llama-server's slots kept busy, the same greedy
answers as llama-cpp-python's server, and the fallback when llama-server is not built."""
import re

import pytest

from benchmarks.teacher_saturation import distinct_requests
from distill.config import load_config
from distill.stages import generate
from distill.stages.context import prepare_run
from distill.teacher import Teacher
from distill.teacher import gguf_server as ls
from distill.teacher.backends.openai import OpenAIBackend
from tests.conftest import TINY, opened

pytestmark = pytest.mark.slow


def most_slots_busy_at_once(log: str) -> int:
    """From llama-server's log: the most slots processing a request at the same moment."""
    busy, most = set(), 0
    for m in re.finditer(r"slot +(launch_slot_|release): id +(\d+)", log):
        (busy.add if m[1] == "launch_slot_" else busy.discard)(m[2])
        most = max(most, len(busy))
    return most


def test_the_default_teacher_is_llama_server_with_every_slot_busy(tmp_path):
    """generate on the offline default's teacher: llama-server on the bf16 or Q8_0 re-encoding, its 8 slots all
    decoding at once. Breaks caught: the stage sending one request at a time (concurrency not taken from
    the slots), the server started without its slots, the weights setting ignored."""
    ctx, cfg, rd = opened(prepare_run(None, tmp_path / "run", TINY + ["generation.input_requests=16"]))
    stats = generate.run(ctx)
    assert stats.last.requests_sent >= 16
    log = (rd / "logs" / "teacher_server.log").read_text()
    assert f"SmolLM2-135M-Instruct.Q4_1.{ls.served_type()}.gguf" in log
    assert most_slots_busy_at_once(log) == cfg.teacher.endpoint.local.parallel == 8


def test_llama_server_answers_as_the_python_server_did():
    """The same greedy answer requests to both engines. Batched decoding rounds differently, so a few
    near-tied tokens flip (benchmarks/local_teacher.py measured 182 of 192 identical): at least 20 of 24
    here, and no chat-template token in any answer. Breaks caught: another chat template (every answer
    differs), the end-of-turn token not stopping generation, requests dropped under concurrency."""
    new_cfg = load_config(None, [])
    old_cfg = load_config(None, ["teacher.endpoint.local.engine=llama-cpp-python",
                                 "teacher.endpoint.local.weights=original"])
    reqs = distinct_requests(new_cfg)[:24]
    answers = {}
    for name, cfg in (("new", new_cfg), ("old", old_cfg)):
        with ls.local_server(cfg.teacher) as srv:
            assert (srv.engine, srv.slots) == (("llama-server", 8) if name == "new" else ("llama-cpp-python", 1))
            recs, _ = Teacher(cfg, OpenAIBackend(cfg, srv.base_url, slots=srv.slots)).ask(reqs)
        assert all(r["error"] is None and r["text"] for r in recs)
        answers[name] = [r["text"] for r in recs]
    same = sum(a == b for a, b in zip(answers["new"], answers["old"]))
    assert same >= 20, list(zip(answers["new"], answers["old"]))
    assert not any("<|im_" in a for a in answers["new"])


def test_without_llama_server_auto_says_so_and_serves_one_at_a_time(monkeypatch, capsys):
    """Fault injected: no llama-server on this machine. Break caught: a run that fails, or that silently
    loses the batching teacher without a word."""
    monkeypatch.setattr(ls, "llama_server_binary", lambda: None)
    cfg = load_config(None, [])
    with ls.local_server(cfg.teacher) as srv:
        assert (srv.engine, srv.slots) == ("llama-cpp-python", 1)
        recs, _ = Teacher(cfg, OpenAIBackend(cfg, srv.base_url, slots=srv.slots)).ask(distinct_requests(cfg)[:1])
    assert recs[0]["error"] is None
    err = capsys.readouterr().err
    assert err.count("llama-server is not built") == 1 and "python -m distill.teacher.build_server" in err
