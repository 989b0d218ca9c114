"""The OpenAI protocol, request by request: OpenAI, `vllm serve`, llama.cpp's servers.

Retries are ours (the SDK's are off) so every retry, Retry-After wait and failure is counted in the
stage stats.
"""
from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass

import httpx
import openai

from distill.config import Config
from distill.teacher.cached import Session
from distill.teacher.request import EmptyReply, Request, TeacherError, failed_record, reply_record, top_logprobs
from distill.text import scrub


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


# Statuses no retry can fix: the first one stops the run with its cause instead of failing every request.
FATAL = {401: "authentication failed (check the API key)", 403: "permission denied",
         404: "model or endpoint not found"}


# Requests kept waiting at a launched local server beyond its slots: a slot that finishes starts the next
# one at once instead of idling through the client's round trip (storing the reply, sending the next).
# Measured on the offline default's short answer requests: 8 slots held 7.3 requests on average with none
# queued. The evaluation keeps exactly its slots in flight (`Teacher.realtime`): its latencies hold no queueing.
QUEUED = 2


def _short(e: Exception) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[:200]


@dataclass
class OpenAIBackend:
    cfg: Config
    base_url: str
    concurrency: int | None = None  # None: slots + QUEUED for a launched server, else teacher.endpoint.max_concurrency
    engine: str = "OpenAI protocol"
    slots: int | None = None  # a launched local server's parallel slots

    def send(self, reqs: list[Request], session: Session) -> None:
        asyncio.run(self._send_all(reqs, session))

    async def _send_all(self, reqs: list[Request], session: Session) -> None:
        ep = self.cfg.teacher.endpoint
        # The key is read now, never kept on the backend: backends travel to shard workers.
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.cfg.api_key() or "not-needed",
                                    max_retries=0, timeout=ep.timeout_s)
        sem = asyncio.Semaphore(self.concurrency or (self.slots + QUEUED if self.slots else ep.max_concurrency))

        async def one(r: Request) -> None:
            async with sem:
                if session.admit(r):
                    session.finish(r, await self._with_retries(client, r, session))

        try:
            await asyncio.gather(*(one(r) for r in reqs))
        finally:
            await client.close()

    async def _once(self, client: openai.AsyncOpenAI, req: Request) -> dict:
        t0 = time.perf_counter()
        # httpx's timeout bounds each read, not the whole reply: a server sending a byte a second never
        # trips it. The deadline bounds the attempt as a whole.
        resp = await asyncio.wait_for(client.chat.completions.create(
            model=req.model, messages=req.message_dicts(), **dict(req.params)), self.cfg.teacher.endpoint.timeout_s)
        latency = time.perf_counter() - t0
        if not resp.choices:
            raise TeacherError("reply has no choices")
        ch = resp.choices[0]
        if not (ch.message.content or "").strip():
            raise EmptyReply(f"content {'null' if ch.message.content is None else 'blank'} (finish_reason {ch.finish_reason})")
        u = resp.usage
        extra = {"logprobs": top_logprobs(ch.logprobs)} if dict(req.params).get("logprobs") else {}
        cached = getattr(getattr(u, "prompt_tokens_details", None), "cached_tokens", None)
        return reply_record(req, ch.message.content, ch.finish_reason, getattr(u, "prompt_tokens", 0),
                            getattr(u, "completion_tokens", 0), latency, cached_tokens=cached, **extra)

    async def _with_retries(self, client: openai.AsyncOpenAI, req: Request, session: Session) -> dict:
        ep, usage = self.cfg.teacher.endpoint, session.usage
        attempt = 0
        while True:
            usage.requests_sent += 1
            try:
                if ep.prefect_concurrency_limit:
                    from prefect.concurrency.asyncio import concurrency

                    async with concurrency(ep.prefect_concurrency_limit, occupy=1, strict=False):
                        rec = await self._once(client, req)
                else:
                    rec = await self._once(client, req)
                usage.request_seconds += rec["latency_s"] or 0.0
                return rec
            except (openai.APIError, TeacherError, TimeoutError, ValueError, TypeError, AttributeError) as e:
                # ValueError & co.: a reply that is not the JSON the protocol promises (a proxy's
                # error page, a truncated body); transient like a 5xx, so retried like one
                status = getattr(e, "status_code", None)
                name = (f"{type(e).__name__}" if isinstance(e, (openai.APIError, TeacherError))
                        else f"DeadlineExceeded(timeout_s={ep.timeout_s:g})" if isinstance(e, TimeoutError)
                        else "MalformedReply") + (f"({status})" if status else "")
                usage.error(name)
                # an error body may echo the key or the URL's user:pass@: neither is stored or printed
                why = scrub(f"{name}: {_short(e)}", self.cfg.api_key())
                if status in FATAL:
                    session.stop(f"{FATAL[status]}: HTTP {status} from {scrub(self.base_url)} for model "
                                 f"'{req.model}' ({why})")
                retryable = status is None or status == 429 or status >= 500 or status == 408
                if isinstance(e, EmptyReply) and dict(req.params).get("temperature", 1.0) == 0:
                    retryable = False  # a greedy request answers the same again: failed now, re-sent next run
                if not retryable or attempt >= ep.max_retries:
                    return failed_record(req, why, attempts=attempt + 1)
                wait = retry_after_seconds(getattr(getattr(e, "response", None), "headers", None))
                if wait is not None and wait > ep.max_retry_after_s:
                    session.stop(f"the teacher asked to wait {wait:.0f} s (Retry-After), more than "
                                 f"teacher.endpoint.max_retry_after_s={ep.max_retry_after_s:g}: try again later or raise it")
                    return failed_record(req, f"{why} (Retry-After {wait:.0f} s)", attempts=attempt + 1)
                if wait is None:
                    wait = min(ep.backoff_max_s, ep.backoff_base_s * 2 ** attempt)
                    wait *= 0.5 + random.random() / 2
                attempt += 1
                usage.retries += 1
                await asyncio.sleep(wait)
