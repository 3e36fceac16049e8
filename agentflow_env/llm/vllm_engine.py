"""In-process vLLM (``vllm.LLM``) as an engine, for GPU rollouts; vllm is imported lazily.

A thin request layer over :class:`~agentflow_env.llm.vllm_backend.VLLMBackend`, which builds the
``LLM``, maps the sampling settings, reads ids and log-probs out of vLLM's outputs and syncs
weights (see that module, including what was NOT VERIFIED here: no GPU, no vllm). Chat requests
go through ``LLM.chat``, raw prompts through ``LLM.generate``; ``temperature``, ``top_p``,
``max_tokens``, ``stop``, ``seed`` (vLLM's per-request seed), ``n`` and ``logprobs`` all map onto
``vllm.SamplingParams``, and a request's ``constraint`` maps onto vLLM's structured outputs
(see :mod:`vllm_backend`). Log-probs are the raw model distribution's by default, as
:class:`HFEngine` reports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from agentflow_env.llm.base import GenerationRequest, GenerationResult, TokenCompletion
from agentflow_env.llm.vllm_backend import VLLMBackend

__all__ = ["VLLMEngine"]


class VLLMEngine:
    """``vllm.LLM(model, **engine_kwargs)`` behind the engine interface.

    Args:
        model: hub name or local path.
        chat_template_kwargs: extra variables for the chat template.
        logprobs_mode: ``"raw"`` (default) or ``"processed"``, see :mod:`vllm_backend`.
        **engine_kwargs: passed to ``vllm.LLM`` (e.g. ``dtype``, ``gpu_memory_utilization``,
            ``tensor_parallel_size``, ``max_model_len``, ``enable_prefix_caching``, ``seed``).
    """

    supports_constraints = True
    """it enforces a request's constraint itself (modules constrain their replies with it)"""

    def __init__(
        self,
        model: str,
        *,
        chat_template_kwargs: dict[str, Any] | None = None,
        logprobs_mode: Literal["raw", "processed"] = "raw",
        **engine_kwargs: Any,
    ) -> None:
        self.backend = VLLMBackend(model, logprobs_mode=logprobs_mode, **engine_kwargs)
        self.model_name = model
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def __repr__(self) -> str:
        return f"VLLMEngine({self.model_name!r})"

    @property
    def llm(self) -> Any:
        """The ``vllm.LLM`` (``None`` once closed)."""
        return self.backend.llm

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Chat requests through ``LLM.chat``, raw prompts through ``LLM.generate``."""
        requests = list(requests)
        per_request: list[list[TokenCompletion]] = [[] for _ in requests]
        chat_idx = [i for i, r in enumerate(requests) if r.messages is not None]
        text_idx = [i for i, r in enumerate(requests) if r.messages is None]
        if chat_idx:
            got = self.backend.chat(
                [[m.model_dump() for m in requests[i].messages or ()] for i in chat_idx],
                [requests[i].sampling for i in chat_idx],
                self.chat_template_kwargs,
                [requests[i].constraint for i in chat_idx],
            )
            for i, completions in zip(chat_idx, got, strict=True):
                per_request[i] = completions
        if text_idx:
            got = self.backend.complete(
                [requests[i].prompt or "" for i in text_idx],
                [requests[i].sampling for i in text_idx],
                [requests[i].constraint for i in text_idx],
            )
            for i, completions in zip(text_idx, got, strict=True):
                per_request[i] = completions
        return [
            GenerationResult(
                text=c.text,
                finish_reason=c.finish_reason,
                token_ids=c.token_ids,
                logprobs=c.logprobs if request.sampling.logprobs else None,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=len(c.token_ids),
            )
            for request, completions in zip(requests, per_request, strict=True)
            for c in completions
        ]

    def update_weights(
        self,
        named_tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
        chunk_bytes: int = 1 << 30,
    ) -> int:
        """Copy new weights (Hugging Face names) into the running model; see
        :meth:`VLLMBackend.update_weights`. Returns the number of tensors sent."""
        return self.backend.update_weights(named_tensors, chunk_bytes)

    def close(self) -> None:
        """Release the vLLM engine (GPU memory is freed once nothing else references it)."""
        self.backend.close()
