"""A fake OpenAI-protocol server for fault injection: 429 with Retry-After, 5xx, resets, timeouts,
replies that drip a byte a second, empty, truncated, malformed and off-format replies.

Each POST to /v1/chat/completions takes the next scripted step, else (with `fault_rate`) a random
fault, else the `default` step (a normal reply from `reply(body)` unless told otherwise). Only for
tests: the real servers run elsewhere.

It also implements the Batch API (files + batches): a batch stays in progress while `batch_hold` is
clear, then completes, or expires after `batch_expire_after` lines with the rest written to the error
file as batch_expired; `batch_line_status` makes chosen lines of the first batch fail with a status.
"""
from __future__ import annotations

import email.parser
import itertools
import json
import random
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ["429", "500", "502", "503", "reset", "timeout", "empty", "null", "truncated", "malformed", "chatter"]


def plausible_reply(body: dict) -> str:
    """Numbered sentences for a Self-Instruct request; the input echoed back for a correction."""
    last = body["messages"][-1]["content"]
    m = re.search(r"list of (\d+) .* about (.+?)\. Each", last)
    if m:
        n, topic = int(m.group(1)), m.group(2)
        seed = sum(map(ord, last))
        subjects = ["My neighbour", "The old teacher", "Our small team", "A quiet student", "His younger sister",
                    "The local baker", "Every visitor", "Her best friend"]
        verbs = ["talks about", "often thinks about", "writes a note on", "reads a book on", "enjoys",
                 "asks questions about", "dreams about", "learns more on"]
        return "\n".join(f"{i + 1}. {subjects[(seed + i) % 8]} {verbs[(seed // 8 + i) % 8]} {topic} "
                         f"every {['morning', 'evening', 'weekend'][(seed + i) % 3]}." for i in range(n))
    return last.split(":", 1)[-1].strip()


def small_usage(body: dict) -> dict:
    return {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def full_usage(body: dict) -> dict:
    """The usage of a reply that spends its whole allowance: the prompt at the budget's own estimate
    and every one of max_tokens, so what a run reserves for a request is exactly what it is billed."""
    from distill.teacher.request import estimate_tokens

    pt, ct = estimate_tokens(body["messages"]), body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}


class _Handler(BaseHTTPRequestHandler):
    """One request to the fake server; the FakeOpenAI it belongs to holds the script and records."""

    @property
    def fake(self) -> "FakeOpenAI":
        return self.server.fake

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.fake.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
        self.fake.gets.append(self.path)
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[1:2] == ["files"] and parts[-1] == "content":
            return self._send_bytes(200, self.fake.files[parts[2]], "application/octet-stream")
        if parts[1:2] == ["batches"]:
            with self.fake._lock:
                if len(parts) == 2:
                    return self._send(200, {"object": "list", "has_more": False,
                                            "data": list(reversed(self.fake.batches.values()))})
                return self._send(200, self.fake._advance(parts[2]))
        self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.fake.models]})

    def do_POST(self):
        if self.path.startswith("/v1/files"):
            return self._upload_file()
        if self.path.startswith("/v1/batches"):
            return self._create_batch()
        return self._chat()

    def _upload_file(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        msg = email.parser.BytesParser().parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
        fields = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                  for p in msg.walk() if not p.is_multipart()}
        assert fields["purpose"].strip() == b"batch", fields.get("purpose")
        with self.fake._lock:
            fid = f"file-{next(self.fake._ids)}"
            self.fake.files[fid] = fields["file"]
        return self._send(200, {"id": fid, "object": "file", "bytes": len(fields["file"]),
                                "created_at": 0, "filename": "batch.jsonl", "purpose": "batch"})

    def _create_batch(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.fake._lock:
            bid = f"batch_{next(self.fake._ids)}"
            lines = [json.loads(x) for x in self.fake.files[body["input_file_id"]].splitlines() if x.strip()]
            self.fake.batch_lines += [x["custom_id"] for x in lines]
            self.fake.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": 0,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
            return self._send(200, self.fake.batches[bid])

    def _chat(self):
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        except (ValueError, TypeError):  # a client that gave up mid-request (after a reset)
            return
        with self.fake._lock:
            self.fake.requests.append(body)
            self.fake.times.append(time.monotonic())
            self.fake.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
            if self.fake.script:
                step = self.fake.script.pop(0)
            elif self.fake.fault_rate and self.fake.rng.random() < self.fake.fault_rate:
                step = {"fault": self.fake.rng.choice(self.fake.faults)}
            else:
                step = dict(self.fake.default)
            if "fault" in step:
                self.fake.injected[step["fault"]] = self.fake.injected.get(step["fault"], 0) + 1
        try:
            self._respond(body, step)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _respond(self, body, step):
        fault = step.get("fault")
        if fault in ("429", "500", "502", "503"):
            headers = {"Retry-After": "0"} if fault == "429" else {}
            return self._send(int(fault), {"error": {"message": f"injected {fault}"}}, headers)
        if fault == "reset":
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "timeout":
            time.sleep(self.fake.timeout_sleep_s)
            return
        if fault == "drip":  # headers at once, then a byte a second: no read ever times out
            data = json.dumps({"choices": [], "padding": " " * 4096}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(1.0)
            return
        if fault == "malformed":
            return self._send_bytes(200, b'{"id": "chatcmpl-fake", "choices": [{"index": 0, "message": {"content": "He')
        status = step.get("status", 200)
        if status != 200:
            # echo_auth: a careless server that quotes the request's credentials in its error
            echo = f" for {self.headers.get('Authorization')}" if step.get("echo_auth") else ""
            return self._send(status, {"error": {"message": f"injected {status}{echo}"}}, step.get("headers", {}))
        text = step.get("text")
        finish = step.get("finish_reason", "stop")
        if fault == "empty":
            text = ""
        elif fault == "truncated":
            text, finish = self.fake.reply(body)[:12], "length"
        elif fault == "chatter":
            text = "Sure! Here is the corrected sentence for you:"
        if text is None:
            text = self.fake.reply(body)
        if fault == "null":  # what some servers send for a refusal or a filtered reply
            text = None
        self._send(200, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text},
                         "logprobs": fake_logprobs(text or "", body.get("top_logprobs"))
                         if body.get("logprobs") else None}],
            "usage": self.fake.usage(body),
        })

    def _send(self, status, obj, headers=None):
        self._send_bytes(status, json.dumps(obj).encode(), headers=headers)

    def _send_bytes(self, status, data: bytes, content_type="application/json", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


class FakeOpenAI:
    def __init__(self, script: list[dict] | None = None, reply=plausible_reply, fault_rate: float = 0.0,
                 faults: list[str] = FAULTS, seed: int = 0, models: list[str] = ("fake-model",),
                 timeout_sleep_s: float = 1.5, batch_hold: threading.Event | None = None,
                 batch_expire_after: int | None = None, batch_line_status: dict[int, int] | None = None,
                 default: dict | None = None, usage=small_usage):
        self.script = list(script or [])
        self.usage = usage  # body -> the usage a reply reports (and what a hosted teacher would bill)
        self.default = dict(default or {"status": 200})  # the step of every POST the script does not cover
        self.reply = reply
        self.fault_rate, self.faults, self.rng = fault_rate, list(faults), random.Random(seed)
        self.models = list(models)
        self.timeout_sleep_s = timeout_sleep_s
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.headers_seen: list[dict] = []
        self.gets: list[str] = []  # the path of every GET (model listings, batch polls, file downloads)
        self.injected: dict[str, int] = {}
        self.batch_hold, self.batch_expire_after = batch_hold, batch_expire_after
        self.batch_line_status = dict(batch_line_status or {})
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_lines: list[str] = []  # custom_id of every line ever submitted in a batch
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _advance(self, bid: str) -> dict:
        """A batch's state on retrieve: in progress while held, then run (whole, or cut off by expiry)."""
        b = self.batches[bid]
        if b["status"] not in ("validating", "in_progress"):
            return b
        if self.batch_hold is not None and not self.batch_hold.is_set():
            b["status"] = "in_progress"
            return b
        lines = [json.loads(x) for x in self.files[b["input_file_id"]].splitlines() if x.strip()]
        first = sum(1 for x in self.batches.values() if x["status"] in ("completed", "expired")) == 0
        expire = self.batch_expire_after if first else None
        out, err = [], []
        for i, line in enumerate(lines):
            cid = line["custom_id"]
            if expire is not None and i >= expire:
                err.append({"id": f"batch_req_{i}", "custom_id": cid, "response": None, "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired."}})
                continue
            status = self.batch_line_status.get(i, 200) if first else 200
            if status != 200:
                err.append({"id": f"batch_req_{i}", "custom_id": cid, "error": None, "response": {
                    "status_code": status, "body": {"error": {"message": f"injected {status}"}}}})
                continue
            body = line["body"]
            out.append({"id": f"batch_req_{i}", "custom_id": cid, "error": None, "response": {
                "status_code": 200, "request_id": f"req_{i}", "body": {
                    "id": f"chatcmpl-{i}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": self.reply(body)}}],
                    "usage": self.usage(body)}}})
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                fid = f"file-{next(self._ids)}"
                self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                b[name] = fid
        b["status"] = "expired" if expire is not None and expire < len(lines) else "completed"
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        return b

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def fake_logprobs(text: str, k: int | None) -> dict:
    """`logprobs.content` for a reply: word pieces as tokens, each the likeliest of k alternatives."""
    pieces = re.findall(r"\s*\S+", text)
    return {"content": [{"token": p, "logprob": -0.1, "bytes": list(p.encode()),
                         "top_logprobs": [{"token": p, "logprob": -0.1, "bytes": list(p.encode())}] +
                                         [{"token": f" alt{j}", "logprob": -3.0 - j, "bytes": None} for j in range((k or 1) - 1)]}
                        for p in pieces]}
