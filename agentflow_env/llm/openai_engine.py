"""Any OpenAI-compatible server (vLLM, SGLang, ``transformers serve``, hosted APIs) as an engine.

Requests run concurrently on ``openai.AsyncOpenAI`` inside an event loop owned by a dedicated
background thread, so the synchronous :meth:`OpenAIEngine.generate` works from any thread,
including from code already running inside an event loop (async callers can await
:meth:`OpenAIEngine.agenerate` instead of blocking their loop).

Behaviour:
- chat requests go to ``/chat/completions``, raw prompts to ``/completions``;
- every sampling setting is sent: ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``,
  ``n``, ``logprobs``. A server that returns fewer than ``n`` choices (``transformers serve``
  ignores ``n``) is topped up with single-sample requests; sample ``j`` of a seeded request then
  uses ``seed + j``. Stop strings are also applied client-side: ``transformers serve`` stops
  at a stop string but leaves it in the text;
- at most ``max_concurrency`` HTTP calls are in flight; each attempt has a wall-clock limit of
  ``timeout_s``; 408, 429, 5xx, connection errors, timeouts and responses that are not a
  completion (invalid JSON, no choices, ``content: null``) are retried ``max_retries`` times with
  exponential backoff and jitter, waiting at least ``Retry-After`` (seconds or an HTTP date)
  when the server sends one, up to ``max_retry_after_s``;
- 401/403 raise :class:`EngineAuthError`, 404 (or a 400 about the model) raises
  :class:`ModelNotFoundError`; a request still failing after its retries, or rejected with another
  4xx (not retried), yields results with ``error`` set and its ``error_kind``
  (:data:`agentflow_env.infra.ENGINE_KINDS`; see :mod:`agentflow_env.llm.common`);
- ``logprobs=True`` with a server that returns none raises :class:`LogprobsUnavailableError`
  (``transformers serve`` ignores ``logprobs``). The standard API names tokens by their text, so
  ``token_ids`` stay ``None`` unless ``token_ids_extension=True`` asks a vLLM server for
  ``return_tokens_as_token_ids`` (tokens come back as ``token_id:<id>``);
- ``temperature`` is only as good as the server: ``transformers serve`` decodes greedily unless
  the model's ``generation_config.json`` sets ``do_sample: true``;
- a request's ``constraint`` is sent in the server's own terms (``structured_outputs``, see
  :data:`~agentflow_env.llm.structured.STRUCTURED_DIALECTS`) and every returned text is checked
  against it (:func:`~agentflow_env.llm.structured.violation`): a server that ignored it raises
  :class:`ConstraintViolationError` (``transformers serve`` ignores ``response_format``), one
  that rejected the field (HTTP 400/422 naming it) :class:`ConstraintUnsupportedError`. Garbage
  is never returned as a result. Text cut by ``max_tokens``, or by a stop string when the request
  has any, only has to be a prefix of a match.

Local servers need no API key: without ``api_key`` (and without ``$OPENAI_API_KEY``) a
placeholder is sent.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, NamedTuple, TypeVar

import openai
import pydantic
from typing_extensions import Self

from agentflow_env.llm.base import GenerationRequest, GenerationResult
from agentflow_env.llm.common import (
    ConstraintUnsupportedError,
    ConstraintViolationError,
    EngineAuthError,
    EngineConfigError,
    EngineError,
    LogprobsUnavailableError,
    ModelNotFoundError,
    error_results,
    find_stop,
)
from agentflow_env.llm.structured import (
    CONSTRAINT_FIELDS,
    STRUCTURED_DIALECTS,
    StructuredDialect,
    constraint_fields,
)

__all__ = ["PLACEHOLDER_API_KEY", "OpenAIEngine"]

logger = logging.getLogger(__name__)

PLACEHOLDER_API_KEY = "EMPTY"
_TOKEN_ID = re.compile(r"^token_id:(\d+)$")
_MISSING_MODEL = re.compile(
    r"model\S* (?:\S+ )?(?:does not exist|not found|is not served)|unknown model|no such model",
    re.IGNORECASE,
)
# A body that is not a completion: the SDK's JSON decoding or model validation failed.
_UNPARSEABLE = (json.JSONDecodeError, pydantic.ValidationError, openai.APIResponseValidationError)
T = TypeVar("T")


class _Failure(NamedTuple):
    """A request that failed: the message and its kind (``agentflow_env.infra.ENGINE_KINDS``)."""

    message: str
    kind: str


class _BadResponse(Exception):
    """A 200 response that holds no completion (no choices, ``content: null``)."""


class _LoopThread:
    """An asyncio loop running forever in a daemon thread; coroutines are submitted to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise EngineError("OpenAIEngine.generate was called from its own event-loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class OpenAIEngine:
    """Engine for an OpenAI-compatible HTTP server.

    Args:
        model: the model name the server serves.
        base_url: e.g. ``http://127.0.0.1:8000/v1`` (default: ``$OPENAI_BASE_URL`` or OpenAI's).
        api_key: sent as a bearer token; defaults to ``$<api_key_env>`` or a placeholder.
        max_concurrency: HTTP calls in flight at once.
        timeout_s: wall-clock limit of one attempt.
        max_retries: retries after the first attempt for 408/429/5xx, connection errors,
            timeouts and responses that are not a completion.
        backoff_base_s, backoff_max_s: backoff is ``base * 2**attempt`` (capped), times a jitter
            factor in [0.5, 1].
        max_retry_after_s: the longest ``Retry-After`` honoured (a longer one waits this long).
        max_tokens_field: ``"max_tokens"`` (widely supported) or ``"max_completion_tokens"``.
        token_ids_extension: ask vLLM for ``return_tokens_as_token_ids`` with logprobs.
        extra_body: extra JSON fields for every request (server extensions, e.g. ``top_k``).
        structured_outputs: how constraints are sent, one of
            :data:`~agentflow_env.llm.structured.STRUCTURED_DIALECTS`.
        seed: seeds the retry jitter.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        max_concurrency: int = 16,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 20.0,
        max_retry_after_s: float = 60.0,
        max_tokens_field: str = "max_tokens",
        token_ids_extension: bool = False,
        extra_body: dict[str, Any] | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        structured_outputs: StructuredDialect = "vllm",
        seed: int | None = None,
    ) -> None:
        if not model:
            raise EngineConfigError("OpenAIEngine needs a model name")
        if max_concurrency < 1 or timeout_s <= 0 or max_retries < 0:
            raise EngineConfigError(
                f"need max_concurrency >= 1, timeout_s > 0, max_retries >= 0; got "
                f"{max_concurrency}, {timeout_s}, {max_retries}"
            )
        if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise EngineConfigError(
                "max_tokens_field must be max_tokens or max_completion_tokens, "
                f"got {max_tokens_field!r}"
            )
        if structured_outputs not in STRUCTURED_DIALECTS:
            raise EngineConfigError(
                f"structured_outputs must be one of {STRUCTURED_DIALECTS}, "
                f"got {structured_outputs!r}"
            )
        self.structured_outputs = structured_outputs
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self._api_key = api_key or os.environ.get(api_key_env) or PLACEHOLDER_API_KEY
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.max_tokens_field = max_tokens_field
        self.token_ids_extension = token_ids_extension
        self.extra_body = dict(extra_body or {})
        self._rng = random.Random(seed)
        self._warned: set[str] = set()
        self._runner: _LoopThread | None = _LoopThread(f"openai-engine:{model}")
        self._client: openai.AsyncOpenAI | None = None
        self._sem: asyncio.Semaphore | None = None
        self._runner.run(self._start())

    async def _start(self) -> None:
        # Created inside the background loop: the client's connection pool and the semaphore
        # belong to the loop that uses them.
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0
        )
        self._sem = asyncio.Semaphore(self.max_concurrency)

    def __repr__(self) -> str:
        return f"OpenAIEngine({self.model!r}, base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ public

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Blocking batched generation; ``len(requests) * n`` results, request-major."""
        return self._require_runner().run(self._generate_all(list(requests)))

    async def agenerate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Awaitable :meth:`generate` for callers inside their own event loop."""
        return await self._require_runner().arun(self._generate_all(list(requests)))

    def list_models(self) -> list[str]:
        """Model ids the server reports at ``GET /models`` (raises like ``generate`` on 401)."""

        async def _list() -> list[str]:
            assert self._client is not None
            try:
                page = await asyncio.wait_for(self._client.models.list(), self.timeout_s)
            except openai.APIStatusError as exc:
                raise self._fatal(exc) or EngineError(
                    f"GET {self.base_url}/models failed: {exc}"
                ) from exc
            return [m.id for m in page.data]

        return self._require_runner().run(_list())

    def close(self) -> None:
        """Close the HTTP client and stop the background loop. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._client is not None:
            try:
                runner.run(self._client.close())
            except (openai.OpenAIError, OSError, RuntimeError) as exc:
                # closing is best effort: it must not mask the error the caller is handling
                logger.debug("closing the OpenAI client failed: %s", exc)
        runner.stop()

    def _require_runner(self) -> _LoopThread:
        if self._runner is None:
            raise EngineError(f"{self!r} is closed")
        return self._runner

    # ------------------------------------------------------------------------------ internals

    async def _generate_all(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        constraints = {r.constraint for r in requests if r.constraint is not None}
        if constraints:  # a bad constraint (or no llguidance to check replies) before any call
            from agentflow_env.llm.structured import check_constraint

            for constraint in constraints:
                check_constraint(constraint)
        outcomes = await asyncio.gather(
            *(self._request(r) for r in requests), return_exceptions=True
        )
        for outcome in outcomes:  # configuration errors concern every request: raise the first
            if isinstance(outcome, BaseException):
                raise outcome
        return [res for outcome in outcomes for res in outcome]  # type: ignore[union-attr]

    async def _request(self, request: GenerationRequest) -> list[GenerationResult]:
        n = request.sampling.n
        first = await self._call(request, n, request.sampling.seed)
        if isinstance(first, _Failure):
            return error_results(request, *first)
        results = first
        if len(results) < n:
            self._warn_once(
                "n",
                f"{self.base_url} returned {len(results)} choice(s) for n={n}; "
                "requesting the remaining samples one at a time",
            )
            seed = request.sampling.seed
            extra = await asyncio.gather(
                *(
                    self._call(request, 1, None if seed is None else seed + j)
                    for j in range(len(results), n)
                )
            )
            for item in extra:
                results.extend(
                    error_results(request, *item)[:1] if isinstance(item, _Failure) else item[:1]
                )
        return results[:n]

    async def _call(
        self, request: GenerationRequest, n: int, seed: int | None
    ) -> list[GenerationResult] | _Failure:
        """One logical call with retries; returns results, or the failure after retries."""
        assert self._client is not None and self._sem is not None
        last = _Failure("", "engine")
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                async with self._sem:
                    response = await asyncio.wait_for(self._send(request, n, seed), self.timeout_s)
                return self._parse(request, response)
            except (asyncio.TimeoutError, openai.APITimeoutError):
                last = _Failure(f"timed out after {self.timeout_s:g}s", "engine_timeout")
            except openai.APIConnectionError as exc:
                last = _Failure(f"{type(exc).__name__}: {exc}", "engine_connection")
            except openai.APIStatusError as exc:
                fatal = self._fatal(exc) or self._constraint_rejected(request, exc)
                if fatal is not None:
                    raise fatal from exc
                last = _status_failure(exc)
                if last.kind == "engine_rejected":  # retrying cannot fix this request
                    return _Failure(f"{last.message} from {self.base_url}", last.kind)
                retry_after = _retry_after(exc)
            except (*_UNPARSEABLE, _BadResponse) as exc:
                what = str(exc) if isinstance(exc, _BadResponse) else "a body that is not JSON"
                last = _Failure(f"invalid response: {what}", "engine_bad_response")
            except openai.OpenAIError as exc:  # anything else the SDK reports: not transient
                return _Failure(f"{type(exc).__name__} from {self.base_url}: {exc}", "engine")
            if attempt < self.max_retries:
                delay = self._delay(attempt, retry_after)
                logger.info("retrying %s in %.2fs after: %s", self.base_url, delay, last.message)
                await asyncio.sleep(delay)
        return _Failure(f"failed after {self.max_retries + 1} attempts: {last.message}", last.kind)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, or the server's ``Retry-After`` (bounded) if longer."""
        delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * (
            0.5 + 0.5 * self._rng.random()
        )
        return max(delay, min(retry_after or 0.0, self.max_retry_after_s))

    def _fatal(self, exc: openai.APIStatusError) -> EngineError | None:
        """The typed error for responses retrying cannot fix, or ``None``."""
        msg = _message(exc).rstrip(".")
        if exc.status_code in (401, 403):
            return EngineAuthError(
                f"{self.base_url} rejected the credentials (HTTP {exc.status_code}): {msg}. "
                "Pass api_key=... or set $OPENAI_API_KEY (local servers need none)."
            )
        if exc.status_code == 404 or (exc.status_code == 400 and self._names_missing_model(msg)):
            return ModelNotFoundError(
                f"{self.base_url} does not serve model {self.model!r} "
                f"(HTTP {exc.status_code}): {msg}. "
                "Check the name against GET /models (OpenAIEngine.list_models())."
            )
        return None

    def _constraint_rejected(
        self, request: GenerationRequest, exc: openai.APIStatusError
    ) -> EngineError | None:
        """The typed error for a server that refused a constrained request's constraint field."""
        msg = _message(exc)
        if (
            request.constraint is None
            or exc.status_code not in (400, 422)
            or not any(field in msg for field in CONSTRAINT_FIELDS)
        ):
            return None
        return ConstraintUnsupportedError(
            f"{self.base_url} refused the constraint ({request.constraint.describe()}) sent as "
            f"structured_outputs={self.structured_outputs!r} (HTTP {exc.status_code}): "
            f"{msg.rstrip('.')}. Use the dialect the server speaks, a server with structured "
            "outputs (vLLM, SGLang, python -m agentflow_env.llm serve), or the hf engine."
        )

    def _names_missing_model(self, msg: str) -> bool:
        # Not just "model" in the text: vLLM's 400 for an over-long prompt says "This model's
        # maximum context length is ...", which is a request error, not a missing model.
        named = re.search(rf"(?<![\w/.-]){re.escape(self.model)}(?![\w/.-])", msg)
        return bool(named or _MISSING_MODEL.search(msg))

    async def _send(self, request: GenerationRequest, n: int, seed: int | None) -> Any:
        assert self._client is not None
        s = request.sampling
        params: dict[str, Any] = {
            "model": self.model,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "n": n,
            self.max_tokens_field: s.max_tokens,
        }
        if s.stop:
            params["stop"] = list(s.stop)
        if seed is not None:
            params["seed"] = seed
        extra = dict(self.extra_body)
        if request.constraint is not None:
            fields, more = constraint_fields(
                request.constraint, self.structured_outputs, request.messages is not None
            )
            params.update(fields)
            extra.update(more)
        if s.logprobs:
            params["logprobs"] = True if request.messages is not None else 1
            if self.token_ids_extension:
                extra["return_tokens_as_token_ids"] = True
        if extra:
            params["extra_body"] = extra
        if request.messages is not None:
            messages = [m.model_dump() for m in request.messages]
            return await self._client.chat.completions.create(messages=messages, **params)
        return await self._client.completions.create(prompt=request.prompt, **params)

    def _parse(self, request: GenerationRequest, response: Any) -> list[GenerationResult]:
        if not isinstance(getattr(response, "choices", None), list):
            raise _BadResponse(f"a {type(response).__name__}, not a completion")
        choices = sorted(response.choices, key=lambda c: c.index)
        if not choices:
            raise _BadResponse("no choices")
        usage = getattr(response, "usage", None)
        results = []
        for choice in choices:
            chat = request.messages is not None
            text = choice.message.content if chat else choice.text
            if text is None:
                refusal = getattr(choice.message, "refusal", None) if chat else None
                raise _BadResponse(
                    "content is null" + (f" (refusal: {refusal})" if refusal else "")
                )
            tokens, logprobs = _choice_logprobs(choice, chat)
            if request.sampling.logprobs and logprobs is None:
                raise LogprobsUnavailableError(
                    f"{self.base_url} returned no logprobs for model {self.model!r} although "
                    "they were requested (transformers serve ignores them); use a vLLM/SGLang "
                    "server or the hf engine, or request logprobs=False"
                )
            text, tokens, logprobs, hit = self._apply_stop(request, text, tokens, logprobs)
            if request.constraint is not None:
                self._check_constraint(request, text, choice.finish_reason, hit)
            token_ids = _token_ids(tokens) if tokens is not None else None
            results.append(
                GenerationResult(
                    text=text,
                    finish_reason="stop" if hit else (choice.finish_reason or None),
                    token_ids=token_ids,
                    logprobs=logprobs,
                    prompt_tokens=getattr(usage, "prompt_tokens", None),
                    completion_tokens=(
                        len(logprobs)
                        if logprobs is not None
                        else getattr(usage, "completion_tokens", None)
                        if len(choices) == 1
                        else None
                    ),
                )
            )
        return results

    def _check_constraint(
        self, request: GenerationRequest, text: str, finish_reason: str | None, hit: bool
    ) -> None:
        from agentflow_env.llm.structured import violation

        assert request.constraint is not None
        cut_short = hit or finish_reason == "length" or bool(request.sampling.stop)
        problem = violation(request.constraint, text, cut_short=cut_short)
        if problem:
            raise ConstraintViolationError(
                f"{self.base_url} (model {self.model!r}) ignored the constraint: {problem}. "
                f"It was sent as structured_outputs={self.structured_outputs!r}; "
                "transformers serve ignores response_format. Use a server that enforces it "
                "(vLLM, SGLang, python -m agentflow_env.llm serve) or the hf engine."
            )

    def _apply_stop(
        self,
        request: GenerationRequest,
        text: str,
        tokens: list[str] | None,
        logprobs: list[float] | None,
    ) -> tuple[str, list[str] | None, list[float] | None, bool]:
        """Client-side stop strings: only acts when the server ignored ``stop``."""
        stops = request.sampling.stop
        cut = find_stop(text, stops)
        if cut is None:
            return text, tokens, logprobs, False
        self._warn_once(
            "stop",
            f"{self.base_url} returned text containing a stop string; cutting it client-side",
        )
        if (
            tokens is not None
            and logprobs is not None
            and not any(_TOKEN_ID.match(t) for t in tokens)
        ):
            # keep the tokens through the one that completed the stop string (as the hf engine does)
            target = cut + max(len(s) for s in stops if s and text.startswith(s, cut))
            keep, length = 0, 0
            while keep < len(tokens) and length < target:
                length += len(tokens[keep])
                keep += 1
            tokens, logprobs = tokens[:keep], logprobs[:keep]
        cut_text = text[:cut]
        return cut_text, tokens, logprobs, True

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)


def _choice_logprobs(choice: Any, chat: bool) -> tuple[list[str] | None, list[float] | None]:
    lp = getattr(choice, "logprobs", None)
    if lp is None:
        return None, None
    if chat:
        content = getattr(lp, "content", None)
        if not content:
            return None, None
        return [c.token for c in content], [float(c.logprob) for c in content]
    if not getattr(lp, "token_logprobs", None):
        return None, None
    return list(lp.tokens or []), [
        float(x) if x is not None else float("nan") for x in lp.token_logprobs
    ]


def _token_ids(tokens: list[str]) -> list[int] | None:
    ids = [_TOKEN_ID.match(t) for t in tokens]
    return [int(m.group(1)) for m in ids if m] if ids and all(ids) else None


def _message(exc: openai.APIStatusError) -> str:
    """The server's own words: OpenAI-style ``{"error": {"message"}}`` or FastAPI's ``detail``."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            for key in ("message", "detail"):
                if inner.get(key):
                    return str(inner[key])
        elif isinstance(inner, str):
            return inner
    return str(exc.message)


def _status_failure(exc: openai.APIStatusError) -> _Failure:
    """The kind of an HTTP error that is not fatal: retried (408, 429, 5xx) or rejected."""
    status = exc.status_code
    message = f"HTTP {status}: {_message(exc)}"
    if status == 429:
        return _Failure(message, "engine_rate_limited")
    if status >= 500:
        return _Failure(message, "engine_server_error")
    if status == 408:
        return _Failure(message, "engine_timeout")
    return _Failure(message, "engine_rejected")


def _retry_after(exc: BaseException) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date (RFC 9110); None when absent/bad."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
