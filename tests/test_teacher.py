"""The OpenAI-protocol backend against a fake server that injects faults: retries, Retry-After, the store."""
import time
from dataclasses import dataclass, field

from distill.config import load_config
from distill.teacher import Request, RequestStore, Teacher, Usage
from distill.teacher.backends.openai import OpenAIBackend, retry_after_seconds
from distill.testing.fake_openai import FakeOpenAI


@dataclass
class _Client:
    teacher: Teacher
    store: RequestStore | None
    usage: Usage = field(default_factory=Usage)


def _client(url, store=None, **kw):
    sets = [f"teacher.{k}={v}" for k, v in kw.items()]
    cfg = load_config(None, ["teacher.model=fake-model", "teacher.endpoint.launch_local=false",
                             f"teacher.endpoint.base_url={url}",
                             "teacher.endpoint.backoff_base_s=0.01", "teacher.endpoint.api_key=sk-test", *sets])
    return _Client(Teacher(cfg, OpenAIBackend(cfg, url)), store)


def _run(client, reqs):
    recs, client.usage = client.teacher.ask(reqs, client.store)
    return recs


def _req(text="hello", **params):
    return Request.make("fake-model", [{"role": "user", "content": text}], temperature=0.0, **params)


def test_429_with_retry_after_is_waited_out_then_succeeds():
    """Breaks caught: Retry-After ignored (the second request comes at once) and a 429 counted as a failure."""
    with FakeOpenAI([{"status": 429, "headers": {"Retry-After": "1"}}]) as fake:
        client = _client(fake.base_url)
        [rec] = _run(client, [_req()])
    assert rec["error"] is None and rec["text"] == "hello"
    assert len(fake.requests) == 2
    assert fake.times[1] - fake.times[0] >= 0.95, "Retry-After: 1 was not honoured"
    assert client.usage.retries == 1 and client.usage.errors == {"RateLimitError(429)": 1}


def test_5xx_are_retried_with_backoff_and_counted():
    """Break caught: a 5xx returned as a failed row without a retry, or retried without being counted."""
    script = [{"status": 500}, {"status": 502}, {"status": 503}]
    with FakeOpenAI(script) as fake:
        client = _client(fake.base_url)
        [rec] = _run(client, [_req()])
    assert rec["error"] is None
    assert len(fake.requests) == 4
    assert client.usage.retries == 3 and client.usage.requests_sent == 4
    assert rec["usage"] == {"prompt_tokens": 10, "completion_tokens": 5}


def test_gives_up_after_max_retries_and_reports_failure():
    with FakeOpenAI([{"status": 500}] * 10) as fake:
        client = _client(fake.base_url, max_retries=2)
        [rec] = _run(client, [_req()])
    assert rec["text"] is None and "InternalServerError(500)" in rec["error"]
    assert len(fake.requests) == 3 and client.usage.failed == 1


def test_client_errors_are_not_retried():
    """Break caught: a 4xx retried (it can only fail again, at a cost)."""
    with FakeOpenAI([{"status": 404}]) as fake:
        client = _client(fake.base_url)
        [rec] = _run(client, [_req()])
    assert "404" in rec["error"] and len(fake.requests) == 1


def test_store_makes_a_rerun_send_nothing_and_retries_failures(tmp_path):
    """Breaks caught: a store not read back on open (6 requests again instead of 1), and a failed request
    cached like a reply (never retried: the first row stays failed)."""
    path = tmp_path / "requests.jsonl"
    reqs = [_req(f"s{i}") for i in range(5)]
    with FakeOpenAI([{"status": 400}]) as fake:  # the first request fails for good
        store = RequestStore(path)
        recs = _run(_client(fake.base_url, store), reqs)
        store.close()
        assert sum(r["error"] is not None for r in recs) == 1
        store = RequestStore(path)
        client = _client(fake.base_url, store)
        recs2 = _run(client, reqs)
        store.close()
    assert client.usage.cache_hits == 4 and client.usage.requests_sent == 1
    assert all(r["error"] is None for r in recs2)
    assert [r["text"] for r in recs2] == [f"s{i}" for i in range(5)]
    assert len(fake.requests) == 6


def test_request_key_depends_on_model_prompt_and_params():
    a = _req("x")
    assert a.key == _req("x").key
    assert a.key != _req("y").key
    assert a.key != _req("x", seed=1).key
    assert a.key != Request.make("other", [{"role": "user", "content": "x"}], temperature=0.0).key


def test_retry_after_parsing():
    import httpx

    assert retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_seconds(httpx.Headers({"retry-after": future})) <= 31
    assert retry_after_seconds(httpx.Headers({})) is None


def test_api_key_is_sent_as_bearer_but_never_stored(tmp_path):
    path = tmp_path / "requests.jsonl"
    with FakeOpenAI() as fake:
        store = RequestStore(path)
        _run(_client(fake.base_url, store), [_req()])
        store.close()
    assert fake.headers_seen[0]["authorization"] == "Bearer sk-test"
    assert "sk-test" not in path.read_text()
