"""Typed engine errors and the small helpers every engine shares.

Error policy (all engines):
- configuration problems (bad spec, missing optional dependency, wrong credentials, unknown
  model, a setting the backend cannot honour such as ``logprobs``) raise a typed
  :class:`EngineError` subclass at once: retrying cannot fix them;
- a single request that still fails after the engine's bounded retries (a timeout, a 5xx) does
  not raise: its results carry ``error=...`` and empty text, so one bad request cannot sink a
  batch and callers see the failure explicitly (``GenerationResult.error``), with its kind
  (``GenerationResult.error_kind``, one of :data:`agentflow_env.infra.ENGINE_KINDS`).
"""

from __future__ import annotations

from collections.abc import Sequence

from agentflow_env.llm.base import GenerationRequest, GenerationResult

__all__ = [
    "ConstraintUnsupportedError",
    "ConstraintViolationError",
    "EngineAuthError",
    "EngineConfigError",
    "EngineDependencyError",
    "EngineError",
    "InvalidConstraintError",
    "LogprobsUnavailableError",
    "ModelNotFoundError",
    "error_results",
    "expected_count",
    "find_stop",
    "truncate_at_stop",
]


class EngineError(RuntimeError):
    """Base class of every error an engine raises on purpose."""


class EngineConfigError(EngineError, ValueError):
    """A bad engine spec or constructor argument; the message says which forms are valid."""


class EngineDependencyError(EngineError, ImportError):
    """An optional dependency (e.g. vllm) is not installed."""


class EngineAuthError(EngineError):
    """The server rejected the credentials (HTTP 401/403)."""


class ModelNotFoundError(EngineError):
    """The server does not serve the requested model (HTTP 404, or a 400 naming the model)."""


class LogprobsUnavailableError(EngineError):
    """``logprobs=True`` was requested but the backend returned none (it cannot, or ignored it)."""


class InvalidConstraintError(EngineConfigError):
    """A constraint that cannot be compiled: a bad regex, grammar or JSON schema (the message
    carries the compiler's own words)."""


class ConstraintUnsupportedError(EngineError):
    """The engine or server cannot enforce a request's constraint (it rejected the field, or has
    no such feature); retrying cannot fix it."""


class ConstraintViolationError(EngineError):
    """A completion does not match its request's constraint: a server that ignored it, or a
    function (callable engine) that returned something else. Never returned as a result."""


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, or ``None``."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` before its first stop string (OpenAI semantics: the stop is not included).

    Returns the text and whether a stop string was found.
    """
    i = find_stop(text, stops)
    return (text, False) if i is None else (text[:i], True)


def error_results(
    request: GenerationRequest, message: str, kind: str = "engine"
) -> list[GenerationResult]:
    """``n`` failed results for one request (empty text, ``error`` and ``error_kind`` set)."""
    return [
        GenerationResult(text="", finish_reason="error", error=message, error_kind=kind)
        for _ in range(request.sampling.n)
    ]


def expected_count(requests: Sequence[GenerationRequest]) -> int:
    """How many results ``generate(requests)`` must return (the sum of every request's ``n``)."""
    return sum(r.sampling.n for r in requests)
