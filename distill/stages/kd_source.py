"""Whose distribution a logit-level candidate (training.method logit_kd / on_policy) learns, resolved
before any candidate trains: the teacher's weights loaded here under its own prompt, a ladder student
trained earlier in the run under the student's prompt, or the top-k logprobs stored with the
teacher's replies. Logits only compare over one vocabulary: another tokenizer is refused in one line.
"""
from __future__ import annotations

from pathlib import Path

from distill.config import ConfigError, Training
from distill.models.kd_train import KDSource, completion_ids
from distill.models.load import base_student_dir, load_tokenizer
from distill.records import Row
from distill.stages.context import RunContext
from distill.stages.serving import teacher_weights
from distill.stages.shards import answer_requests
from distill.teacher.store import RequestStore


def kd_source(ctx: RunContext, name: str, student, t: Training, rows: list[Row], records: list[dict]) -> KDSource | None:
    """The KD source of one candidate (None for sft), its tokenizer checked against the student's (a
    depth-pruned student keeps its base's tokenizer, so the base is checked before any cut is made)."""
    if t.method == "sft":
        return None
    cfg, who, what = ctx.cfg, t.kd_teacher, f"training.method={t.method}"
    base_dir = base_student_dir(student)
    if who == "logprobs":
        if t.method == "on_policy":
            raise ConfigError(f"{what}: stored logprobs score the teacher's answers, not the student's samples; "
                              "on_policy needs a teacher loaded here (kd_teacher: teacher or a ladder student)")
        if not cfg.teacher.logprobs:
            raise ConfigError(f"{what} with kd_teacher: logprobs needs teacher.logprobs: k (top-k logprobs kept with "
                              "every reply during generation)")
        tok = load_tokenizer(base_dir, trust_remote_code=student.trust_remote_code)
        topk = stored_topk(ctx, rows, records, tok)
        found = sum(x is not None for x in topk)
        if not found:
            raise ConfigError(f"{what}: none of the {len(rows)} training rows has stored logprobs whose tokens are the "
                              f"student's tokens ({Path(tok.name_or_path).name}); is the teacher's tokenizer another? "
                              "use method: sft")
        return KDSource(f"the teacher's stored top-{cfg.teacher.logprobs} logprobs ({found} of {len(rows)} rows)",
                        topk=topk)
    if who == "teacher":
        path, weights = teacher_weights(cfg, ctx.dir)
        if path is None:
            raise ConfigError(f"{what}: the teacher's weights are not here ({weights}); use kd_teacher: logprobs with "
                              "teacher.logprobs: k, or kd_teacher: <a ladder student trained before this one>")
        lora = cfg.teacher.adaptation.method == "lora"
        if t.method == "on_policy" and not lora:
            raise ConfigError(f"{what}: the teacher scores the student's samples under the student's plain prompt, "
                              "where a few-shot teacher's weights only chat; use kd_teacher: <a ladder student trained "
                              "before this one> (e.g. the SFT-distilled one) or teacher.adaptation.method: lora")
        prompts = None if t.method == "on_policy" else [ctx.task.teacher_messages(r.input, ctx.shots) for r in rows]
        src = KDSource(f"the teacher ({weights})", path=path, teacher_prompts=prompts)
    else:
        names = [s.name for s in cfg.students]  # preflight checked that it is listed before this one
        teaching = cfg.students[names.index(who)]
        src = KDSource(f"the student '{who}'", path=ctx.dir.student(who), trust_remote_code=teaching.trust_remote_code)
        # not trained yet when the run starts; training keeps its base's tokenizer
        check_same_tokenizer(what, base_dir, student.trust_remote_code, src, base_student_dir(teaching))
        return src
    check_same_tokenizer(what, base_dir, student.trust_remote_code, src, src.path)
    return src


def check_same_tokenizer(what: str, base_dir: Path, trust_remote_code: bool, src: KDSource, teacher_dir: Path) -> None:
    from distill.models.kd import tokenizer_mismatch

    s_tok = load_tokenizer(base_dir, trust_remote_code=trust_remote_code)
    t_tok = load_tokenizer(teacher_dir, trust_remote_code=src.trust_remote_code)
    if (diff := tokenizer_mismatch(s_tok, t_tok)) is not None:
        raise ConfigError(f"{what}: {src.name} uses tokenizer {_tok_name(t_tok)}, the student {_tok_name(s_tok)} "
                          f"({diff}): logits compare only over one vocabulary; use method: sft (the teacher's text), "
                          "or kd_teacher: <a ladder student> that shares the student's tokenizer")


def stored_topk(ctx: RunContext, rows: list[Row], records: list[dict], tok) -> list[dict | None]:
    """Per row, the teacher's top-k (token ids, logprobs) at each completion token, from the reply the
    row's answer came from (a seed too, when the teacher asked the same input gave the seed's answer); None
    where there is none or its tokens are not the student's."""
    pieces: dict[str, int] = {}
    for i in range(len(tok)):  # a reply's tokens come back as text pieces
        pieces.setdefault(tok.decode([i]), i)
    if tok.eos_token_id is not None:  # llama-server renders special tokens as "": the one a reply ends on
        pieces.setdefault("", tok.eos_token_id)
    store = RequestStore(ctx.dir.requests())
    try:
        out = []
        for row, rec in zip(rows, records):
            replies = [store.get(r.key) for r in answer_requests(ctx.cfg, ctx.task, row.input, ctx.shots)]
            reply = next((x for x in replies if x and x.get("logprobs") and ctx.task.parse_answer(x["text"]) == row.output),
                         None)
            target = completion_ids(tok, rec["prompt"], rec["completion"])
            out.append(_aligned(reply, row.output, target, tok, pieces) if reply else None)
        return out
    finally:
        store.close()


def _aligned(reply: dict, answer: str, target: list[int], tok, pieces: dict[str, int]) -> dict | None:
    """The reply's top-k at each of its own tokens, and the completion to train on: the reply's tokens
    (a sampler may emit a word in two pieces where the tokenizer has one: " wed" + "ding"), then the
    rest of the target (the end of turn, not in the reply, with the target token at probability 1).
    None when the reply's tokens do not spell the answer the row keeps."""
    lp = dict(reply["logprobs"])
    while lp["tokens"] and lp["tokens"][-1] == "":  # llama-server lists the end of turn as an empty piece
        lp["tokens"], lp["top"] = lp["tokens"][:-1], lp["top"][:-1]
    ids = [pieces.get(p) for p in lp["tokens"]]
    canonical = tok(answer, add_special_tokens=False)["input_ids"]
    if None in ids or "".join(lp["tokens"]) != answer or target[:len(canonical)] != canonical:
        return None
    tail = target[len(canonical):]
    top_ids, top_lps = [], []
    for alts in lp["top"]:
        known = [(pieces[p], v) for p, v in alts if p in pieces]
        top_ids.append([i for i, _ in known])
        top_lps.append([v for _, v in known])
    return {"ids": top_ids + [[x] for x in tail], "logprobs": top_lps + [[0.0] for _ in tail],
            "completion": ids + tail}


def _tok_name(tok) -> str:
    return f"'{Path(tok.name_or_path).name}' ({len(tok)} tokens)"
