"""The project's own OpenAI-compatible server (agentflow_env.llm.server): what it accepts, refuses
and returns, and how it batches, served in process over a real ASGI client around real engines
(a callable engine, so no model is needed; test_structured_engines.py runs it as a subprocess
around SmolLM2), and its CLI's argument errors."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agentflow_env.llm import CallableEngine, GenerationRequest, GenerationResult
from agentflow_env.llm.server import DEFAULT_MAX_TOKENS, create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Stop?"}]


class Recorder:
    """A batched engine that answers every request with a text fitting its constraint, and
    records what it was asked."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[GenerationRequest]] = []
        self.delay_s = delay_s

    def __call__(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.batches.append(list(requests))
        time.sleep(self.delay_s)
        out = []
        for r in requests:
            text = "STOP" if r.constraint is not None else "free text"
            if r.constraint is not None and r.constraint.kind == "json":
                text = "{}"
            out += [
                GenerationResult(
                    text=text,
                    finish_reason="stop",
                    token_ids=[11, 12],
                    logprobs=[-0.5, -0.25],
                    prompt_tokens=3,
                    completion_tokens=2,
                )
            ] * r.sampling.n
        return out


@pytest.fixture
def served() -> Iterator[tuple[TestClient, Recorder]]:
    recorder = Recorder()
    app = create_app(CallableEngine(recorder, batched=True), "m")
    with TestClient(app) as client:
        yield client, recorder


def post(client: TestClient, path: str = CHAT, **fields: Any) -> Any:
    body = {"model": "m", "messages": MESSAGES, **fields}
    if path.endswith("/completions") and "chat" not in path:
        body.pop("messages")
        body.setdefault("prompt", "Stop?")
    return client.post(path, json=body)


def test_a_constrained_chat_request_reaches_the_engine_with_its_settings(served) -> None:
    client, recorder = served
    reply = post(
        client,
        structured_outputs={"choice": ["STOP", "CONTINUE"]},
        temperature=0.5,
        top_p=0.9,
        max_tokens=7,
        stop="\n",
        seed=3,
        n=2,
        logprobs=True,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [c["message"]["content"] for c in body["choices"]] == ["STOP", "STOP"]
    assert body["choices"][0]["logprobs"]["content"][1]["logprob"] == -0.25
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    (request,) = recorder.batches[-1]
    assert request.constraint is not None and request.constraint.value == ["STOP", "CONTINUE"]
    s = request.sampling
    assert (s.temperature, s.top_p, s.max_tokens, s.stop, s.seed, s.n, s.logprobs) == (
        0.5,
        0.9,
        7,
        ("\n",),
        3,
        2,
        True,
    )


def test_completions_take_json_constraints_and_return_token_ids_when_asked(served) -> None:
    client, recorder = served
    schema = {"type": "object"}
    reply = post(
        client,
        "/v1/completions",
        structured_outputs={"json": schema},
        logprobs=1,
        return_tokens_as_token_ids=True,
    )
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["text"] == "{}" and choice["logprobs"]["tokens"] == ["token_id:11", "token_id:12"]
    request = recorder.batches[-1][0]
    assert request.prompt == "Stop?" and request.constraint.schema_dict == schema
    assert request.sampling.max_tokens == DEFAULT_MAX_TOKENS
    post(client, response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    assert recorder.batches[-1][0].constraint.schema_dict == schema
    post(client, response_format={"type": "text"})
    assert recorder.batches[-1][0].constraint is None


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"frequency_penalty": 0.5}, 400, "frequency_penalty: Extra inputs"),
        ({"stream": True}, 400, "stream"),
        ({"top_logprobs": 3}, 400, "top_logprobs"),
        ({"model": "other"}, 404, "'other' is not served here; served: 'm'"),
        ({"structured_outputs": {"regex": "("}}, 400, "bad constraint.*unclosed"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, 400, "exactly one"),
        ({"structured_outputs": {"pattern": "a"}}, 400, "pattern"),
        (
            {"structured_outputs": {"regex": "a"}, "response_format": {"type": "json_object"}},
            400,
            "not both",
        ),
        ({"response_format": {"type": "json_schema"}}, 400, "response_format must be"),
        ({"messages": []}, 400, "messages"),
    ],
)
def test_what_the_server_cannot_honour_is_refused_with_the_reason(
    served, fields: dict, status: int, message: str
) -> None:
    client, recorder = served
    reply = post(client, **fields)
    assert reply.status_code == status
    assert re.search(message, reply.json()["error"]["message"], re.DOTALL)
    assert recorder.batches == []  # nothing reached the engine


def test_requests_that_arrive_while_the_engine_works_share_its_next_call() -> None:
    recorder = Recorder(delay_s=0.5)
    with TestClient(create_app(CallableEngine(recorder, batched=True), "m")) as client:
        replies: list[int] = []
        threads = [
            threading.Thread(target=lambda: replies.append(post(client).status_code))
            for _ in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert replies == [200] * 6
    assert sum(len(b) for b in recorder.batches) == 6
    assert len(recorder.batches) < 6  # at least one call took several requests


def test_an_engine_failure_fails_its_batch_with_500() -> None:
    def broken(requests: Sequence[GenerationRequest]) -> list[str]:
        raise RuntimeError("out of memory")

    with TestClient(create_app(CallableEngine(broken, batched=True), "m")) as client:
        reply = post(client)
    assert reply.status_code == 500 and "out of memory" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("spec", "message"), [("openai:gpt@http://x/v1", "hf:"), ("hf:/no/such/model", "cannot load")]
)
def test_serve_cli_refuses_what_it_cannot_serve(spec: str, message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agentflow_env.llm", "serve", spec],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
