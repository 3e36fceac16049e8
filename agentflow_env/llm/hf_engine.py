"""A local transformers model as an engine: chat or raw-text requests through :class:`HFBackend`.

:class:`HFEngine` loads (or is given) a model and tokenizer, turns each request into prompt token
ids (the tokenizer's chat template for ``messages``), expands ``n`` into rows with seeds derived
from ``(seed, j)``, and samples through :class:`~agentflow_env.llm.hf_backend.HFBackend`, which
owns batching, left padding, per-row seeded sampling, stop handling, log-probs and the long-prompt
prefill (see that module). Consequences worth knowing:

- the same request with the same ``seed`` gives the same completion, whatever else is in the
  batch (up to floating-point effects of padding) and without touching global RNG state;
- returned ``token_ids`` are the sampled ids (EOS included when the model stopped on it; cut
  after the token that completed a stop string), ``text`` is their decoding without special
  tokens and without the stop string;
- ``logprobs`` are the sampled tokens' log-probabilities under the **raw** model distribution
  (``log_softmax`` of the logits, no temperature or top-p), which is what a learner recomputes
  in its forward pass. ``logprobs_mode="processed"`` gives them under the distribution actually
  sampled from (after a constraint's mask, temperature and top-p; greedy rows report the raw
  value);
- a request's ``constraint`` is enforced token by token (llguidance masks, the ``structured``
  extra): the text matches it, or is a prefix of a match when ``max_tokens`` or a stop string
  cut it (``finish_reason``). A constraint that does not compile raises
  :class:`~agentflow_env.llm.common.InvalidConstraintError` before anything is generated.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agentflow_env.llm.base import GenerationRequest, GenerationResult, TokenPrompt
from agentflow_env.llm.common import EngineConfigError, EngineError
from agentflow_env.llm.hf_backend import (
    HFBackend,
    LogprobsMode,
    derive_seed,
    load_causal_lm,
    load_tokenizer,
)
from agentflow_env.llm.prefix_cache import PrefixCache

__all__ = ["HFEngine"]

_DEFAULT_PREFIX_CACHE_MB = 1536
"""SmolLM2-135M's KV cache takes 46 KB per token (fp32): ~35,000 prompt tokens, the three module
prompts of 10 episodes stepping together with room to spare (512 MB evicted prompts that a batch
of 10 needed again)"""


class HFEngine:
    """A transformers causal LM (by name, path, or an already loaded model) as an engine.

    Args:
        model: a hub name or local path, or a loaded ``PreTrainedModel`` (then pass ``tokenizer``).
        tokenizer: a tokenizer or its name/path (defaults to ``model``'s path).
        device: torch device for a model loaded here.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"``, ``"auto"`` or a torch dtype.
        max_batch_size: rows (requests x n) per ``model.generate`` call.
        seed: seeds the draw of per-request seeds for requests without one (``None``: fresh
            entropy, so unseeded requests differ run to run, as with other engines).
        logprobs_mode: ``"raw"`` (default) or ``"processed"``, see the module docstring
            (``"temperature"``, as :class:`HFBackend` defines it, is accepted too).
        chat_template_kwargs: extra variables for the tokenizer's chat template.
        prefill: ``"auto"`` (one prompt at a time on CPU for prompts of 512+ tokens, padded
            batch otherwise), ``"per_row"`` or ``"batched"``; see :mod:`hf_backend`.
        prefix_cache_mb: memory for the KV caches of recent prompts, whose longest shared prefix
            a new prompt reuses instead of prefilling it again
            (:mod:`~agentflow_env.llm.prefix_cache`; CPU only). Default: 1536 when this engine
            loads its model on a CPU, else 0 (off): a model passed in may be trained by its
            owner, which would make cached values stale (call :meth:`clear_prefix_cache`).
    """

    supports_constraints = True
    """it enforces a request's constraint itself (modules constrain their replies with it)"""

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        max_batch_size: int = 16,
        seed: int | None = None,
        logprobs_mode: LogprobsMode = "raw",
        chat_template_kwargs: dict[str, Any] | None = None,
        trust_remote_code: bool = False,
        prefill: Literal["auto", "per_row", "batched"] = "auto",
        prefix_cache_mb: float | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise EngineConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if prefix_cache_mb is not None and prefix_cache_mb < 0:
            raise EngineConfigError(f"prefix_cache_mb must be >= 0, got {prefix_cache_mb}")
        loaded = (
            model
            if isinstance(model, PreTrainedModel)
            else load_causal_lm(
                model, dtype=dtype, device=device, trust_remote_code=trust_remote_code
            )
        )
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            source = tokenizer if tokenizer is not None else model
            tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
        if prefix_cache_mb is None:
            own_cpu_model = not isinstance(model, PreTrainedModel) and torch.device(device).type
            prefix_cache_mb = _DEFAULT_PREFIX_CACHE_MB if own_cpu_model == "cpu" else 0
        self.backend: HFBackend | None = HFBackend(
            loaded,
            tokenizer,
            max_batch_size=max_batch_size,
            logprobs_mode=logprobs_mode,
            prefill=prefill,
            prefix_cache=PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb else None,
        )
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self._rng = random.Random(seed)

    @property
    def model(self) -> PreTrainedModel | None:
        """The model (``None`` once closed)."""
        return None if self.backend is None else self.backend.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._open().tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._open().tokenizer = tokenizer

    def _open(self) -> HFBackend:
        if self.backend is None:
            raise EngineError("this HFEngine is closed")
        return self.backend

    def __repr__(self) -> str:
        if self.backend is None:
            return "HFEngine(<closed>)"
        name = self.backend.model.config.name_or_path
        return f"HFEngine({name!r}, device={str(self.backend.device)!r})"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate ``n`` completions per request, request-major (see the module docstring)."""
        backend = self._open()
        requests = list(requests)
        constraints = {r.constraint for r in requests if r.constraint is not None}
        if constraints:
            from agentflow_env.llm.structured import check_constraint

            for constraint in constraints:  # every problem before any generation
                check_constraint(constraint)
        rows = self._rows(requests)
        completions = backend.generate(rows)
        return [
            GenerationResult(
                text=c.text,
                finish_reason=c.finish_reason,
                token_ids=c.token_ids,
                logprobs=c.logprobs if row.sampling.logprobs else None,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=len(c.token_ids),
            )
            for row, c in zip(rows, completions, strict=True)
        ]

    def _rows(self, requests: list[GenerationRequest]) -> list[TokenPrompt]:
        rows: list[TokenPrompt] = []
        for request in requests:
            ids = self._encode(request)
            s = request.sampling
            for j in range(s.n):
                seed = derive_seed(s.seed, j) if s.seed is not None else self._rng.getrandbits(63)
                rows.append(
                    TokenPrompt(
                        prompt_ids=ids, sampling=s, seed=seed, constraint=request.constraint
                    )
                )
        return rows

    def _use_per_row(self, rows: Sequence[TokenPrompt]) -> bool:
        """Whether one ``generate`` chunk of these rows would be prefilled one prompt at a time."""
        return self._open()._use_per_row(rows)

    def _encode(self, request: GenerationRequest) -> list[int]:
        tokenizer = self.tokenizer
        if request.prompt is not None:
            return list(tokenizer(request.prompt, add_special_tokens=True)["input_ids"])
        if not getattr(tokenizer, "chat_template", None):
            raise EngineConfigError(
                f"the tokenizer of {self._open().model.config.name_or_path!r} has no chat "
                "template: send raw prompts (GenerationRequest(prompt=...)) or set "
                "tokenizer.chat_template"
            )
        messages = [m.model_dump() for m in request.messages or ()]
        text = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs
        )
        # The template already wrote the special tokens.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def prefix_cache(self) -> PrefixCache | None:
        """The prefix cache (its ``stats`` count hits and reused tokens), ``None`` when off."""
        return self._open().prefix_cache

    def clear_prefix_cache(self) -> None:
        """Forget cached prompts: call after changing the model's weights."""
        if self._open().prefix_cache is not None:
            self._open().prefix_cache.clear()

    def close(self) -> None:
        """Drop the model reference (memory is freed once nothing else holds it)."""
        self.backend = None
