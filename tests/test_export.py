"""Shipping the student: the offline default's student (a few real TRL steps) exported to GGUF, served by
`distill serve-model` (the llama.cpp server) and queried with the openai client like any endpoint."""
import os
import signal
import subprocess
import time

import httpx
import pytest

from distill.io import read_jsonl, write_jsonl
from distill.models.infer import generate_batched
from distill.models.load import load_model
from distill.stages.context import prepare_run
from distill.tasks import get_task
from distill.teacher.gguf_server import free_port, port_in_use
from tests.conftest import ROOT, TINY, distill_cmd


def test_export_help_lists_every_format():
    from typer.testing import CliRunner

    from distill.cli import app
    from distill.stages.export import FORMATS

    out = " ".join(CliRunner().invoke(app, ["export", "--help"], terminal_width=200).output.split())
    assert all(f"{f} = " in out for f in FORMATS) and "gguf_type" in out


def test_q4_0_blocks_are_what_llama_cpp_reads_and_closer_than_the_reference_quantiser():
    """The searched-scale Q4_0 encoder (the local teacher's `weights: q4_0`) read back by the `gguf`
    library's dequantiser (llama.cpp's block layout). Breaks caught: nibbles packed in the wrong order or
    half of a block lost (values come back scrambled), a scale search that picks a worse scale than the
    largest-value rule it starts from, a block of zeros turned into NaN."""
    import gguf
    import numpy as np

    from distill.models.gguf_export import q4_0

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 96)).astype(np.float32) * np.linspace(0.01, 1, 96, dtype=np.float32)
    w[3] = 0.0
    w[5, :32] = np.arange(-8, 24).clip(-8, 7) * 0.25  # on Q4_0's grid: encoded exactly
    t = gguf.GGMLQuantizationType.Q4_0
    ours, ref = gguf.quants.dequantize(q4_0(gguf, w), t), gguf.quants.dequantize(gguf.quants.quantize(w, t), t)
    assert ours.shape == w.shape and np.isfinite(ours).all() and not ours[3].any()
    np.testing.assert_array_equal(ours[5, :32], w[5, :32])
    block_err = lambda x: ((x - w) ** 2).reshape(-1, 32).sum(1)  # noqa: E731
    assert (block_err(ours) <= block_err(ref) + 1e-6).all()
    assert ((ours - w) ** 2).sum() < 0.95 * ((ref - w) ** 2).sum()
    assert np.corrcoef(ours.ravel(), w.ravel())[0, 1] > 0.99


def test_a_4_bit_file_keeps_the_output_layer_at_8_bits(tmp_path):
    """llama.cpp's own 4-bit recipe: the layers in Q4_0, the output layer (here the tied token embedding,
    Q8_0 in the bundled SmolLM2 already) at 8 bits. Breaks caught: the logits' weights rounded to 4 bits."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.models.gguf_export import write_gguf
    from distill.models.load import default_gguf

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
                     ).save_pretrained(tmp_path / "m")
    write_gguf(tmp_path / "m", tmp_path / "m.gguf", quant="q4_0", reference=default_gguf())
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert types["token_embd.weight"] == "Q8_0" and "output.weight" not in types
    assert {types[f"blk.0.{n}.weight"] for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                                   "ffn_down")} == {"Q4_0"}


def test_a_bf16_file_holds_each_weight_as_torch_rounds_it_to_bf16(tmp_path):
    """The served type where the CPU computes bf16 natively. Breaks caught: the weights truncated instead of
    rounded (torch and llama.cpp round to nearest even), another file type in the header (llama.cpp would
    name the file by it), norms rounded too (llama.cpp expects them in F32), q/k rows left unpermuted."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.models.gguf_export import permute_qk, write_gguf
    from distill.models.load import default_gguf

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    model.save_pretrained(tmp_path / "m")
    write_gguf(tmp_path / "m", tmp_path / "m.gguf", quant="bf16", reference=default_gguf())
    r = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    assert int(r.fields["general.file_type"].parts[-1][0]) == 32  # LLAMA_FTYPE_MOSTLY_BF16
    t = {x.name: x for x in r.tensors}
    assert t["blk.0.attn_norm.weight"].tensor_type.name == "F32"
    sd = model.state_dict()
    for name, hf in (("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
                     ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight")):
        assert t[name].tensor_type.name == "BF16"
        got = gguf.quants.dequantize(t[name].data, t[name].tensor_type)
        want = sd[hf].to(torch.bfloat16).float().numpy()
        want = permute_qk(want, 2) if "attn_q" in name else want
        assert (got.reshape(want.shape) == want).all()


def test_a_gguf_read_twice_is_parsed_once_and_again_when_the_file_is_replaced(tmp_path):
    """A ladder's students copy their tokenizer from the same file (~2.5 s a parse); parameters are counted
    from the tensor table alone. Breaks caught: a file rewritten in place (a retrained student's export)
    read from the stale parse, and a count that skips the metadata wrongly (the bundled file's string
    arrays: its vocabulary and merges)."""
    import gguf
    import numpy as np

    from distill.models.load import default_gguf, gguf_parameter_count, read_gguf

    bundled = default_gguf()
    assert gguf_parameter_count(bundled) == sum(int(t.n_elements) for t in gguf.GGUFReader(str(bundled)).tensors)

    def write(n: int) -> None:
        tmp = tmp_path / "m.gguf.tmp"
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_tensor("w", np.zeros((n, 4), dtype=np.float32))
        w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
        os.replace(tmp, tmp_path / "m.gguf")

    write(2)
    assert gguf_parameter_count(tmp_path / "m.gguf") == 8 and read_gguf(tmp_path / "m.gguf") is read_gguf(tmp_path / "m.gguf")
    write(3)
    assert gguf_parameter_count(tmp_path / "m.gguf") == 12


def _cli(*args, cwd=ROOT):
    r = subprocess.run(distill_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_the_gguf_student_served_over_the_openai_protocol_answers_like_the_safetensors_student(tmp_path):
    """Tolerance: at least 18 of 20 eval answers identical to the safetensors student's (greedy, one request
    at a time); q8_0 measured 19/20 on the README run's student, as f32 did. Breaks caught: q/k rows not
    permuted to llama.cpp's order or a tokenizer not carried over (the answers turn to noise), a tied
    output layer lost, the server serving another model name. Issue 36 item 8 and the port messages:
    a second serve-model on the port in use is refused in one line; SIGTERM to serve-model alone (as a
    supervisor stops it) takes llama-server with it."""
    from openai import OpenAI

    rd = tmp_path / "run"
    ctx = prepare_run(None, rd, TINY)
    seeds = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "seeds.jsonl")[:24]
    write_jsonl(rd / "data" / "train.jsonl", [{**s, "reference": s["output"], "meta": {}} for s in seeds])
    ctx.close()
    _cli("train", "--run-dir", str(rd))
    _cli("export", "--run-dir", str(rd))
    gguf = rd / "export" / "smollm2-135m-distilled.q8_0.gguf"
    assert gguf.stat().st_size > 100_000_000
    assert (rd / "export" / "Modelfile").read_text().startswith(f"FROM ./{gguf.name}\n")
    card = (rd / "export" / "hf" / "README.md").read_text()
    assert "# smollm2-135m-distilled" in card and "Not evaluated yet" in card  # no report in this run yet
    assert (rd / "export" / "hf" / "model.safetensors").exists()

    task = get_task("grammar")
    rows = read_jsonl(ROOT / "distill" / "tasks" / "grammar" / "eval.jsonl")[:20]
    model, tok = load_model(rd / "student")
    want = [a["raw"] for a in generate_batched(model, tok, [task.student_messages(r["input"]) for r in rows],
                                               batch_size=1, max_new_tokens=48)]
    port = free_port()
    proc = subprocess.Popen(distill_cmd("serve-model", "--run-dir", str(rd), "--port", str(port)), cwd=ROOT,
                            stdout=open(tmp_path / "serve.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        assert [m.id for m in client.models.list().data] == ["smollm2-135m-distilled"]
        got = [client.chat.completions.create(model="smollm2-135m-distilled", messages=task.student_messages(r["input"]),
                                              temperature=0, max_tokens=48).choices[0].message.content for r in rows]
        again = subprocess.run(distill_cmd("serve-model", "--run-dir", str(rd), "--port", str(port)), cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        assert again.returncode == 2 and again.stderr.strip().splitlines() == [
            f"error: --port {port}: 127.0.0.1:{port} is in use by another process: choose another port"], again.stderr
        assert "serving" not in again.stdout + again.stderr
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # serve-model alone, not its process group
        proc.wait(timeout=30)
    import psutil

    deadline = time.monotonic() + 15
    while left := [p for p in psutil.process_iter(["cmdline"]) if str(port) in (p.info["cmdline"] or [])
                   and "llama-server" in " ".join(p.info["cmdline"] or [])]:  # llama-server went with it
        assert time.monotonic() < deadline, f"llama-server outlived serve-model: {left}"
        time.sleep(0.5)
    assert not port_in_use("127.0.0.1", port)
    same = sum(g.strip() == w.strip() for g, w in zip(got, want))
    print(f"identical answers: {same}/20")
    assert same >= 18, list(zip(got, want))
