"""An OpenAI-compatible judge server on 127.0.0.1 for tests: real sockets, real HTTP.

``POST /v1/chat/completions`` answers score prompts (``logprobs`` set) with top logprobs from
``scores(text)`` and verdict prompts with ``verdict(text)``. Failures on demand:

* ``fail``: HTTP statuses to answer first, one per request (``[500, 500]``);
* ``mode = "fail"``: every request fails with 500; ``mode = "fail_first"`` with ``n``: the
  first ``n`` requests do. These errors echo the Authorization header, as some proxies do;
* ``key``: when set, any other bearer token gets 401.

>>> with JudgeServer() as s:
...     s.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def spread_scores(text: str) -> list[tuple[str, float]]:
    """A score between 40 and 89 that depends on the text: some spread between answers."""
    return [(str(40 + len(text) % 50), 0.9), ("x", 0.1)]


class JudgeServer:
    def __init__(self, scores: Callable[[str], list[tuple[str, float]]] = spread_scores,
                 verdict: Callable[[str], str] = lambda text: "ANSWERS", key: str | None = None) -> None:
        self.scores, self.verdict, self.key = scores, verdict, key
        self.requests: list[dict] = []
        self.fail: list[int] = []
        self.mode, self.n, self.seen, self.auth = "ok", 0, 0, set()
        self.delay = 0.0
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization", "")
                with outer.lock:
                    outer.requests.append({"path": self.path, "auth": auth or None, "body": body})
                    outer.seen += 1
                    outer.auth.add(auth)
                    echo = outer.mode == "fail" or (outer.mode == "fail_first" and outer.seen <= outer.n)
                    status = 500 if echo else (outer.fail.pop(0) if outer.fail else 200)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    time.sleep(outer.delay)
                    if status == 200 and outer.key is not None and auth != f"Bearer {outer.key}":
                        status = 401
                    if status == 200 and self.path != "/v1/chat/completions":
                        status = 404
                    if status == 200:
                        payload = outer.answer(body)
                    elif echo:
                        payload = {"error": {"message": f"upstream error; request had {auth}; "
                                                        f"key={auth.split(' ')[-1]}"}}
                    else:
                        payload = {"error": {"message": f"status {status}"}}
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, body: dict) -> dict:
        text = body["messages"][-1]["content"]
        if body.get("logprobs"):
            tops = self.scores(text)
            top = [{"token": t, "logprob": math.log(p)} for t, p in tops][: body.get("top_logprobs") or None]
            return {"choices": [{"index": 0, "message": {"role": "assistant", "content": tops[0][0]},
                                 "logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.verdict(text)}}]}

    def judge_overrides(self, cache=None, model: str = "test-judge") -> list[str]:
        """Stage overrides that point ``judge=openai`` here (no retries; the key's variable
        must be set in the stage's environment)."""
        args = ["judge=openai", f"judge.base_url={self.url}", f"judge.model={model}",
                "judge.retries=0", "judge.backoff_s=0.01", "judge.max_concurrency=1"]
        return args + ([f"paths.cache={cache}"] if cache is not None else [])

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> JudgeServer:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()
