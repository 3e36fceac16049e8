"""An engine around any Python function: scripted planners, baselines, test doubles.

``fn(request) -> str | GenerationResult`` (or a sequence of ``n`` of them), or with
``batched=True`` ``fn(requests) -> sequence`` of ``sum(r.sampling.n)`` items, request-major.
The function owns temperature, seed and max_tokens (it sees the whole request); the engine
enforces what it can without a model: stop strings are applied to the returned text, and a
request asking for ``logprobs`` gets :class:`LogprobsUnavailableError` when the function
returned none, and a request with a ``constraint`` gets :class:`ConstraintViolationError` when
the function's text does not match it (a prefix is enough when the text was cut at a stop string
or the result says ``finish_reason="length"``): the function sees the constraint in the request
and must honour it, as a model under the constraint would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from agentflow_env.llm.base import GenerationRequest, GenerationResult
from agentflow_env.llm.common import (
    ConstraintViolationError,
    EngineError,
    LogprobsUnavailableError,
    expected_count,
    truncate_at_stop,
)

__all__ = ["CallableEngine"]

logger = logging.getLogger(__name__)

Output = str | GenerationResult


class CallableEngine:
    """Wrap ``fn`` as an :class:`~agentflow_env.llm.base.Engine`.

    Args:
        fn: per-request function, or a batch function when ``batched`` is true.
        batched: call ``fn`` once per ``generate`` with the whole list of requests.
        name: shown in ``repr`` and errors (defaults to the function's name).
        apply_stop: cut returned text at the request's stop strings (on by default, so stop
            settings are honoured here too).

    For ``n > 1`` a per-request ``fn`` returning a single item is called ``n`` times (a
    stochastic function then yields ``n`` different samples); returning a sequence of exactly
    ``n`` items also works. Exceptions raised by ``fn`` propagate unchanged: they are bugs in
    the wrapped code, not transient backend failures.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        batched: bool = False,
        name: str | None = None,
        apply_stop: bool = True,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallableEngine needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.batched = batched
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self.apply_stop = apply_stop

    def __repr__(self) -> str:
        return f"CallableEngine({self.name!r}, batched={self.batched})"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        requests = list(requests)
        if not requests:
            return []
        raw = self._call_batched(requests) if self.batched else self._call_each(requests)
        results: list[GenerationResult] = []
        flat_requests = [r for r in requests for _ in range(r.sampling.n)]
        for request, item in zip(flat_requests, raw, strict=True):
            results.append(self._finish(request, self._coerce(item)))
        return results

    def _call_each(self, requests: list[GenerationRequest]) -> list[Any]:
        out: list[Any] = []
        for request in requests:
            n = request.sampling.n
            first = self.fn(request)
            if isinstance(first, (str, GenerationResult)):
                out.append(first)
                out.extend(self.fn(request) for _ in range(n - 1))
            elif isinstance(first, Sequence) and len(first) == n:
                out.extend(first)
            else:
                raise EngineError(
                    f"{self.name} returned {_describe(first)} for a request with n={n}; "
                    f"expected a str, a GenerationResult, or a sequence of {n} of them"
                )
        return out

    def _call_batched(self, requests: list[GenerationRequest]) -> list[Any]:
        out = self.fn(requests)
        want = expected_count(requests)
        if isinstance(out, (str, bytes)) or not isinstance(out, Sequence) or len(out) != want:
            raise EngineError(
                f"batched {self.name} returned {_describe(out)} for {len(requests)} requests; "
                f"expected a sequence of {want} items (sum of every request's n, request-major)"
            )
        return list(out)

    def _coerce(self, item: Any) -> GenerationResult:
        if isinstance(item, GenerationResult):
            return item
        if isinstance(item, str):
            return GenerationResult(text=item, finish_reason="stop")
        raise EngineError(
            f"{self.name} returned {_describe(item)}; expected a str or a GenerationResult"
        )

    def _finish(self, request: GenerationRequest, result: GenerationResult) -> GenerationResult:
        if request.sampling.logprobs and result.error is None and result.logprobs is None:
            raise LogprobsUnavailableError(
                f"{self.name} was asked for logprobs but returned a result without them; "
                "return GenerationResult(token_ids=..., logprobs=...) or request logprobs=False"
            )
        hit = False
        if self.apply_stop and request.sampling.stop and result.error is None:
            text, hit = truncate_at_stop(result.text, request.sampling.stop)
            if hit:
                # Token ids (if any) cannot be cut without a tokenizer; a function that returns
                # ids together with stop strings must cut them itself.
                result = result.model_copy(update={"text": text, "finish_reason": "stop"})
        if request.constraint is not None and result.error is None:
            from agentflow_env.llm.structured import violation

            problem = violation(
                request.constraint, result.text, cut_short=hit or result.finish_reason == "length"
            )
            if problem:
                raise ConstraintViolationError(
                    f"{self.name} broke the request's constraint: {problem}"
                )
        return result

    def close(self) -> None:
        """Nothing to release; present to satisfy the Engine protocol."""


def _describe(obj: Any) -> str:
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"
