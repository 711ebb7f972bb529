"""An OpenAI-compatible chat completions endpoint on 127.0.0.1, for testing `st-bge data synth` end to end.

Why a server rather than mocks: the generator talks through the real `openai` client, whose retries, timeouts and
exceptions are what is under test; this answers `POST /v1/chat/completions` the way vLLM or OpenAI do (the
`chat.completion` object, OpenAI's error body), records every request (body and Authorization header), and
injects faults per passage: a passage whose text contains a key of `faults` gets that key's faults, one per
request, in order, before normal answers:

    "429"      429 with OpenAI's rate-limit error and `Retry-After: 0`
    "500"      500 with OpenAI's server error body
    "timeout"  answers normally, after `slow_s` seconds (longer than the client waits)
    "malformed" 200 whose message is prose, not the JSON list asked for
    "empty"    200 whose message is empty
    "bad_body" 200 whose body is not JSON at all
    "401"      401 with OpenAI's invalid-key error

A normal answer is the JSON list `["<n-th> question about <first words of the passage>", ...]` (n read from the
prompt's "Write N"), or `answers[key]` for a passage containing `key`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PASSAGE = re.compile(r"<passage>\n(.*?)\n</passage>", re.DOTALL)
_COUNT = re.compile(r"Write (\d+)")


class ChatServer:
    def __init__(
        self,
        faults: dict[str, list[str]] | None = None,
        answers: dict[str, list[str]] | None = None,
        delay_s: float = 0.0,
        slow_s: float = 2.0,
    ) -> None:
        self.faults = {key: list(kinds) for key, kinds in (faults or {}).items()}
        self.answers = answers or {}
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def passages_asked(self) -> list[str]:
        """The passage of every request received, in order."""
        return [_PASSAGE.search(r["body"]["messages"][-1]["content"]).group(1) for r in self.requests]

    def _fault(self, passage: str) -> str | None:
        with self._lock:
            for key, kinds in self.faults.items():
                if key in passage and kinds:
                    return kinds.pop(0)
        return None

    def _answer(self, passage: str, n: int) -> list[str]:
        for key, queries in self.answers.items():
            if key in passage:
                return queries
        words = " ".join(passage.split()[:6])
        return [f"question {number} about {words}" for number in range(1, n + 1)]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append({"body": body, "authorization": self.headers.get("Authorization")})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                prompt = body["messages"][-1]["content"]
                passage = _PASSAGE.search(prompt).group(1)
                time.sleep(server.delay_s)
                fault = server._fault(passage)
                if fault == "429":
                    error = {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}
                    return self._send(429, {"error": error}, {"Retry-After": "0"})
                if fault == "500":
                    return self._send(500, {"error": {"message": "The server had an error", "type": "server_error"}})
                if fault == "401":
                    error = {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                    return self._send(401, {"error": error})
                if fault == "bad_body":
                    return self._send_raw(200, b"<html>upstream proxy error</html>")
                if fault == "timeout":
                    time.sleep(server.slow_s)
                content = {
                    "malformed": "Sure! Here are some questions you could ask about this passage.",
                    "empty": "",
                }.get(fault)
                if content is None:
                    count = int(_COUNT.search(prompt).group(1)) if _COUNT.search(prompt) else 1
                    content = json.dumps(server._answer(passage, count), ensure_ascii=False)
                return self._send(200, _completion(body["model"], content))

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                self._send_raw(status, json.dumps(payload).encode(), headers)

            def _send_raw(self, status: int, data: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout under test)
                    pass

        return Handler


def _completion(model: str, content: str) -> dict:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
