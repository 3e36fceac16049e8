"""OpenAIEngine against real local HTTP servers: a scripted stdlib server on 127.0.0.1 (errors,
retries, timeouts, what reaches the backend) and a real ``transformers serve`` process serving the
tiny model."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentflow_env.llm import (
    EngineAuthError,
    EngineError,
    GenerationRequest,
    LogprobsUnavailableError,
    ModelNotFoundError,
)
from agentflow_env.llm.openai_engine import PLACEHOLDER_API_KEY, OpenAIEngine

chat = GenerationRequest.chat
Q = "Where was Ada Lane born? Give the capital of Peru."


class ScriptedServer:
    """A real HTTP server speaking enough of the OpenAI API. Each request pops the next scripted
    behaviour (``{"status":..}``, ``{"hang": seconds}``, ``{"delay": seconds}``), else answers
    normally; every request's path, headers and JSON body are recorded."""

    def __init__(self) -> None:
        self.script: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.text = "Tool Name: Finish\n<answer>42</answer>"
        self.honour_n = True
        self.send_logprobs = True
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer._handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        with self.lock:
            self.records.append(
                {"path": handler.path, "body": body, "auth": handler.headers.get("Authorization")}
            )
            step = self.script.pop(0) if self.script else {}
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            time.sleep(step.get("hang", 0) + step.get("delay", 0))
            if "status" in step:
                payload = json.dumps(
                    step.get("body", {"error": {"message": f"scripted {step['status']}"}})
                ).encode()
                handler.send_response(step["status"])
                for key, value in step.get("headers", {}).items():
                    handler.send_header(key, value)
            else:
                payload = json.dumps(self._completion(handler.path, body)).encode()
                handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass
        finally:
            with self.lock:
                self.inflight -= 1

    def _completion(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        n = body.get("n", 1) if self.honour_n else 1
        words = self.text.split(" ")
        as_ids = body.get("return_tokens_as_token_ids")
        tokens = [
            f"token_id:{100 + i}" if as_ids else (w if i == 0 else " " + w)
            for i, w in enumerate(words)
        ]
        usage = {
            "prompt_tokens": 7,
            "completion_tokens": len(words) * n,
            "total_tokens": 7 + len(words) * n,
        }
        if path.endswith("/chat/completions"):
            lp = {
                "content": [
                    {"token": t, "logprob": -0.25, "bytes": None, "top_logprobs": []}
                    for t in tokens
                ]
            }
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": self.text},
                    "finish_reason": "stop",
                    "logprobs": lp if body.get("logprobs") and self.send_logprobs else None,
                }
                for i in range(n)
            ]
            return {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": choices,
                "usage": usage,
            }
        lp = {
            "tokens": tokens,
            "token_logprobs": [-0.5] * len(tokens),
            "top_logprobs": None,
            "text_offset": list(range(len(tokens))),
        }
        choices = [
            {
                "index": i,
                "text": self.text,
                "finish_reason": "length",
                "logprobs": lp if body.get("logprobs") and self.send_logprobs else None,
            }
            for i in range(n)
        ]
        return {
            "id": "c",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": choices,
            "usage": usage,
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


def engine_for(srv: ScriptedServer, **kwargs: Any) -> OpenAIEngine:
    defaults: dict[str, Any] = {
        "timeout_s": 5.0,
        "max_retries": 2,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    }
    return OpenAIEngine("test-model", srv.url, **(defaults | kwargs))


# ------------------------------------------------------------------------------ scripted server


def test_every_sampling_setting_reaches_the_backend(server: ScriptedServer, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with engine_for(server) as engine:
        out = engine.generate(
            [
                chat(
                    Q,
                    system="be brief",
                    temperature=0.7,
                    top_p=0.9,
                    max_tokens=33,
                    stop=("X", "Y"),
                    seed=5,
                    n=2,
                    logprobs=True,
                ),
                GenerationRequest(
                    prompt="raw text", sampling={"max_tokens": 9, "logprobs": True, "seed": 1}
                ),
            ]
        )
    first, second = sorted(server.records, key=lambda r: r["path"])
    assert first["path"] == "/v1/chat/completions" and second["path"] == "/v1/completions"
    body = first["body"]
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": Q},
    ]
    assert {
        k: body[k]
        for k in ("model", "temperature", "top_p", "max_tokens", "stop", "seed", "n", "logprobs")
    } == {
        "model": "test-model",
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 33,
        "stop": ["X", "Y"],
        "seed": 5,
        "n": 2,
        "logprobs": True,
    }
    assert second["body"]["prompt"] == "raw text" and second["body"]["logprobs"] == 1
    assert first["auth"] == f"Bearer {PLACEHOLDER_API_KEY}"  # no key needed for local servers
    assert len(out) == 3 and all(r.text == server.text for r in out)
    assert out[0].logprobs == [-0.25] * 3 and out[0].token_ids is None  # standard API: no ids
    assert (
        out[2].logprobs == [-0.5] * 3
        and out[2].finish_reason == "length"
        and out[2].prompt_tokens == 7
    )


def test_token_ids_extension_and_extra_body(server: ScriptedServer) -> None:
    with engine_for(server, token_ids_extension=True, extra_body={"top_k": 5}) as engine:
        (res,) = engine.generate([chat(Q, logprobs=True)])
    assert server.records[0]["body"]["return_tokens_as_token_ids"] is True
    assert server.records[0]["body"]["top_k"] == 5
    assert res.token_ids == [100, 101, 102]


def test_500_then_200_is_retried(server: ScriptedServer) -> None:
    server.script = [{"status": 500}, {"status": 503}]
    with engine_for(server) as engine:
        (res,) = engine.generate([chat(Q)])
    assert res.error is None and res.text == server.text and len(server.records) == 3


def test_429_is_retried_with_retry_after_then_reported(server: ScriptedServer) -> None:
    server.script = [{"status": 429, "headers": {"Retry-After": "0.3"}}] * 3
    with engine_for(server, max_retries=2, backoff_max_s=1.0) as engine:
        start = time.monotonic()
        (res,) = engine.generate([chat(Q)])
        elapsed = time.monotonic() - start
    assert len(server.records) == 3 and elapsed >= 0.6  # two waits of Retry-After
    assert res.text == "" and "429" in res.error and "3 attempts" in res.error


def test_408_is_retried_and_other_4xx_are_not(server: ScriptedServer) -> None:
    server.script = [{"status": 408}]
    with engine_for(server) as engine:
        (res,) = engine.generate([chat(Q)])
    assert res.error is None and len(server.records) == 2
    server.records.clear()
    server.script = [{"status": 422, "body": {"error": {"message": "bad field"}}}] * 3
    with engine_for(server) as engine:
        (res,) = engine.generate([chat(Q)])
    assert len(server.records) == 1, "a request the server rejects is not sent again"
    assert res.error_kind == "engine_rejected" and "bad field" in (res.error or "")


def test_retry_after_as_an_http_date_and_its_bound(server: ScriptedServer) -> None:
    from email.utils import formatdate

    server.script = [{"status": 503, "headers": {"Retry-After": formatdate(time.time() + 1.2)}}]
    with engine_for(server) as engine:
        start = time.monotonic()
        (res,) = engine.generate([chat(Q)])
    assert res.error is None and time.monotonic() - start >= 0.15  # the date, not ~0.01 s
    server.script = [{"status": 429, "headers": {"Retry-After": "3600"}}]
    with engine_for(server, max_retry_after_s=0.2) as engine:
        start = time.monotonic()
        (res,) = engine.generate([chat(Q)])
    assert res.error is None and time.monotonic() - start < 2.0  # an hour is not waited


def test_401_raises_auth_error_without_retrying(server: ScriptedServer) -> None:
    server.script = [{"status": 401, "body": {"error": {"message": "Incorrect API key"}}}]
    with (
        engine_for(server, api_key="sk-wrong") as engine,
        pytest.raises(EngineAuthError, match="Incorrect API key"),
    ):
        engine.generate([chat(Q)])
    assert len(server.records) == 1 and server.records[0]["auth"] == "Bearer sk-wrong"


@pytest.mark.parametrize(
    "step",
    [
        {"status": 404, "body": {"error": {"message": "The model `test-model` does not exist"}}},
        {"status": 400, "body": {"detail": "Server is pinned to 'other'; requested 'test-model'."}},
    ],
)
def test_unknown_model_raises_model_not_found(server: ScriptedServer, step: dict[str, Any]) -> None:
    server.script = [step]
    with engine_for(server) as engine, pytest.raises(ModelNotFoundError, match="test-model"):
        engine.generate([chat(Q)])
    assert len(server.records) == 1


@pytest.mark.parametrize(
    "message",
    ["prompt is too long", "This model's maximum context length is 4096 tokens, you asked 5000"],
)
def test_other_400_fails_that_request_only(server: ScriptedServer, message: str) -> None:
    server.script = [{"status": 400, "body": {"error": {"message": message}}}]
    with engine_for(server, max_concurrency=1) as engine:
        bad, good = engine.generate([chat(Q), chat("second")])
    assert message in bad.error and bad.text == "" and bad.finish_reason == "error"
    assert good.error is None and good.text == server.text and len(server.records) == 2


def test_a_hanging_server_times_out_and_is_retried(server: ScriptedServer) -> None:
    server.script = [{"hang": 3.0}, {"hang": 3.0}]
    with engine_for(server, timeout_s=0.3, max_retries=1) as engine:
        start = time.monotonic()
        (res,) = engine.generate([chat(Q)])
        elapsed = time.monotonic() - start
    assert "timed out after 0.3s" in res.error and len(server.records) == 2
    assert elapsed < 2.0


def test_connection_refused_is_reported_after_retries() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = OpenAIEngine(
        "m", f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_base_s=0.01, timeout_s=2
    )
    try:
        (res,) = engine.generate([chat(Q)])
    finally:
        engine.close()
    assert res.error and "2 attempts" in res.error and "Connection" in res.error


def test_concurrency_is_bounded(server: ScriptedServer) -> None:
    server.script = [{"delay": 0.2}] * 6
    with engine_for(server, max_concurrency=2) as engine:
        out = engine.generate([chat(f"q{i}") for i in range(6)])
    assert len(out) == 6 and all(r.error is None for r in out)
    assert server.max_inflight == 2


def test_a_server_ignoring_n_is_topped_up_with_distinct_seeds(server: ScriptedServer) -> None:
    server.honour_n = False
    with engine_for(server) as engine:
        out = engine.generate([chat(Q, n=3, seed=10, temperature=1.0)])
    assert len(out) == 3 and len(server.records) == 3
    assert sorted(r["body"]["seed"] for r in server.records) == [10, 11, 12]
    assert sorted(r["body"]["n"] for r in server.records) == [1, 1, 3]


def test_missing_logprobs_raise_a_typed_error(server: ScriptedServer) -> None:
    server.send_logprobs = False
    with (
        engine_for(server) as engine,
        pytest.raises(LogprobsUnavailableError, match="transformers serve"),
    ):
        engine.generate([chat(Q, logprobs=True)])


def test_stop_strings_are_enforced_client_side_too(server: ScriptedServer) -> None:
    with engine_for(server) as engine:
        (res,) = engine.generate([chat(Q, stop=("<answer>",), logprobs=True)])
    assert res.text == "Tool Name: Finish\n" and res.finish_reason == "stop"
    assert len(res.logprobs) == 3  # tokens through the one holding the stop string


def test_generate_works_inside_a_running_loop_from_threads_and_async(
    server: ScriptedServer,
) -> None:
    with engine_for(server) as engine:

        async def inside_loop() -> tuple[str, str]:
            blocking = engine.generate([chat("sync in loop")])[0].text
            awaited = (await engine.agenerate([chat("async")]))[0].text
            return blocking, awaited

        assert asyncio.run(inside_loop()) == (server.text, server.text)
        results: list[str] = []
        threads = [
            threading.Thread(target=lambda: results.append(engine.generate([chat("t")])[0].text))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert results == [server.text] * 4


def test_closed_engine_and_bad_arguments(server: ScriptedServer) -> None:
    engine = engine_for(server)
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        engine.generate([chat(Q)])
    with pytest.raises(EngineError, match="max_concurrency"):
        OpenAIEngine("m", server.url, max_concurrency=0)
    with pytest.raises(EngineError, match="max_tokens_field"):
        OpenAIEngine("m", server.url, max_tokens_field="tokens")


# ------------------------------------------------------------------------------ transformers serve


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path) -> Iterator[str]:
    """A real ``transformers serve`` process serving the tiny model; yields its /v1 URL."""
    from agentflow_env.llm.serve import SERVING_MODULES, serve_transformers

    for module in SERVING_MODULES:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"transformers serve needs {module} (pip install 'transformers[serving]')")
    with serve_transformers(tiny_model_dir, timeout_s=90) as server:
        yield server.url


@pytest.fixture(scope="module")
def served_engine(served: str, tiny_model_dir: Path) -> Iterator[OpenAIEngine]:
    engine = OpenAIEngine(
        str(tiny_model_dir), served, timeout_s=60, max_retries=1, max_concurrency=4
    )
    yield engine
    engine.close()


@pytest.mark.slow
def test_served_greedy_output_matches_the_local_hf_engine(
    served_engine: OpenAIEngine, tiny_model_dir: Path
) -> None:
    from agentflow_env.llm.hf_engine import HFEngine

    (remote,) = served_engine.generate([chat(Q)])
    (local,) = HFEngine(tiny_model_dir).generate([chat(Q)])
    assert remote.error is None and "Tool Name:" in remote.text
    assert remote.text == local.text and remote.finish_reason == "stop"


@pytest.mark.slow
def test_served_max_tokens_stop_and_raw_prompts_are_honoured(served_engine: OpenAIEngine) -> None:
    (full,) = served_engine.generate([chat(Q)])
    short, stopped, raw = served_engine.generate(
        [
            chat(Q, max_tokens=4),
            chat(Q, stop=("Sub-Goal",)),
            GenerationRequest(
                prompt="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                sampling={"max_tokens": 6},
            ),
        ]
    )
    assert (
        short.finish_reason == "length"
        and short.completion_tokens == 4
        and full.text.startswith(short.text)
    )
    assert (
        stopped.text == full.text[: full.text.index("Sub-Goal")] and stopped.finish_reason == "stop"
    )
    assert raw.error is None and raw.text and raw.completion_tokens <= 6


@pytest.mark.slow
def test_served_seed_temperature_and_n(served_engine: OpenAIEngine) -> None:
    first = served_engine.generate([chat(Q, temperature=1.0, seed=7, max_tokens=30)])
    again = served_engine.generate([chat(Q, temperature=1.0, seed=7, max_tokens=30)])
    assert first[0].text == again[0].text  # seeded sampling is reproducible there too
    samples = served_engine.generate(
        [chat(Q, temperature=1.5, seed=s, max_tokens=30) for s in range(6)]
    )
    assert len({r.text for r in samples}) >= 2  # temperature reached the sampler
    several = served_engine.generate([chat(Q, temperature=1.0, seed=1, n=2, max_tokens=10)])
    assert len(several) == 2 and all(r.error is None for r in several)  # n topped up


@pytest.mark.slow
def test_served_logprobs_and_wrong_model_raise_typed_errors(
    served_engine: OpenAIEngine, served: str
) -> None:
    with pytest.raises(LogprobsUnavailableError):
        served_engine.generate([chat(Q, logprobs=True, max_tokens=5)])
    with (
        OpenAIEngine("no-such-model", served, max_retries=0) as wrong,
        pytest.raises(ModelNotFoundError),
    ):
        wrong.generate([chat(Q, max_tokens=5)])
