"""A fault-injecting OpenAI-compatible server: a real HTTP server on 127.0.0.1 for the fault suite.

The request's model name picks the behaviour, so one server serves every mode at once
(``openai:fault-500@URL``, ``openai:fault-hang@URL``...):

============== =====================================================================
``ok``         a completion that every role can read (planner, executor, verifier, generator)
``500``        HTTP 500 with an OpenAI-style error body
``429``        HTTP 429 with ``Retry-After: <retry_after>`` seconds
``hang``       no response until ``hang_s`` passes (or the server closes)
``invalid-json`` HTTP 200 whose body is not JSON
``empty-choices`` HTTP 200 with ``"choices": []``
``null-content`` HTTP 200 whose message has ``"content": null``
``drop``       the connection is closed without a response
``flaky``      each distinct request fails once (HTTP 500), then succeeds: alternating 500/ok
``mixed``      by a hash of the request: one in eight answers 500 every time, one in eight
               hangs, the rest succeed (some episodes of a batch fail, the others do not)
============== =====================================================================

:data:`EXPECTED_KIND` is the :data:`agentflow_env.infra.InfraKind` each failing mode must end in
once the engine's retries are spent. Every request is recorded (time, mode, path) so tests can
check retries and their spacing. ``python -m tests.faults`` serves until interrupted.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EXPECTED_KIND", "FAILING_MODES", "MODES", "OK_TEXT", "FaultServer"]

OK_TEXT = "Tool Name: Finish\nConclusion: STOP\n<answer>42</answer>\nCommand: 42"
"""parses as a finishing planner step, a STOP verdict, an answer and a tool command"""

EXPECTED_KIND = {
    "500": "engine_server_error",
    "429": "engine_rate_limited",
    "hang": "engine_timeout",
    "invalid-json": "engine_bad_response",
    "empty-choices": "engine_bad_response",
    "null-content": "engine_bad_response",
    "drop": "engine_connection",
}
FAILING_MODES = tuple(EXPECTED_KIND)
MODES = ("ok", *FAILING_MODES, "flaky", "mixed")


class FaultServer:
    """Serve the modes above on ``127.0.0.1`` (a free port) from a daemon thread.

    Args:
        retry_after: seconds sent in the ``Retry-After`` header of ``429`` answers.
        hang_s: how long ``hang`` waits before answering (the client gives up first).
    """

    def __init__(self, *, retry_after: float = 1.0, hang_s: float = 60.0) -> None:
        self.retry_after, self.hang_s = retry_after, hang_s
        self.records: list[tuple[float, str, str]] = []
        """(monotonic time, mode, path) of every request"""
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                body = {"object": "list", "data": [{"id": f"fault-{m}"} for m in MODES]}
                outer._send(self, 200, json.dumps(body).encode())

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer._handle(self, raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def spec(self, mode: str) -> str:
        """The engine spec that gets ``mode``: ``openai:fault-<mode>@<url>``."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {', '.join(MODES)}")
        return f"openai:fault-{mode}@{self.url}"

    def count(self, mode: str) -> int:
        """Requests received for ``mode`` so far."""
        with self._lock:
            return sum(1 for _, m, _ in self.records if m == mode)

    # ------------------------------------------------------------------------------ serving
    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(handler, 400, b'{"error": {"message": "request body is not JSON"}}')
            return
        model = str(body.get("model", ""))
        mode = model.removeprefix("fault-") if model.startswith("fault-") else "ok"
        key = hashlib.sha256(raw).hexdigest()
        with self._lock:
            self.records.append((time.monotonic(), mode, handler.path))
            self._seen[key] += 1
            attempt = self._seen[key]
        try:
            self._answer(handler, mode, attempt, body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            pass

    def _answer(
        self, handler: BaseHTTPRequestHandler, mode: str, attempt: int, body: dict[str, Any]
    ) -> None:
        error = {"error": {"message": f"injected fault {mode}", "type": "server_error"}}
        if mode == "mixed":
            mode = {0: "500", 1: "hang"}.get(_digest(body) % 8, "ok")
        if mode == "500" or (mode == "flaky" and attempt % 2 == 1):
            self._send(handler, 500, json.dumps(error).encode())
        elif mode == "429":
            headers = {"Retry-After": f"{self.retry_after:g}"}
            self._send(handler, 429, json.dumps(error).encode(), headers)
        elif mode == "hang":
            self._closing.wait(self.hang_s)
            self._send(handler, 200, json.dumps(_completion(body, OK_TEXT)).encode())
        elif mode == "invalid-json":
            self._send(handler, 200, b'{"id": "x", "choices": [{"index": 0, "message": ')
        elif mode == "empty-choices":
            self._send(
                handler, 200, json.dumps({**_completion(body, OK_TEXT), "choices": []}).encode()
            )
        elif mode == "null-content":
            self._send(handler, 200, json.dumps(_completion(body, None)).encode())
        elif mode == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        else:  # ok, and flaky's second attempts
            self._send(handler, 200, json.dumps(_completion(body, OK_TEXT)).encode())

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _digest(body: dict[str, Any]) -> int:
    """A stable hash of a request's content (not of its encoding or seed)."""
    content = json.dumps(body.get("messages") or body.get("prompt"), sort_keys=True)
    return int(hashlib.sha256(content.encode()).hexdigest()[:8], 16)


def _completion(body: dict[str, Any], text: str | None) -> dict[str, Any]:
    """A chat completion (``text`` None: ``content: null``) or a text completion."""
    chat = "messages" in body
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {
        "id": "fault-completion",
        "object": "chat.completion" if chat else "text_completion",
        "created": 0,
        "model": str(body.get("model", "")),
        "choices": [choice],
        "usage": {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16},
    }


if __name__ == "__main__":
    server = FaultServer()
    sys.stdout.write(f"fault server at {server.url} (models: fault-{', fault-'.join(MODES)})\n")
    sys.stdout.flush()
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.close()
