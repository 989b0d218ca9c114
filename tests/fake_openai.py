"""A fake OpenAI-protocol server for fault injection (429 with Retry-After, 5xx, garbage).

Each POST to /v1/chat/completions takes the next scripted behaviour; when the script runs out it
answers normally, echoing the last user message. Only for tests: the real servers run elsewhere.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, script: list[dict] | None = None, reply=None):
        self.script = list(script or [])
        self.reply = reply or (lambda body: body["messages"][-1]["content"])
        self.requests: list[dict] = []
        self.times: list[float] = []
        self.headers_seen: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests.append(body)
                    outer.times.append(time.monotonic())
                    outer.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                    step = outer.script.pop(0) if outer.script else {"status": 200}
                status = step.get("status", 200)
                if status != 200:
                    self._send(status, {"error": {"message": f"injected {status}", "type": "fake"}},
                               headers=step.get("headers", {}))
                    return
                text = step.get("text", outer.reply(body))
                self._send(200, {
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": step.get("finish_reason", "stop"),
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                })

            def _send(self, status, obj, headers=None):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
