"""LLM engines: one batched ``generate(requests) -> results`` API over several backends.

- :class:`OpenAIEngine` (``openai:MODEL@URL``): any OpenAI-compatible server, async, retried;
- :class:`HFEngine` (``hf:PATH``): a local transformers model, batched, seeded per request;
- :class:`VLLMEngine` (``vllm:NAME``): in-process vLLM on a GPU (unverified here);
- :class:`CallableEngine`: any Python function (scripted planners, test doubles).

Every request may carry a :class:`Constraint` (a choice list, a regex, a JSON schema or a Lark
grammar): each engine enforces it or raises (:mod:`agentflow_env.llm.constraints`).

Token-level generation lives in one backend per engine kind, shared with the learner's policy:
:class:`HFBackend` (``model.generate`` on a live model: batching, per-row seeds, stops,
log-probs) and :class:`VLLMBackend` (``vllm.LLM``: sampling, outputs, weight sync); the engines
above are their request/text layers.

:func:`serve_transformers` runs a local model behind a real OpenAI-compatible server
(``transformers serve`` as a subprocess) for tests, examples and local benchmarks;
:func:`serve_hf` runs the project's own server (``python -m agentflow_env.llm serve``), which
honours constraints, ``n`` and ``logprobs``.

:func:`make_engine` turns a spec string, an engine or a callable into an engine. Engine classes
load lazily (``agentflow_env.llm.HFEngine`` imports transformers only when first touched).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentflow_env.llm.base import (
    ChatMessage,
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    TokenCompletion,
    TokenPrompt,
)
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.llm.common import (
    ConstraintUnsupportedError,
    ConstraintViolationError,
    EngineAuthError,
    EngineConfigError,
    EngineDependencyError,
    EngineError,
    InvalidConstraintError,
    LogprobsUnavailableError,
    ModelNotFoundError,
)
from agentflow_env.llm.constraints import Constraint, lark_literal, regex_escape
from agentflow_env.llm.spec import VALID_FORMS, EngineSpec, make_engine, parse_spec

if TYPE_CHECKING:
    from agentflow_env.llm.hf_backend import HFBackend
    from agentflow_env.llm.hf_engine import HFEngine
    from agentflow_env.llm.openai_engine import OpenAIEngine
    from agentflow_env.llm.serve import (
        ServeError,
        ServeStartError,
        ServeTimeoutError,
        TransformersServer,
        serve_hf,
        serve_transformers,
    )
    from agentflow_env.llm.vllm_backend import VLLMBackend
    from agentflow_env.llm.vllm_engine import VLLMEngine

__all__ = [
    "VALID_FORMS",
    "CallableEngine",
    "ChatMessage",
    "Constraint",
    "ConstraintUnsupportedError",
    "ConstraintViolationError",
    "Engine",
    "EngineAuthError",
    "EngineConfigError",
    "EngineDependencyError",
    "EngineError",
    "EngineSpec",
    "GenerationRequest",
    "GenerationResult",
    "HFBackend",
    "HFEngine",
    "InvalidConstraintError",
    "LogprobsUnavailableError",
    "ModelNotFoundError",
    "OpenAIEngine",
    "SamplingParams",
    "ServeError",
    "ServeStartError",
    "ServeTimeoutError",
    "TokenCompletion",
    "TokenPrompt",
    "TransformersServer",
    "VLLMBackend",
    "VLLMEngine",
    "lark_literal",
    "make_engine",
    "parse_spec",
    "regex_escape",
    "serve_hf",
    "serve_transformers",
]

_LAZY = {
    "HFBackend": "agentflow_env.llm.hf_backend",
    "HFEngine": "agentflow_env.llm.hf_engine",
    "OpenAIEngine": "agentflow_env.llm.openai_engine",
    "VLLMBackend": "agentflow_env.llm.vllm_backend",
    "VLLMEngine": "agentflow_env.llm.vllm_engine",
    **dict.fromkeys(
        (
            "ServeError",
            "ServeStartError",
            "ServeTimeoutError",
            "TransformersServer",
            "serve_hf",
            "serve_transformers",
        ),
        "agentflow_env.llm.serve",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agentflow_env.llm' has no attribute {name!r}")
