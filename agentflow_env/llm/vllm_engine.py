"""In-process vLLM (``vllm.LLM``) as an engine, for GPU rollouts; vllm is imported lazily.

NOT VERIFIED HERE: the machines this project is tested on have no GPU and cannot install vllm
alongside the pinned torch, so this module was written against vLLM's documented offline API
(``LLM.chat``, ``LLM.generate``, ``SamplingParams``, ``RequestOutput``/``CompletionOutput``,
``LLM.collective_rpc``, ``LLM.reset_prefix_cache``) and its tests only run where vllm and CUDA
exist (markers ``vllm`` and ``gpu``).

Mapping of the request settings: ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``
(vLLM's per-request seed), ``n`` and ``logprobs`` go straight into ``vllm.SamplingParams``.
Log-probs are what vLLM reports for the sampled token: with the engine argument
``logprobs_mode="raw_logprobs"`` (vLLM's documented default in recent versions) that is the raw
model distribution, as :class:`HFEngine` reports by default.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentflow_env.llm.base import GenerationRequest, GenerationResult
from agentflow_env.llm.common import EngineDependencyError, EngineError

__all__ = ["VLLMEngine"]

logger = logging.getLogger(__name__)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise EngineDependencyError(
            "the vllm engine needs vllm, which is not installed (it needs a CUDA GPU and pins "
            "its own torch): `pip install 'agentflow-gym[vllm]'` in a separate environment, or "
            "use the hf engine (hf:PATH) or a vLLM server through openai:MODEL@URL. "
            f"Import error: {exc}"
        ) from exc
    return vllm


def _load_weights_on_worker(worker: Any, weights: list[tuple[str, Any]]) -> int:
    """Runs inside every vLLM worker (sent by ``collective_rpc``): load HF-named tensors.

    ``model.load_weights`` maps Hugging Face parameter names onto vLLM's fused/sharded layout
    (e.g. q/k/v into qkv_proj) and copies each tensor into place.
    """
    model = worker.model_runner.model
    device = next(model.parameters()).device
    model.load_weights(weights=[(name, tensor.to(device)) for name, tensor in weights])
    return len(weights)


class VLLMEngine:
    """``vllm.LLM(model, **engine_kwargs)`` behind the engine interface.

    Args:
        model: hub name or local path.
        chat_template_kwargs: extra variables for the chat template.
        **engine_kwargs: passed to ``vllm.LLM`` (e.g. ``dtype``, ``gpu_memory_utilization``,
            ``tensor_parallel_size``, ``max_model_len``, ``enable_prefix_caching``, ``seed``).
    """

    def __init__(
        self,
        model: str,
        *,
        chat_template_kwargs: dict[str, Any] | None = None,
        **engine_kwargs: Any,
    ) -> None:
        self._vllm = _import_vllm()
        self.model_name = model
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.llm: Any = self._vllm.LLM(model=model, **engine_kwargs)

    def __repr__(self) -> str:
        return f"VLLMEngine({self.model_name!r})"

    def _sampling(self, request: GenerationRequest) -> Any:
        s = request.sampling
        return self._vllm.SamplingParams(
            n=s.n,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=list(s.stop) or None,
            seed=s.seed,
            # 1 = the sampled token plus at most one alternative; the sampled one is always there.
            logprobs=1 if s.logprobs else None,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Chat requests through ``LLM.chat``, raw prompts through ``LLM.generate``."""
        if self.llm is None:
            raise EngineError(f"{self!r} is closed")
        requests = list(requests)
        outputs: list[Any] = [None] * len(requests)
        chat_idx = [i for i, r in enumerate(requests) if r.messages is not None]
        text_idx = [i for i, r in enumerate(requests) if r.messages is None]
        if chat_idx:
            conversations = [[m.model_dump() for m in requests[i].messages or ()] for i in chat_idx]
            got = self.llm.chat(
                conversations,
                sampling_params=[self._sampling(requests[i]) for i in chat_idx],
                use_tqdm=False,
                chat_template_kwargs=self.chat_template_kwargs or None,
            )
            for i, out in zip(chat_idx, got, strict=True):
                outputs[i] = out
        if text_idx:
            got = self.llm.generate(
                [requests[i].prompt for i in text_idx],
                sampling_params=[self._sampling(requests[i]) for i in text_idx],
                use_tqdm=False,
            )
            for i, out in zip(text_idx, got, strict=True):
                outputs[i] = out
        results: list[GenerationResult] = []
        for request, out in zip(requests, outputs, strict=True):
            results.extend(self._convert(request, out))
        return results

    @staticmethod
    def _convert(request: GenerationRequest, out: Any) -> list[GenerationResult]:
        prompt_tokens = (
            len(out.prompt_token_ids)
            if getattr(out, "prompt_token_ids", None) is not None
            else None
        )
        results = []
        for completion in sorted(out.outputs, key=lambda c: c.index):
            token_ids = list(completion.token_ids)
            logprobs = None
            if request.sampling.logprobs:
                if completion.logprobs is None:
                    raise EngineError(
                        "vLLM returned no logprobs although SamplingParams.logprobs was set"
                    )
                # one {token_id: Logprob} mapping per generated position
                logprobs = [
                    float(step[tid].logprob)
                    for tid, step in zip(token_ids, completion.logprobs, strict=False)
                ]
            results.append(
                GenerationResult(
                    text=completion.text,
                    finish_reason="length" if completion.finish_reason == "length" else "stop",
                    token_ids=token_ids,
                    logprobs=logprobs,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=len(token_ids),
                )
            )
        return results

    def update_weights(
        self,
        named_tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
        chunk_bytes: int = 1 << 30,
    ) -> int:
        """Copy new weights (Hugging Face parameter names, e.g. a trainer's ``state_dict()``)
        into the running vLLM model, then drop the prefix cache (cached KV was computed with
        the old weights). Returns the number of tensors sent.

        UNVERIFIED (no GPU here). Uses ``LLM.collective_rpc`` with a function that calls
        ``worker.model_runner.model.load_weights`` in every worker, which is the mechanism
        vLLM's RLHF examples use; tensors travel through vLLM's RPC in chunks of about
        ``chunk_bytes`` (fine for small models; large ones want an NCCL/IPC weight-transfer
        channel instead). On vLLM versions without ``collective_rpc`` it falls back to the
        in-process V0 path ``llm_engine.model_executor.driver_worker.model_runner.model``.
        """
        if self.llm is None:
            raise EngineError(f"{self!r} is closed")
        items = list(named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors)
        sent = 0
        for chunk in _chunks(items, chunk_bytes):
            cpu_chunk = [(name, tensor.detach().to("cpu")) for name, tensor in chunk]
            if hasattr(self.llm, "collective_rpc"):
                self.llm.collective_rpc(_load_weights_on_worker, args=(cpu_chunk,))
            else:
                worker = self.llm.llm_engine.model_executor.driver_worker
                _load_weights_on_worker(worker, cpu_chunk)
            sent += len(cpu_chunk)
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()
        logger.info("loaded %d tensors into %r", sent, self)
        return sent

    def close(self) -> None:
        """Release the vLLM engine (GPU memory is freed once nothing else references it)."""
        self.llm = None


def _chunks(items: list[tuple[str, Any]], limit: int) -> Iterable[list[tuple[str, Any]]]:
    chunk: list[tuple[str, Any]] = []
    size = 0
    for name, tensor in items:
        nbytes = tensor.numel() * tensor.element_size()
        if chunk and size + nbytes > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append((name, tensor))
        size += nbytes
    if chunk:
        yield chunk
