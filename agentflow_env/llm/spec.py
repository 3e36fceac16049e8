"""Engine specs users can type (CLI flags, configs) and :func:`make_engine`.

Valid forms::

    openai:MODEL@http://host:port/v1    an OpenAI-compatible server (MODEL may contain ':' and '/')
    openai:MODEL                        the server at $OPENAI_BASE_URL (else api.openai.com)
    hf:PATH_OR_NAME                     a local transformers model (alias: transformers:...), or
                                        a fetched registry model by name, e.g.
                                        hf:smollm2-135m-instruct (agentflow_env.llm.models)
    vllm:NAME                           in-process vLLM (GPU)
    python:package.module:function      a Python function wrapped by CallableEngine
    an Engine object                    returned as is
    an object with .generate            used as a batched engine
    a callable fn(request)              wrapped by CallableEngine

Engine classes are imported only when their spec is used, so an ``openai:`` spec does not pay
for torch/transformers imports and a missing vllm only matters to ``vllm:`` specs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentflow_env.llm.base import Engine
from agentflow_env.llm.common import EngineConfigError

__all__ = ["VALID_FORMS", "EngineSpec", "make_engine", "parse_spec"]

VALID_FORMS = (
    "openai:MODEL@http://HOST:PORT/v1",
    "openai:MODEL",
    "hf:PATH_OR_NAME (or transformers:PATH_OR_NAME)",
    "vllm:NAME",
    "python:package.module:function",
    "an Engine object, an object with .generate, or a callable fn(request)",
)


@dataclass(frozen=True)
class EngineSpec:
    """A parsed spec string."""

    kind: str
    """"openai", "hf", "vllm" or "python\""""
    target: str
    """model name, path, or import path"""
    base_url: str | None = None


def _bad(spec: str, why: str) -> EngineConfigError:
    return EngineConfigError(
        f"bad engine spec {spec!r}: {why}. Valid forms: " + "; ".join(VALID_FORMS)
    )


def parse_spec(spec: str) -> EngineSpec:
    """Parse a spec string (see the module docstring) or raise :class:`EngineConfigError`."""
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if not sep or not rest.strip():
        raise _bad(spec, "expected KIND:TARGET")
    rest = rest.strip()
    if kind == "openai":
        at = max(rest.rfind("@http://"), rest.rfind("@https://"))
        if at == -1:
            if "@" in rest:
                raise _bad(spec, "the part after '@' must be an http(s):// URL")
            return EngineSpec("openai", rest)
        model, url = rest[:at], rest[at + 1 :]
        if not model:
            raise _bad(spec, "missing model name before '@'")
        return EngineSpec("openai", model, url)
    if kind in ("hf", "transformers"):
        return EngineSpec("hf", rest)
    if kind == "vllm":
        return EngineSpec("vllm", rest)
    if kind == "python":
        module, colon, func = rest.rpartition(":")
        if not colon or not module or not func:
            raise _bad(spec, "python specs look like python:package.module:function")
        return EngineSpec("python", rest)
    raise _bad(spec, f"unknown engine kind {kind!r}")


def _import_callable(path: str, spec: str) -> Callable[..., Any]:
    module_name, _, attr = path.rpartition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _bad(spec, f"cannot import {module_name!r} ({exc})") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise _bad(spec, f"{module_name}.{attr} is missing or not callable")
    return fn


def make_engine(spec: str | Engine | Callable[..., Any], **kwargs: Any) -> Engine:
    """Build an engine from a spec string, or adapt an object/callable.

    ``kwargs`` go to the engine's constructor (e.g. ``device="cuda"`` for ``hf:``,
    ``max_concurrency=32`` for ``openai:``, ``gpu_memory_utilization=0.5`` for ``vllm:``,
    ``batched=True`` for a callable). Passing kwargs with an engine object is an error.
    """
    if isinstance(spec, str):
        parsed = parse_spec(spec)
        if parsed.kind == "openai":
            from agentflow_env.llm.openai_engine import OpenAIEngine

            return OpenAIEngine(parsed.target, parsed.base_url, **kwargs)
        if parsed.kind == "hf":
            from agentflow_env.llm.hf_engine import HFEngine
            from agentflow_env.llm.models import resolve_model

            return HFEngine(resolve_model(parsed.target), **kwargs)
        if parsed.kind == "vllm":
            from agentflow_env.llm.vllm_engine import VLLMEngine

            return VLLMEngine(parsed.target, **kwargs)
        from agentflow_env.llm.callable_engine import CallableEngine

        return CallableEngine(_import_callable(parsed.target, spec), **kwargs)
    if isinstance(spec, Engine):
        if kwargs:
            raise EngineConfigError(
                f"options {sorted(kwargs)} cannot be applied to an existing engine object"
            )
        return spec
    from agentflow_env.llm.callable_engine import CallableEngine

    generate = getattr(spec, "generate", None)
    if callable(generate):  # an engine-like object without close(): adapt its batched generate
        return CallableEngine(generate, batched=True, name=type(spec).__name__, **kwargs)
    if callable(spec):
        return CallableEngine(spec, **kwargs)
    raise EngineConfigError(
        f"cannot make an engine from a {type(spec).__name__}. Valid forms: "
        + "; ".join(VALID_FORMS)
    )
