"""The project's own OpenAI-compatible server: any engine (a local transformers model) over HTTP,
constraints included.

    python -m agentflow_env.llm serve hf:smollm2-135m-instruct --port 8000
    # then: openai:smollm2-135m-instruct@http://127.0.0.1:8000/v1

Unlike ``transformers serve`` (which ignores ``response_format``, ``n`` and ``logprobs``), it
honours every field it accepts and refuses the rest with HTTP 400 naming them, so a client never
gets output produced under settings it did not ask for:

- ``POST /v1/chat/completions`` and ``POST /v1/completions`` (no streaming): ``model``,
  ``messages`` / ``prompt``, ``temperature`` (default 1.0, as in the OpenAI API), ``top_p``,
  ``max_tokens`` / ``max_completion_tokens`` (default 256), ``stop``, ``seed``, ``n``,
  ``logprobs`` (the sampled token's only: chat ``top_logprobs`` must be 0, completions
  ``logprobs`` 0 or 1, and no alternatives come back), vLLM's
  ``return_tokens_as_token_ids``, and constraints as vLLM takes them,
  ``structured_outputs: {"choice" | "regex" | "json" | "grammar": ...}``, or OpenAI's
  ``response_format`` (``json_schema``, ``json_object``, ``text``);
- ``GET /v1/models``, ``GET /health``.

Requests that arrive while the engine is busy are batched into its next ``generate`` call (one
call per batch of up to ``max_batch`` requests; the engine batches rows itself). A constraint
that does not compile gets HTTP 400 before it joins a batch; an engine failure fails the requests
of its batch with HTTP 500. Built on starlette and uvicorn (the ``serve`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentflow_env.llm.base import (
    ChatMessage,
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)
from agentflow_env.llm.common import EngineDependencyError, EngineError
from agentflow_env.llm.constraints import Constraint

__all__ = ["DEFAULT_MAX_TOKENS", "create_app", "run_server"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
"""``max_tokens`` of a request that sets none"""


class _StructuredOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    choice: list[str] | None = None
    regex: str | None = None
    json_schema: dict[str, Any] | bool | str | None = Field(default=None, alias="json")
    grammar: str | None = None

    def constraint(self) -> Constraint:
        given = {k: v for k, v in self.model_dump(by_alias=True).items() if v is not None}
        if len(given) != 1:
            raise ValueError(
                "structured_outputs takes exactly one of choice, regex, json, grammar; "
                f"got {sorted(given) or 'none'}"
            )
        ((kind, value),) = given.items()
        if kind == "choice":
            return Constraint.choice(value)
        if kind == "regex":
            return Constraint.regex(value)
        if kind == "json":
            return Constraint.json(json.loads(value) if isinstance(value, str) else value)
        return Constraint.lark(value)


class _Body(BaseModel):
    """Fields both endpoints accept (unknown ones are refused, not ignored)."""

    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=64)
    stream: Literal[False] = False
    top_logprobs: Literal[0] | None = None
    return_tokens_as_token_ids: bool = False
    structured_outputs: _StructuredOutputs | None = None
    response_format: dict[str, Any] | None = None

    def sampling(self, logprobs: bool) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            stop=tuple(stop),
            seed=self.seed,
            n=self.n,
            logprobs=logprobs,
        )

    def constraint(self) -> Constraint | None:
        if self.structured_outputs is not None and self.response_format is not None:
            raise ValueError("give structured_outputs or response_format, not both")
        if self.structured_outputs is not None:
            return self.structured_outputs.constraint()
        fmt = self.response_format
        if fmt is None or fmt.get("type") == "text":
            return None
        if fmt.get("type") == "json_object":
            return Constraint.json({"type": "object"})
        schema = (fmt.get("json_schema") or {}).get("schema")
        if fmt.get("type") != "json_schema" or schema is None:
            raise ValueError(
                "response_format must be {'type': 'text' | 'json_object'} or "
                "{'type': 'json_schema', 'json_schema': {'schema': {...}}}"
            )
        return Constraint.json(schema)


class _ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False


class _CompletionBody(_Body):
    prompt: str
    logprobs: int | None = Field(default=None, ge=0, le=1)
    """0 or 1: the sampled token's log-prob (``top_logprobs`` stays null)"""

    @model_validator(mode="before")
    @classmethod
    def _one_prompt(cls, data: Any) -> Any:
        prompt = data.get("prompt") if isinstance(data, dict) else None
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            data = {**data, "prompt": prompt[0]}  # the openai client may send a list of one
        return data


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class _Batcher:
    """Collects the requests that arrive while the engine works; one ``generate`` per batch."""

    def __init__(self, engine: Engine, max_batch: int) -> None:
        self.engine, self.max_batch = engine, max_batch
        self.queue: asyncio.Queue[tuple[GenerationRequest, asyncio.Future[Any]]] = asyncio.Queue()

    async def submit(self, request: GenerationRequest) -> list[GenerationResult]:
        future: asyncio.Future[list[GenerationResult]] = asyncio.get_running_loop().create_future()
        await self.queue.put((request, future))
        return await future

    async def run(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            requests = [request for request, _ in items]
            try:
                results = await asyncio.to_thread(self.engine.generate, requests)
            except Exception as exc:  # every request of the batch gets the engine's error
                logger.exception("the engine failed on a batch of %d requests", len(items))
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for request, future in items:
                end = start + request.sampling.n
                if not future.done():
                    future.set_result(results[start:end])
                start = end


def _token_text(engine: Engine, token_id: int, as_ids: bool) -> str:
    tokenizer = getattr(engine, "tokenizer", None)
    if as_ids or tokenizer is None:
        return f"token_id:{token_id}"
    return str(tokenizer.decode([token_id]))


def _usage(results: Sequence[GenerationResult]) -> dict[str, int]:
    prompt = results[0].prompt_tokens or 0 if results else 0
    completion = sum(r.completion_tokens or 0 for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _chat_choice(engine: Engine, i: int, r: GenerationResult, body: _ChatBody) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": i,
        "message": {"role": "assistant", "content": r.text},
        "finish_reason": r.finish_reason,
        "logprobs": None,
    }
    if body.logprobs:
        tokens = [
            _token_text(engine, t, body.return_tokens_as_token_ids) for t in r.token_ids or []
        ]
        choice["logprobs"] = {
            "content": [
                {"token": t, "logprob": lp, "bytes": None, "top_logprobs": []}
                for t, lp in zip(tokens, r.logprobs or [], strict=False)
            ]
        }
    return choice


def _text_choice(
    engine: Engine, i: int, r: GenerationResult, body: _CompletionBody
) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": i,
        "text": r.text,
        "finish_reason": r.finish_reason,
        "logprobs": None,
    }
    if body.logprobs is not None:
        tokens = [
            _token_text(engine, t, body.return_tokens_as_token_ids) for t in r.token_ids or []
        ]
        choice["logprobs"] = {
            "tokens": tokens,
            "token_logprobs": list(r.logprobs or []),
            "top_logprobs": None,
            "text_offset": [],
        }
    return choice


def create_app(engine: Engine, model_name: str, *, max_batch: int = 64) -> Any:
    """A starlette app serving ``engine`` as ``model_name`` (see the module docstring)."""
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError as exc:
        raise EngineDependencyError(
            f"the server needs starlette and uvicorn: pip install 'agentflow-gym[serve]' ({exc})"
        ) from exc
    batcher = _Batcher(engine, max_batch)

    def error(exc: _HTTPError) -> JSONResponse:
        body = {"error": {"message": exc.message, "type": exc.kind, "code": exc.status}}
        return JSONResponse(body, status_code=exc.status)

    async def parse(request: Request, model: type[_Body]) -> tuple[Any, Constraint | None]:
        try:
            body = model.model_validate(await request.json())
        except ValueError as exc:  # bad JSON, or a ValidationError naming every bad field
            raise _HTTPError(400, _describe(exc)) from exc
        if body.model != model_name:
            raise _HTTPError(
                404, f"model {body.model!r} is not served here; served: {model_name!r}", "NotFound"
            )
        try:
            constraint = body.constraint()
            if constraint is not None:
                from agentflow_env.llm.structured import check_constraint

                check_constraint(constraint)
        except (ValueError, EngineError) as exc:  # InvalidConstraintError is both
            raise _HTTPError(400, f"bad constraint: {exc}") from exc
        return body, constraint

    async def generate(request: GenerationRequest) -> list[GenerationResult]:
        try:
            results = await batcher.submit(request)
        except Exception as exc:
            raise _HTTPError(500, f"{type(exc).__name__}: {exc}", "server_error") from exc
        failed = [r.error for r in results if r.error]
        if failed:
            raise _HTTPError(500, failed[0], "server_error")
        return results

    def envelope(
        kind: str, choices: list[dict[str, Any]], results: list[GenerationResult]
    ) -> JSONResponse:
        return JSONResponse(
            {
                "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
                "object": kind,
                "created": int(time.time()),
                "model": model_name,
                "choices": choices,
                "usage": _usage(results),
            }
        )

    async def chat(request: Request) -> JSONResponse:
        try:
            body, constraint = await parse(request, _ChatBody)
            gen = GenerationRequest(
                messages=tuple(body.messages),
                sampling=body.sampling(body.logprobs),
                constraint=constraint,
            )
            results = await generate(gen)
        except _HTTPError as exc:
            return error(exc)
        choices = [_chat_choice(engine, i, r, body) for i, r in enumerate(results)]
        return envelope("chat.completion", choices, results)

    async def completions(request: Request) -> JSONResponse:
        try:
            body, constraint = await parse(request, _CompletionBody)
            gen = GenerationRequest(
                prompt=body.prompt,
                sampling=body.sampling(body.logprobs is not None),
                constraint=constraint,
            )
            results = await generate(gen)
        except _HTTPError as exc:
            return error(exc)
        choices = [_text_choice(engine, i, r, body) for i, r in enumerate(results)]
        return envelope("text_completion", choices, results)

    async def models(request: Request) -> JSONResponse:
        entry = {"id": model_name, "object": "model", "created": 0, "owned_by": "agentflow-gym"}
        return JSONResponse({"object": "list", "data": [entry]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
    return f"the body is not valid JSON: {exc}"


def run_server(
    engine: Engine,
    model_name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch: int = 64,
) -> None:
    """Serve ``engine`` until interrupted (uvicorn; SIGINT/SIGTERM stop it)."""
    try:
        import uvicorn
    except ImportError as exc:
        raise EngineDependencyError(
            f"the server needs uvicorn: pip install 'agentflow-gym[serve]' ({exc})"
        ) from exc
    app = create_app(engine, model_name, max_batch=max_batch)
    uvicorn.run(app, host=host, port=port, log_level="warning")
