"""Logit-level distillation: the student learns the teacher's whole next-token distribution at every
position of the teacher's answer, not only the token the teacher picked (Hinton et al.; DistilBERT and
Minitron heal pruned models this way).

Two sources of the teacher's distribution:
- a teacher loaded here (same tokenizer), run on its own prompt (few-shot or LoRA) over the same
  completion tokens as the student: the dense distribution over the whole vocabulary;
- top-k logprobs a teacher you can only call returned with its reply (`teacher.logprobs: k`), stored
  with the reply in the request store: a sparse k-token distribution plus one bucket for the rest.

The loss is `kd_alpha` x cross-entropy on the teacher's text + (1 - `kd_alpha`) x T^2 x KL(teacher || student)
at temperature T, over completion tokens only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def dense_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL(teacher || student) per token at temperature T, times T^2 (so gradients keep their
    scale across temperatures); logits are (tokens, vocab), the result is the mean over tokens."""
    t = temperature
    s_logp = F.log_softmax(student_logits.float() / t, dim=-1)
    t_logp = F.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
    return kl.mean() * t * t if kl.numel() else student_logits.sum() * 0


def sparse_kd_loss(student_logits: torch.Tensor, topk_ids: torch.Tensor, topk_logprobs: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) over the teacher's top-k tokens plus one tail bucket holding the rest of
    both distributions (as TRL's server distillation does): without the tail, a confident teacher's
    top-1 would carry the whole mass and every other token would be free.

    topk_ids / topk_logprobs: (tokens, k), the teacher's log-probabilities at temperature 1 (what an
    API returns); entries with id < 0 are padding. With k = the vocabulary this equals dense_kd_loss.
    """
    t = temperature
    valid = topk_ids >= 0
    ids = topk_ids.clamp(min=0)
    neg_inf = torch.tensor(-math.inf)
    # the teacher at temperature T from its top-k logprobs: p^(1/T) renormalised over the known tokens
    # and the unknown rest, carried as one more token (a rest below 1e-6 is rounding, not mass)
    t_lp = torch.where(valid, topk_logprobs.float(), neg_inf)
    rest = 1 - t_lp.exp().sum(-1)
    t_tail = torch.where(rest > 1e-6, torch.log(rest.clamp(min=1e-6)), neg_inf)
    t_full = torch.cat([t_lp, t_tail.unsqueeze(-1)], dim=-1) / t
    t_logp = t_full - torch.logsumexp(t_full, dim=-1, keepdim=True)

    s_logp_all = F.log_softmax(student_logits.float() / t, dim=-1)
    s_top = torch.where(valid, s_logp_all.gather(-1, ids), neg_inf)
    in_top = torch.zeros_like(s_logp_all).scatter_add_(-1, ids, valid.float()) > 0
    s_tail = torch.logsumexp(s_logp_all.masked_fill(in_top, -math.inf), dim=-1)  # exact: every other token
    s_logp = torch.cat([s_top, s_tail.unsqueeze(-1)], dim=-1)

    p = t_logp.exp()
    kl = torch.where(p > 0, p * (t_logp - s_logp), torch.zeros_like(p)).sum(-1)
    return kl.mean() * t * t if kl.numel() else student_logits.sum() * 0


def completion_positions(labels: torch.Tensor) -> torch.Tensor:
    """Mask of the positions whose logits predict a completion token (labels shifted by one)."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


def head_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits at the selected positions only, as (tokens, vocab): the vocabulary projection is a large
    share of a small model's compute, and prompt positions need none."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    return model.get_output_embeddings()(hidden[positions])


def tokenizer_mismatch(student_tok, teacher_tok) -> str | None:
    """None when both tokenizers map every token string to the same id, else what differs."""
    a, b = student_tok.get_vocab(), teacher_tok.get_vocab()
    if a == b:
        return None
    diff = len(set(a.items()) ^ set(b.items()))
    return f"vocabularies of {len(a)} and {len(b)} tokens, {diff} entries differ"
