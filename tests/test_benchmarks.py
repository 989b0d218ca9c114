"""The benchmarks' own logic: the interleaved timing that the saturation figure rests on, and the
FLOP accounting behind MFU (the GPU figure is computed by the same code on a GPU)."""
import pytest

from benchmarks.teacher_saturation import blocks_of, interleave
from benchmarks.train_throughput import matmul_parameters, training_flops_per_token


def test_interleaved_blocks_cancel_a_machine_that_slows_down():
    calls = []

    def runner(block):  # the same client each time; the machine gets 3% slower with every round
        calls.append(1)
        return len(block) * (1 + 0.03 * len(calls)), 10 * len(block)

    blocks = blocks_of(list(range(30)), 120, 12)
    res = interleave({"a": runner, "b": runner}, blocks)
    assert res["a"]["output_tokens_per_s"] == pytest.approx(res["b"]["output_tokens_per_s"], rel=1e-9)
    assert res["a"]["requests"] == res["b"]["requests"] == 120
    # the same two contenders run one after the other: the second looks a fifth slower
    calls.clear()
    first = interleave({"a": runner}, blocks)["a"]["output_tokens_per_s"]
    second = interleave({"b": runner}, blocks)["b"]["output_tokens_per_s"]
    assert second / first < 0.8


def test_blocks_never_repeat_a_request_inside_a_block():
    blocks = blocks_of(list(range(7)), 20, 5)
    assert sum(map(len, blocks)) == 20
    assert all(len(set(b)) == len(b) for b in blocks)
    assert {r for b in blocks for r in b} == set(range(7))
    # more than there are distinct requests in one block: the block shrinks rather than repeat
    assert max(map(len, blocks_of(list(range(7)), 20, 50))) == 7


def test_training_flops_follow_palm_accounting():
    n, trainable, layers, d, ctx = 100_000_000, 2_000_000, 30, 576, 40
    full = training_flops_per_token(n, n, layers, d, ctx, lora=False)
    assert full == 6 * n + 12 * layers * d * ctx
    # LoRA: no weight gradients for the frozen base, only for the adapters
    lora = training_flops_per_token(n, trainable, layers, d, ctx, lora=True)
    assert lora == 4 * n + 2 * trainable + 12 * layers * d * ctx


@pytest.mark.parametrize("tied", [True, False])
def test_matmul_parameters_count_the_output_projection_once(tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())  # a tied table is one parameter
    table = 100 * 16
    # tied: the table multiplies as the output projection; untied: the input table is only a lookup
    assert matmul_parameters(model) == (total if tied else total - table)
