"""The trainers behind `training.method` besides plain SFT:

- `logit_kd`: `KDTrainer`, TRL's SFTTrainer with the loss replaced by cross-entropy on the teacher's
  text mixed with KL to the teacher's distribution (`distill.models.kd`). Examples are tokenized here,
  because the teacher may read the same completion after a prompt of its own (its few-shot examples).
- `on_policy`: `MixedDistillationTrainer`, TRL's DistillationTrainer (the student samples, the teacher
  scores those samples with a generalised JSD) where a share `1 - on_policy_fraction` of the batches
  keeps the teacher's own answers instead of the student's samples, as GKD's lambda does.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from distill.models.load import load_model


def _chat_text(tok, messages, **kw) -> str:
    return tok.apply_chat_template(messages, tokenize=False, **kw)


def completion_ids(tok, prompt: list[dict], completion: list[dict]) -> list[int]:
    """The completion's tokens as they follow the prompt in the chat template (end-of-turn included)."""
    p_text = _chat_text(tok, prompt, add_generation_prompt=True)
    full = _chat_text(tok, prompt + completion)
    if not full.startswith(p_text):
        raise ValueError("the chat template renders the prompt differently once an answer follows it")
    return tok(full[len(p_text):], add_special_tokens=False)["input_ids"]


def prompt_ids(tok, prompt: list[dict]) -> list[int]:
    return tok(_chat_text(tok, prompt, add_generation_prompt=True), add_special_tokens=False)["input_ids"]


def kd_examples(tok, records: list[dict], max_length: int, teacher_prompts: list[list[dict]] | None = None,
                topk: list[dict | None] | None = None) -> tuple[list[dict], int]:
    """Tokenized KD examples and how many records were left out. The student's sequence is cut to
    max_length; the teacher's (its own prompt, then the same completion tokens) is never cut, so both
    always hold the same completion tokens. `topk[i]` = {"ids": [[...k]...], "logprobs": [[...]...]}
    per completion token (a stored reply's logprobs) and optionally "completion", the reply's own token
    ids to train on; or None for a row without them (the teacher's distribution is then its own token:
    one-hot)."""
    out, skipped = [], 0
    for i, r in enumerate(records):
        p, c = prompt_ids(tok, r["prompt"]), completion_ids(tok, r["prompt"], r["completion"])
        if topk is not None and topk[i] and "completion" in topk[i]:  # the teacher's own token pieces
            c = topk[i]["completion"]
        n = min(len(c), max_length - len(p))
        if n <= 0:
            skipped += 1
            continue
        ex = {"input_ids": p + c[:n], "labels": [-100] * len(p) + c[:n]}
        if teacher_prompts is not None:
            tp = prompt_ids(tok, teacher_prompts[i])
            ex["teacher_input_ids"], ex["teacher_labels"] = tp + c[:n], [-100] * len(tp) + c[:n]
        if topk is not None:  # a row without stored logprobs (a seed) learns its own tokens: plain CE
            tk = topk[i] or {"ids": [[x] for x in c], "logprobs": [[0.0] for _ in c]}
            ex["topk_ids"], ex["topk_logprobs"] = tk["ids"][:n], tk["logprobs"][:n]
        out.append(ex)
    return out, skipped


class KDCollator:
    """Right-pads every sequence field of the examples; top-k rows are padded with id -1."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        out = {}
        for key, fill in (("input_ids", self.pad), ("labels", -100), ("teacher_input_ids", self.pad),
                          ("teacher_labels", -100)):
            if key in examples[0]:
                seqs = [e[key] for e in examples]
                width = max(map(len, seqs))
                out[key] = torch.tensor([s + [fill] * (width - len(s)) for s in seqs])
                if key.endswith("input_ids"):
                    mask_key = "attention_mask" if key == "input_ids" else "teacher_attention_mask"
                    out[mask_key] = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        if "topk_ids" in examples[0]:  # completion tokens of all rows, in order: (tokens, k)
            k = max(len(row) for e in examples for row in e["topk_ids"])
            ids = [row + [-1] * (k - len(row)) for e in examples for row in e["topk_ids"]]
            lps = [row + [0.0] * (k - len(row)) for e in examples for row in e["topk_logprobs"]]
            out["topk_ids"], out["topk_logprobs"] = torch.tensor(ids), torch.tensor(lps)
        return out


def make_kd_trainer(sft_trainer_args: dict, teacher, *, alpha: float, temperature: float):
    """A KDTrainer: SFTTrainer(**sft_trainer_args) whose loss is alpha x CE + (1 - alpha) x KD. The
    teacher is a loaded model (dense) or None (the examples carry the teacher's top-k logprobs)."""
    import torch
    from trl import SFTTrainer

    from distill.models.kd import completion_positions, dense_kd_loss, head_logits, sparse_kd_loss

    class KDTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            pos = completion_positions(inputs["labels"])
            s_logits = head_logits(model, inputs["input_ids"], inputs["attention_mask"], pos)
            targets = inputs["labels"][:, 1:][inputs["labels"][:, 1:] != -100]
            ce = torch.nn.functional.cross_entropy(s_logits.float(), targets)
            if teacher is not None:
                with torch.no_grad():
                    if "teacher_input_ids" in inputs:  # the teacher reads its own prompt
                        t_logits = head_logits(teacher, inputs["teacher_input_ids"], inputs["teacher_attention_mask"],
                                               completion_positions(inputs["teacher_labels"]))
                    else:
                        t_logits = head_logits(teacher, inputs["input_ids"], inputs["attention_mask"], pos)
                kd = dense_kd_loss(s_logits, t_logits, temperature)
            else:
                kd = sparse_kd_loss(s_logits, inputs["topk_ids"], inputs["topk_logprobs"], temperature)
            self._kd_parts.append(torch.stack([ce.detach(), kd.detach()]))  # read at log time: no sync per step
            loss = alpha * ce + (1 - alpha) * kd
            return (loss, None) if return_outputs else loss

        def log(self, logs, start_time=None):
            if self._kd_parts and "loss" in logs:
                ce, kd = torch.stack(self._kd_parts).mean(0).tolist()
                logs["ce"], logs["kd"] = round(ce, 4), round(kd, 4)
                self._kd_parts.clear()
            super().log(logs, start_time)

    trainer = KDTrainer(**sft_trainer_args)
    trainer._kd_parts = []
    if teacher is not None:
        teacher.to(trainer.accelerator.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    return trainer


def make_on_policy_trainer(model, teacher, tok, records: list[dict], args, *, fraction: float, seed: int,
                           peft_config=None):
    """TRL's DistillationTrainer, with `1 - fraction` of the generation batches taking the teacher's
    answers from the records instead of the student's samples (fraction 1 = fully on-policy)."""
    from datasets import Dataset
    from trl import DistillationTrainer

    class MixedDistillationTrainer(DistillationTrainer):
        def _generate_and_score_completions(self, inputs):
            self._answers = [x["completion"] for x in inputs]
            self._prompts = [x["prompt"] for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _generate_single_turn(self, prompt_ids, images, multimodal_fields):
            if self._rng.random() < fraction:
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields)
            limit = self.args.max_completion_length
            return [completion_ids(tok, p, c)[:limit] for p, c in zip(self._prompts, self._answers)]

    trainer = MixedDistillationTrainer(model=model, teacher_model=teacher, args=args,
                                       train_dataset=Dataset.from_list(records), processing_class=tok,
                                       peft_config=peft_config)
    trainer._rng = random.Random(f"{seed}:on-policy")
    return trainer


@dataclass
class KDSource:
    """Where a logit-level method's teacher distribution comes from: weights loaded here (dense), or
    top-k logprobs per row (sparse). teacher_prompts: the teacher's own prompt per record, or None when
    it reads the student's."""

    name: str
    path: Path | None = None
    teacher_prompts: list[list[dict]] | None = None
    topk: list[dict | None] | None = None
    trust_remote_code: bool = False
    skipped: int = 0  # records left out when tokenized: no room for the answer within max_length

    def load(self, dtype=None):
        """The teacher's weights (None for stored logprobs), in the student's dtype."""
        if self.path is None:
            return None
        model, _ = load_model(self.path, trust_remote_code=self.trust_remote_code, dtype=dtype)
        return model
