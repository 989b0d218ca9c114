"""Depth pruning: which decoder layers a smaller student keeps.

`even` keeps evenly spaced layers (the first and the last among them), DistilBERT's choice. `block`
drops one contiguous run of layers, the run whose removal moves the residual stream least: the mean
angular distance between the hidden state entering it and the one leaving it, on the training rows
(Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"; ShortGPT). Every kept
layer then still reads what it was trained to read, except the one after the gap; an evenly spaced cut
breaks that at every layer.
"""
from __future__ import annotations

import math


def even_layers(n_layers: int, keep: int) -> list[int]:
    """Evenly spaced layer indices, the first and the last always among them."""
    if keep >= n_layers:
        return list(range(n_layers))
    if keep == 1:
        return [0]
    return sorted({round(i * (n_layers - 1) / (keep - 1)) for i in range(keep)})


def block_distances(model, batches, drop: int) -> list[float]:
    """Mean angular distance (0..1) between the hidden states before layer l and after layer
    l + drop - 1, for every start l; `batches` are token-id tensors (1 x length) of training text."""
    import torch

    n = model.config.num_hidden_layers
    sums = [0.0] * (n - drop + 1)
    with torch.no_grad():
        for ids in batches:
            hs = model(ids, output_hidden_states=True, use_cache=False).hidden_states
            for start in range(n - drop + 1):
                cos = torch.nn.functional.cosine_similarity(hs[start][0], hs[start + drop][0], dim=-1)
                sums[start] += float((torch.arccos(cos.clamp(-1, 1)) / math.pi).mean())
    return [s / max(len(batches), 1) for s in sums]


def block_layers(distances: list[float], n_layers: int, keep: int) -> list[int]:
    """Keep all but the closest block; the last layer is never in it (it shapes the output space)."""
    drop = n_layers - keep
    if drop <= 0:
        return list(range(n_layers))
    starts = range(min(len(distances), n_layers - drop))  # a block ending before the last layer
    best = min(starts, key=lambda s: distances[s])
    return [i for i in range(n_layers) if not best <= i < best + drop]


def cut(model, keep_idx: list[int]):
    """The model with only `keep_idx` layers, in place."""
    import torch

    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList(layers[i] for i in keep_idx)
    for new_i, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_i  # the KV cache is indexed by position in the stack
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in keep_idx]
    model.config.num_hidden_layers = len(keep_idx)
    return model


def choose(model, tok, how: str, keep: int, examples) -> list[int]:
    """The `keep` layers to keep by `how` (even or block); a block is measured on `examples`,
    (messages, answer) pairs of the training rows."""
    n = model.config.num_hidden_layers
    if how == "even" or keep >= n:
        return even_layers(n, keep)
    return block_layers(block_distances(model, training_texts(tok, examples), n - keep), n, keep)


def training_texts(tok, messages_and_answers, limit: int = 64):
    """Token ids of up to `limit` rows as the student is trained on them (prompt + answer)."""
    import torch

    out = []
    for messages, answer in messages_and_answers[:limit]:
        text = tok.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
        out.append(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]]))
    return out
