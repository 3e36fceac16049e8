"""LLM engines: one batched ``generate(requests) -> results`` API over several backends.

- :class:`OpenAIEngine` (``openai:MODEL@URL``): any OpenAI-compatible server, async, retried;
- :class:`HFEngine` (``hf:PATH``): a local transformers model, batched, seeded per request;
- :class:`VLLMEngine` (``vllm:NAME``): in-process vLLM on a GPU (unverified here);
- :class:`CallableEngine`: any Python function (scripted planners, test doubles).

:func:`serve_transformers` runs a local model behind a real OpenAI-compatible server
(``transformers serve`` as a subprocess) for tests, examples and local benchmarks.

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
)
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.llm.common import (
    EngineAuthError,
    EngineConfigError,
    EngineDependencyError,
    EngineError,
    LogprobsUnavailableError,
    ModelNotFoundError,
)
from agentflow_env.llm.spec import VALID_FORMS, EngineSpec, make_engine, parse_spec

if TYPE_CHECKING:
    from agentflow_env.llm.hf_engine import HFEngine
    from agentflow_env.llm.openai_engine import OpenAIEngine
    from agentflow_env.llm.serve import (
        ServeError,
        ServeStartError,
        ServeTimeoutError,
        TransformersServer,
        serve_transformers,
    )
    from agentflow_env.llm.vllm_engine import VLLMEngine

__all__ = [
    "VALID_FORMS",
    "CallableEngine",
    "ChatMessage",
    "Engine",
    "EngineAuthError",
    "EngineConfigError",
    "EngineDependencyError",
    "EngineError",
    "EngineSpec",
    "GenerationRequest",
    "GenerationResult",
    "HFEngine",
    "LogprobsUnavailableError",
    "ModelNotFoundError",
    "OpenAIEngine",
    "SamplingParams",
    "ServeError",
    "ServeStartError",
    "ServeTimeoutError",
    "TransformersServer",
    "VLLMEngine",
    "make_engine",
    "parse_spec",
    "serve_transformers",
]

_LAZY = {
    "HFEngine": "agentflow_env.llm.hf_engine",
    "OpenAIEngine": "agentflow_env.llm.openai_engine",
    "VLLMEngine": "agentflow_env.llm.vllm_engine",
    **dict.fromkeys(
        (
            "ServeError",
            "ServeStartError",
            "ServeTimeoutError",
            "TransformersServer",
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
