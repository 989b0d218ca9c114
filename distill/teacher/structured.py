"""Structured output: a JSON schema for the teacher's reply, sent the way the server understands it,
every reply validated, invalid ones retried a bounded number of times and then recorded as failed
with their raw text (never silently dropped).

Servers constrain decoding differently: OpenAI and vLLM take response_format json_schema,
llama-cpp-python takes {"type": "json_object", "schema": ...} and compiles it to a grammar. A
constrained reply can still fail validation (cut off by max_tokens, a server that ignores the
schema), hence the retries: each is a new request (new seed, temperature at least 0.7), so it has
its own key in the request store and a re-run repeats none of them.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, Callable

import jsonschema

from distill.config import Config
from distill.stats import Usage
from distill.teacher.request import Request

RETRY_TEMPERATURE = 0.7


def response_format(cfg: Config, schema: dict, name: str) -> dict | None:
    """The response_format parameter for this teacher, or None (prompt only)."""
    mode = cfg.teacher.structured_output
    if mode == "auto":
        mode = "json_object" if cfg.teacher.endpoint.launch_local else "json_schema"
    if mode == "none":
        return None
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def validate(text: str | None, schema: dict) -> tuple[Any, str | None]:
    """(parsed object, None) for a valid reply, else (None, why it is invalid)."""
    if not text or not text.strip():
        return None, "empty reply"
    try:
        obj = json.loads(text)
    except ValueError as e:
        return None, f"not JSON ({e.msg} at char {e.pos})"
    err = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(obj))
    if err is not None:
        where = "/".join(str(p) for p in err.absolute_path)
        return None, f"schema: {where + ': ' if where else ''}{err.message[:160]}"
    return obj, None


def retry_request(req: Request, attempt: int) -> Request:
    params = dict(req.params)
    params["seed"] = params.get("seed", 0) * 1000 + attempt
    params["temperature"] = max(params.get("temperature", 0.0), RETRY_TEMPERATURE)
    return replace(req, params=tuple(sorted(params.items())))


def run_structured(run: Callable[[list[Request]], tuple[list[dict], Usage]], reqs: list[Request], schema: dict,
                   retries: int, on_done: Callable[[], None] | None = None) -> tuple[list[dict], Usage]:
    """Replies for reqs, each with "parsed" (the validated object) or an error naming the last
    validation failure, with "raw" (the last reply's text) and "attempts". `run` sends a list of
    requests through the cached teacher (store and budget included)."""
    final: list[dict] = [{} for _ in reqs]
    current = list(reqs)
    pending = list(range(len(reqs)))
    usages = []
    for attempt in range(retries + 1):
        replies, usage = run([current[i] for i in pending])
        usages.append(usage)
        retry = []
        for i, rep in zip(pending, replies):
            obj, why = (None, None) if rep.get("error") is not None else validate(rep.get("text"), schema)
            if rep.get("error") is not None:  # transport failures were already retried by the client
                final[i] = rep
            elif obj is not None:
                final[i] = {**rep, "parsed": obj, "attempts": attempt + 1}
            else:
                final[i] = {**rep, "error": f"invalid reply after {attempt + 1} attempt(s): {why}",
                            "raw": rep.get("text"), "attempts": attempt + 1}
                if attempt < retries:
                    retry.append(i)
                    current[i] = retry_request(reqs[i], attempt + 1)
                    continue
            if on_done:
                on_done()
        if not retry:
            break
        pending = retry
    usage = Usage.merge(usages)
    invalid = sum(1 for f in final if (f.get("error") or "").startswith("invalid reply"))
    if invalid:
        usage.errors["InvalidStructuredReply"] = invalid
    return final, usage
