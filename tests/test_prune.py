"""Depth pruning: the block chosen is the one that does least, and the cut model computes what the
full one did through the layers it kept."""
import torch

from distill.models import prune


def tiny_llama(layers: int = 8):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def silence(model, idx: list[int]) -> None:
    """Layers that add nothing to the residual stream: their attention and MLP outputs are zero."""
    with torch.no_grad():
        for i in idx:
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()


def test_the_block_that_does_nothing_is_the_one_dropped_and_the_cut_model_computes_the_same():
    model = tiny_llama()
    silence(model, [3, 4, 5])
    texts = [torch.randint(0, 64, (1, 12)) for _ in range(4)]
    d = prune.block_distances(model, texts, drop=3)
    assert len(d) == 6 and d[3] < 1e-3 < min(d[:3] + d[4:])
    keep = prune.block_layers(d, 8, 5)
    assert keep == [0, 1, 2, 6, 7]
    ids = texts[0]
    with torch.no_grad():
        full, full_gen = model(ids).logits, model.generate(ids, max_new_tokens=6, do_sample=False)
        prune.cut(model, keep)
        assert model.config.num_hidden_layers == 5 and len(model.model.layers) == 5
        # generation with the KV cache reads each kept layer's cache slot by its new index
        cut, cut_gen = model(ids).logits, model.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.allclose(full, cut, atol=1e-5)
    assert torch.equal(full_gen, cut_gen) and full_gen.shape[1] > ids.shape[1]


def test_the_last_layer_is_never_in_the_block_and_even_keeps_both_ends():
    # the closest block would end on the last layer: the next closest is taken instead
    assert prune.block_layers([0.5, 0.4, 0.3, 0.1], n_layers=6, keep=3) == [0, 1, 5]
    assert prune.block_layers([0.2, 0.4, 0.3, 0.1], n_layers=6, keep=3) == [3, 4, 5]
    assert prune.block_layers([0.2], n_layers=4, keep=4) == [0, 1, 2, 3]
    assert prune.even_layers(30, 16)[0] == 0 and prune.even_layers(30, 16)[-1] == 29
