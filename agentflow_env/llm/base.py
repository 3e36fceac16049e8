"""The one engine interface: batched ``generate(requests) -> results``.

Modules (executor, verifier, generator), LLM-backed tools and planners all talk to engines
through :class:`Engine`. A request is chat ``messages`` (or a raw ``prompt``) plus sampling
settings; a result carries the text, the finish reason, and token ids + log-probs when the
backend provides them. Sampling settings are always honoured or rejected loudly by an engine,
never silently dropped (the reference code ignored them).

Below the text interface, generation backends (:mod:`~agentflow_env.llm.hf_backend`,
:mod:`~agentflow_env.llm.vllm_backend`) work token-in/token-out: a :class:`TokenPrompt` (prompt
ids, settings, a seed) gives a :class:`TokenCompletion` (sampled ids and their log-probs). The
engines and the learner's policy both generate through them.

A request's optional :class:`~agentflow_env.llm.constraints.Constraint` (a choice list, a regex, a
JSON schema or a Lark grammar) says what the completion must look like; every engine enforces it
or raises (see :mod:`agentflow_env.llm.constraints`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentflow_env.llm.constraints import Constraint

if TYPE_CHECKING:
    import torch

__all__ = [
    "ChatMessage",
    "Constraint",
    "Engine",
    "GenerationRequest",
    "GenerationResult",
    "SamplingParams",
    "TokenCompletion",
    "TokenPrompt",
]


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class SamplingParams(BaseModel):
    """Sampling settings. ``temperature=0`` means greedy decoding."""

    # a misspelt or misplaced setting (``max_tokens`` on the request) is an error, not a default
    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    logprobs: bool = False
    """ask for token ids and their log-probs (engines that cannot provide them raise)"""


class GenerationRequest(BaseModel):
    """Exactly one of ``messages`` or ``prompt``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    constraint: Constraint | None = None
    """what the completion must look like (:mod:`agentflow_env.llm.constraints`); ``None``:
    free text. Engines enforce it or raise; a completion cut by ``max_tokens`` or a stop string
    is a prefix of a matching text"""

    @model_validator(mode="after")
    def _one_input(self) -> GenerationRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of `messages` or `prompt`")
        return self

    @classmethod
    def chat(
        cls,
        user: str,
        system: str | None = None,
        *,
        constraint: Constraint | None = None,
        **sampling: object,
    ) -> GenerationRequest:
        msgs = ([ChatMessage(role="system", content=system)] if system else []) + [
            ChatMessage(role="user", content=user)
        ]
        return cls(
            messages=tuple(msgs),
            sampling=SamplingParams(**sampling),  # type: ignore[arg-type]
            constraint=constraint,
        )


class GenerationResult(BaseModel):
    """One completion (a request with ``n>1`` yields ``n`` results, in order)."""

    text: str
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    """set when this request failed after retries; ``text`` is then empty"""
    error_kind: str | None = None
    """with ``error``: what failed, one of :data:`agentflow_env.infra.ENGINE_KINDS` (the
    failure is infrastructure, never the prompt's author's doing)"""


@dataclass(frozen=True)
class TokenPrompt:
    """One completion to sample from a backend: prompt token ids, settings and a seed.

    ``sampling.n`` and ``sampling.seed`` are the caller's business (it expands ``n`` into prompts
    and derives each one's ``seed``, e.g. with ``hf_backend.derive_seed``).
    """

    prompt_ids: Sequence[int]
    sampling: SamplingParams
    seed: int
    """fixes this completion's random draws (the same seed, the same sample)"""
    logits_processor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    """transformers backend: ``(ids [1, L], scores [1, V]) -> scores`` applied before sampling,
    as a ``transformers.LogitsProcessor`` is, at each step until this completion ends; ``ids``
    are this prompt and its tokens so far (no padding)"""
    constraint: Constraint | None = None
    """transformers backend: tokens outside the constraint are masked (after
    ``logits_processor``); vLLM backend: passed to vLLM's structured outputs"""


@dataclass
class TokenCompletion:
    """A sampled completion: ids (the stop token included when one was sampled) and log-probs."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    """the ids decoded without special tokens, cut before any stop string"""
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int | None = None


@runtime_checkable
class Engine(Protocol):
    """A text generator. ``generate`` returns ``len(requests) * n`` results, request-major."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    def close(self) -> None: ...
