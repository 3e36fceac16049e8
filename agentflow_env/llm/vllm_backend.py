"""In-process vLLM (``vllm.LLM``) as a generation backend; vllm is imported lazily.

The project's one implementation of everything vLLM: building the ``LLM``, mapping
:class:`~agentflow_env.llm.base.SamplingParams` onto ``vllm.SamplingParams``, reading sampled ids
and log-probs out of ``RequestOutput``, and loading new weights into the running engine.
:class:`~agentflow_env.llm.vllm_engine.VLLMEngine` (text requests) and the learner's
``Policy`` (token ids in, token ids + log-probs out, weights synced after each update) both use it.

NOT VERIFIED HERE: the machines this project is tested on have no GPU and cannot install vllm
alongside the pinned torch. Written against vLLM's offline API for ``vllm>=0.11`` (the
``[vllm]`` extra): ``LLM(model, worker_extension_cls=..., logprobs_mode=..., **engine_kwargs)``,
``LLM.generate`` with ``{"prompt_token_ids": ...}`` prompts, ``LLM.chat``,
``RequestOutput``/``CompletionOutput``, ``LLM.collective_rpc`` and ``LLM.reset_prefix_cache``.

Weight sync: ``LLM.collective_rpc`` calls a method by name on every worker; the method comes from
:class:`WeightSyncExtension`, which vLLM mixes into its worker class (``worker_extension_cls``),
and hands Hugging Face-named tensors to ``model.load_weights`` (which maps them onto vLLM's
fused/sharded layout). A method name and CPU tensors are what vLLM's V1 engine serializes to its
engine-core process without ``VLLM_ALLOW_INSECURE_SERIALIZATION`` (a callable would need it).
Tensors travel through that RPC in chunks of about ``chunk_bytes``: fine for the small and
mid-size models this project trains; a large model wants vLLM's NCCL/IPC weight-transfer engines.
The older in-process path (``llm.llm_engine.model_executor.driver_worker.model_runner.model``)
only exists with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` and is not used.

Constraints (:class:`~agentflow_env.llm.constraints.Constraint`) go to vLLM's structured outputs:
``SamplingParams(structured_outputs=StructuredOutputsParams(choice=|regex=|json=|grammar=))``
(vLLM >= 0.11), or ``guided_decoding=GuidedDecodingParams(...)`` where only that older name
exists. A Lark grammar is read natively by vLLM's ``guidance`` backend (llguidance, the library
the hf engine uses: pass ``structured_outputs_config={"backend": "guidance"}``); its xgrammar
backend converts simple Lark grammars to EBNF.

Log-probs are vLLM's for the sampled token (``logprobs=0``): ``logprobs_mode="raw"`` gives the
raw model distribution (vLLM's ``raw_logprobs``, what :class:`HFEngine` reports by default),
``"processed"`` the distribution sampled from after temperature and top-p (``processed_logprobs``:
with ``top_p == 1`` that is ``log_softmax(logits / temperature)``, what a learner recomputes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from agentflow_env.llm.base import SamplingParams, TokenCompletion, TokenPrompt
from agentflow_env.llm.common import (
    ConstraintUnsupportedError,
    EngineConfigError,
    EngineDependencyError,
    EngineError,
)
from agentflow_env.llm.constraints import Constraint

__all__ = ["VLLMBackend", "WeightSyncExtension", "import_vllm"]

logger = logging.getLogger(__name__)

_EXTENSION = f"{__name__}.WeightSyncExtension"


def import_vllm() -> Any:
    """The vllm module, or :class:`EngineDependencyError` saying how to get it."""
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


class WeightSyncExtension:
    """Mixed into every vLLM worker (``worker_extension_cls``); called through ``collective_rpc``.

    Runs inside the worker process, where ``self`` is vLLM's worker.
    """

    model_runner: Any

    def agentflow_load_weights(self, weights: list[tuple[str, Any]]) -> int:
        """Load Hugging Face-named tensors into this worker's model; returns how many."""
        runner = self.model_runner
        model = runner.get_model() if hasattr(runner, "get_model") else runner.model
        device = next(model.parameters()).device
        model.load_weights(weights=[(name, tensor.to(device)) for name, tensor in weights])
        return len(weights)


class VLLMBackend:
    """``vllm.LLM(model, **engine_kwargs)``: sampling, output conversion and weight sync.

    Args:
        model: hub name or local path.
        logprobs_mode: ``"raw"`` or ``"processed"`` (module docstring).
        **engine_kwargs: passed to ``vllm.LLM`` (e.g. ``dtype``, ``gpu_memory_utilization``,
            ``tensor_parallel_size``, ``max_model_len``, ``enable_prefix_caching``, ``seed``).
            ``worker_extension_cls`` is this module's :class:`WeightSyncExtension` (needed by
            :meth:`update_weights`); pass your own only if it subclasses it.
    """

    def __init__(
        self,
        model: str,
        *,
        logprobs_mode: Literal["raw", "processed"] = "raw",
        **engine_kwargs: Any,
    ) -> None:
        if logprobs_mode not in ("raw", "processed"):
            raise EngineConfigError(
                f"logprobs_mode must be 'raw' or 'processed', got {logprobs_mode!r}"
            )
        self._vllm = import_vllm()
        self.model_name = model
        engine_kwargs.setdefault("worker_extension_cls", _EXTENSION)
        self.llm: Any = self._vllm.LLM(
            model=model, logprobs_mode=f"{logprobs_mode}_logprobs", **engine_kwargs
        )

    def __repr__(self) -> str:
        return f"VLLMBackend({self.model_name!r})"

    def _open(self) -> Any:
        if self.llm is None:
            raise EngineError(f"{self!r} is closed")
        return self.llm

    # ---------------------------------------------------------------------------- sampling
    def sampling_params(
        self,
        sampling: SamplingParams,
        seed: int | None = None,
        constraint: Constraint | None = None,
    ) -> Any:
        """``vllm.SamplingParams`` for ``sampling`` (``seed`` overrides ``sampling.seed``) and
        ``constraint``."""
        structured = self.structured_outputs(constraint) if constraint is not None else {}
        return self._vllm.SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed if seed is None else seed,
            # 0: the sampled token's log-prob only (always present when logprobs is set)
            logprobs=0 if sampling.logprobs else None,
            **structured,
        )

    def structured_outputs(self, constraint: Constraint) -> dict[str, Any]:
        """The ``vllm.SamplingParams`` keyword that carries ``constraint``."""
        module = self._vllm.sampling_params
        values = {constraint.kind: constraint.value}  # choice, regex, json, grammar: vLLM's names
        params = getattr(module, "StructuredOutputsParams", None)
        if params is not None:
            return {"structured_outputs": params(**values)}
        params = getattr(module, "GuidedDecodingParams", None)
        if params is not None:
            return {"guided_decoding": params(**values)}
        raise ConstraintUnsupportedError(
            f"vllm {getattr(self._vllm, '__version__', '?')} has neither StructuredOutputsParams "
            "nor GuidedDecodingParams: install vllm>=0.11 (the [vllm] extra)"
        )

    def generate(self, prompts: Sequence[TokenPrompt]) -> list[TokenCompletion]:
        """One completion per token prompt (``sampling.n`` is ignored; log-probs always)."""
        if any(p.logits_processor is not None for p in prompts):
            raise EngineConfigError("the vllm backend does not take per-prompt logits processors")
        if any(len(p.prompt_ids) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        params = [
            self.sampling_params(
                p.sampling.model_copy(update={"n": 1, "logprobs": True}), p.seed, p.constraint
            )
            for p in prompts
        ]
        outputs = self._open().generate(
            [{"prompt_token_ids": list(p.prompt_ids)} for p in prompts],
            sampling_params=params,
            use_tqdm=False,
        )
        return [self.completions(out, logprobs=True)[0] for out in outputs]

    def chat(
        self,
        conversations: Sequence[list[dict[str, str]]],
        samplings: Sequence[SamplingParams],
        chat_template_kwargs: dict[str, Any] | None = None,
        constraints: Sequence[Constraint | None] | None = None,
    ) -> list[list[TokenCompletion]]:
        """``sampling.n`` completions per conversation, through ``LLM.chat``."""
        outputs = self._open().chat(
            list(conversations),
            sampling_params=self._params(samplings, constraints),
            use_tqdm=False,
            chat_template_kwargs=chat_template_kwargs or None,
        )
        return [self.completions(o, s.logprobs) for o, s in zip(outputs, samplings, strict=True)]

    def complete(
        self,
        texts: Sequence[str],
        samplings: Sequence[SamplingParams],
        constraints: Sequence[Constraint | None] | None = None,
    ) -> list[list[TokenCompletion]]:
        """``sampling.n`` completions per raw text prompt, through ``LLM.generate``."""
        outputs = self._open().generate(
            list(texts), sampling_params=self._params(samplings, constraints), use_tqdm=False
        )
        return [self.completions(o, s.logprobs) for o, s in zip(outputs, samplings, strict=True)]

    def _params(
        self, samplings: Sequence[SamplingParams], constraints: Sequence[Constraint | None] | None
    ) -> list[Any]:
        constraints = constraints if constraints is not None else [None] * len(samplings)
        return [
            self.sampling_params(s, constraint=c)
            for s, c in zip(samplings, constraints, strict=True)
        ]

    @staticmethod
    def completions(out: Any, logprobs: bool) -> list[TokenCompletion]:
        """The completions of one ``RequestOutput``, in sample order."""
        prompt_ids = getattr(out, "prompt_token_ids", None)
        results = []
        for completion in sorted(out.outputs, key=lambda c: c.index):
            token_ids = list(completion.token_ids)
            lps: list[float] = []
            if logprobs:
                if completion.logprobs is None:
                    raise EngineError(
                        "vLLM returned no logprobs although SamplingParams.logprobs was set"
                    )
                # one {token_id: Logprob} mapping per generated position
                lps = [
                    float(step[tid].logprob)
                    for tid, step in zip(token_ids, completion.logprobs, strict=True)
                ]
            results.append(
                TokenCompletion(
                    token_ids=token_ids,
                    logprobs=lps,
                    text=completion.text,
                    finish_reason="length" if completion.finish_reason == "length" else "stop",
                    prompt_tokens=None if prompt_ids is None else len(prompt_ids),
                )
            )
        return results

    # ---------------------------------------------------------------------------- weights
    def update_weights(
        self,
        named_tensors: Mapping[str, Any] | Iterable[tuple[str, Any]],
        chunk_bytes: int = 1 << 30,
    ) -> int:
        """Copy new weights (Hugging Face parameter names, e.g. a trainer's ``state_dict()``)
        into the running model on every worker, then drop the prefix cache (cached KV was
        computed with the old weights). Returns the number of tensors sent.

        ``named_tensors`` is consumed lazily, one chunk at a time: a generator that gathers each
        sharded tensor when it is reached (FSDP) never holds the whole model at once.
        """
        llm = self._open()
        items = named_tensors.items() if isinstance(named_tensors, Mapping) else named_tensors
        sent = 0
        for chunk in _chunks(items, chunk_bytes):
            cpu_chunk = [(name, tensor.detach().to("cpu")) for name, tensor in chunk]
            llm.collective_rpc("agentflow_load_weights", args=(cpu_chunk,))
            sent += len(cpu_chunk)
        llm.reset_prefix_cache()
        logger.info("loaded %d tensors into %r", sent, self)
        return sent

    def close(self) -> None:
        """Release the vLLM engine (GPU memory is freed once nothing else references it)."""
        self.llm = None


def _chunks(items: Iterable[tuple[str, Any]], limit: int) -> Iterator[list[tuple[str, Any]]]:
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
