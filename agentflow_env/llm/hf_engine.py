"""A local transformers model as an engine: batched ``generate`` with left padding.

Every request's settings are honoured per row, even when requests with different settings
share one batch: a logits processor (:class:`_RowSampler`) applies each row's temperature and
top-p and draws the token from that row's own seeded ``torch.Generator`` (transformers'
``generate`` has no generator argument and would otherwise sample from the global RNG); a
stopping criterion (:class:`_RowStopper`) ends each row at its own ``max_tokens``, EOS or stop
string. Consequences worth knowing:

- the same request with the same ``seed`` gives the same completion, whatever else is in the
  batch (up to floating-point effects of padding) and without touching global RNG state;
- ``n > 1`` becomes ``n`` rows with seeds derived from ``(seed, j)``;
- returned ``token_ids`` are the sampled ids (EOS included when the model stopped on it; cut
  after the token that completed a stop string), ``text`` is their decoding without special
  tokens and without the stop string;
- ``logprobs`` are the sampled tokens' log-probabilities under the **raw** model distribution
  (``log_softmax`` of the logits, no temperature or top-p), which is what a learner recomputes
  in its forward pass. ``logprobs_mode="processed"`` gives them under the distribution actually
  sampled from (after temperature and top-p; greedy rows report the raw value).

Long prompts on CPU are prefilled one at a time (``prefill="auto"``: 512 tokens or more): a
left-padded batch needs an explicit attention mask, and with a mask PyTorch's CPU
``scaled_dot_product_attention`` leaves its flash kernel for one that materializes every
(query, key) score (16 x 2,000 tokens: 458 ms masked vs 163 ms causal per call); a whole
24-token generation for 16 prompts of ~2,300 tokens took 2.2 s padded, 1.2 s this way. Each
prompt but its last token is prefilled unpadded (causal, no mask), the per-prompt KV caches are
left-padded into one batch cache, and ``generate`` decodes the whole batch from there.
Identical prompts (``n > 1``) are prefilled once. On GPUs (``"auto"``) the padded batch prefill
is kept: masked attention kernels there are efficient and one prompt at a time would leave the
device idle.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from agentflow_env.llm.base import GenerationRequest, GenerationResult, SamplingParams
from agentflow_env.llm.common import EngineConfigError, EngineError, find_stop

__all__ = ["HFEngine"]

logger = logging.getLogger(__name__)

# Below this prompt width the padded batch prefill is cheaper on CPU: each unpadded forward pass
# costs a few ms of fixed overhead (16 prompts: 265 tokens 196 vs 240 ms per call, 587 tokens
# 385 vs 359 ms, 1,212 tokens 903 vs 574 ms, 2,300 tokens 2,211 vs 1,165 ms; tiny Qwen2).
_PER_ROW_MIN_TOKENS = 512

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class _Row:
    index: int
    """position in the flat, request-major output"""
    prompt_ids: list[int]
    sampling: SamplingParams
    seed: int


class _RowSampler(LogitsProcessor):
    """Chooses every row's next token itself and returns scores whose argmax is that token.

    Generation runs with ``do_sample=False``, so transformers' argmax picks exactly the token
    drawn here; nothing is sampled from the global RNG.
    """

    def __init__(self, rows: Sequence[_Row], device: torch.device, mode: str) -> None:
        self.temps = torch.tensor(
            [r.sampling.temperature for r in rows], dtype=torch.float32, device=device
        )
        self.top_ps = torch.tensor(
            [r.sampling.top_p for r in rows], dtype=torch.float32, device=device
        )
        self.greedy = [r.sampling.temperature == 0.0 for r in rows]
        self.gens = [torch.Generator(device=device).manual_seed(r.seed) for r in rows]
        self.mode = mode
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()
        raw_logp = torch.log_softmax(scores, dim=-1)
        temps = torch.where(self.temps > 0, self.temps, torch.ones_like(self.temps))
        warped = _top_p_filter(scores / temps[:, None], self.top_ps)
        probs = torch.softmax(warped, dim=-1)
        chosen = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
        for i, gen in enumerate(self.gens):
            if self.greedy[i]:
                chosen[i] = torch.argmax(scores[i])
            else:
                chosen[i] = torch.multinomial(probs[i], 1, generator=gen)[0]
        source = (
            raw_logp
            if self.mode == "raw"
            else torch.where(
                torch.tensor(self.greedy, device=scores.device)[:, None],
                raw_logp,
                torch.log_softmax(warped, dim=-1),
            )
        )
        self.logprobs.append(source.gather(1, chosen[:, None])[:, 0])
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out


def _top_p_filter(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep, per row, the smallest set of tokens whose probability mass reaches ``top_p``."""
    if bool((top_p >= 1.0).all()):
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= top_p[:, None]  # the kept set already reached top_p
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class _RowStopper(StoppingCriteria):
    """Ends each row at its own max_tokens, at EOS, or when its text contains a stop string.

    Records where and why each row ended; rows keep being padded by ``generate`` afterwards.
    """

    def __init__(
        self,
        rows: Sequence[_Row],
        prompt_width: int,
        eos_ids: set[int],
        tokenizer: PreTrainedTokenizerBase,
    ) -> None:
        self.rows = rows
        self.prompt_width = prompt_width
        self.eos_ids = eos_ids
        self.tokenizer = tokenizer
        # A stop string of B bytes spans at most B byte-level tokens; a margin covers
        # special tokens that decode to nothing.
        self.windows = [
            max((len(s.encode()) for s in r.sampling.stop), default=0) + 8 for r in rows
        ]
        self.ended_at: list[int | None] = [None] * len(rows)
        self.reason: list[str | None] = [None] * len(rows)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        gen_len = input_ids.shape[1] - self.prompt_width
        last = input_ids[:, -1].tolist()
        for i, row in enumerate(self.rows):
            if self.ended_at[i] is not None or gen_len <= 0:
                continue
            if last[i] in self.eos_ids:
                self._end(i, gen_len, "eos")
            elif row.sampling.stop and self._hits_stop(input_ids[i], i, gen_len):
                self._end(i, gen_len, "stop")
            elif gen_len >= row.sampling.max_tokens:
                self._end(i, gen_len, "length")
        done = [e is not None for e in self.ended_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _hits_stop(self, ids: torch.Tensor, i: int, gen_len: int) -> bool:
        tail = ids[self.prompt_width + max(0, gen_len - self.windows[i]) :]
        text = self.tokenizer.decode(tail, skip_special_tokens=True)
        return find_stop(text, self.rows[i].sampling.stop) is not None

    def _end(self, i: int, length: int, reason: str) -> None:
        self.ended_at[i] = length
        self.reason[i] = reason


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
        logprobs_mode: ``"raw"`` (default) or ``"processed"``, see the module docstring.
        chat_template_kwargs: extra variables for the tokenizer's chat template.
        prefill: ``"auto"`` (one prompt at a time on CPU for prompts of 512+ tokens, padded
            batch otherwise), ``"per_row"`` or ``"batched"``; see the module docstring. Models
            whose cache is not a plain per-layer key/value cache (sliding-window or recurrent
            layers) always use the padded batch.
    """

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: str | Path | PreTrainedTokenizerBase | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        max_batch_size: int = 16,
        seed: int | None = None,
        logprobs_mode: Literal["raw", "processed"] = "raw",
        chat_template_kwargs: dict[str, Any] | None = None,
        trust_remote_code: bool = False,
        prefill: Literal["auto", "per_row", "batched"] = "auto",
    ) -> None:
        if prefill not in ("auto", "per_row", "batched"):
            raise EngineConfigError(
                f"prefill must be 'auto', 'per_row' or 'batched', got {prefill!r}"
            )
        if max_batch_size < 1:
            raise EngineConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if logprobs_mode not in ("raw", "processed"):
            raise EngineConfigError(
                f"logprobs_mode must be 'raw' or 'processed', got {logprobs_mode!r}"
            )
        self.model = self._load_model(model, device, dtype, trust_remote_code)
        self.tokenizer = self._load_tokenizer(model, tokenizer, trust_remote_code)
        self.device = next(self.model.parameters()).device
        self.max_batch_size = max_batch_size
        self.logprobs_mode = logprobs_mode
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.eos_ids = self._eos_ids()
        self.pad_id = (
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else min(self.eos_ids)
        )
        self.prefill = prefill
        # transformers 5.x renamed the cache argument (``past_key_values`` still works, with a
        # warning).
        params = inspect.signature(self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params

    @staticmethod
    def _load_model(
        model: Any, device: Any, dtype: Any, trust_remote_code: bool
    ) -> PreTrainedModel:
        if isinstance(model, PreTrainedModel):
            return model
        if isinstance(dtype, str):
            if dtype != "auto" and dtype not in _DTYPES:
                raise EngineConfigError(
                    f"dtype must be one of {sorted(_DTYPES)} or 'auto', got {dtype!r}"
                )
            dtype = _DTYPES.get(dtype, "auto")
        try:
            loaded = AutoModelForCausalLM.from_pretrained(
                str(model), dtype=dtype or torch.float32, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:  # missing files / not a causal LM checkpoint
            raise EngineConfigError(f"cannot load a causal LM from {str(model)!r}: {exc}") from exc
        return loaded.to(device).eval()

    @staticmethod
    def _load_tokenizer(
        model: Any, tokenizer: Any, trust_remote_code: bool
    ) -> PreTrainedTokenizerBase:
        if isinstance(tokenizer, PreTrainedTokenizerBase):
            return tokenizer
        source = tokenizer if tokenizer is not None else model
        if isinstance(source, PreTrainedModel):
            source = source.config.name_or_path
            if not source:
                raise EngineConfigError("pass tokenizer=... when giving HFEngine a model object")
        return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        if not ids:
            raise EngineConfigError(
                "the model and tokenizer define no EOS token; generation could not stop"
            )
        return ids

    def __repr__(self) -> str:
        return f"HFEngine({self.model.config.name_or_path!r}, device={str(self.device)!r})"

    # ------------------------------------------------------------------------------ generate

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Generate ``n`` completions per request, request-major (see the module docstring)."""
        if self.model is None:
            raise EngineError("this HFEngine is closed")
        rows = self._rows(list(requests))
        results: list[GenerationResult | None] = [None] * len(rows)
        # Similar prompt lengths share a batch: less left padding, same results.
        order = sorted(rows, key=lambda r: len(r.prompt_ids))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.max_batch_size):
                chunk = order[start : start + self.max_batch_size]
                for row, result in zip(chunk, self._generate_chunk(chunk), strict=True):
                    results[row.index] = result
        return [r for r in results if r is not None]

    def _rows(self, requests: list[GenerationRequest]) -> list[_Row]:
        rows: list[_Row] = []
        for request in requests:
            ids = self._encode(request)
            s = request.sampling
            for j in range(s.n):
                seed = _derive_seed(s.seed, j) if s.seed is not None else self._rng.getrandbits(63)
                rows.append(_Row(index=len(rows), prompt_ids=ids, sampling=s, seed=seed))
        return rows

    def _encode(self, request: GenerationRequest) -> list[int]:
        if request.prompt is not None:
            return list(self.tokenizer(request.prompt, add_special_tokens=True)["input_ids"])
        if not getattr(self.tokenizer, "chat_template", None):
            raise EngineConfigError(
                f"the tokenizer of {self.model.config.name_or_path!r} has no chat template: "
                "send raw prompts (GenerationRequest(prompt=...)) or set tokenizer.chat_template"
            )
        messages = [m.model_dump() for m in request.messages or ()]
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **self.chat_template_kwargs
        )
        # The template already wrote the special tokens.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate_chunk(self, chunk: list[_Row]) -> list[GenerationResult]:
        width = max(len(r.prompt_ids) for r in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):  # left padding: prompts end where generation starts
            input_ids[i, width - len(row.prompt_ids) :] = torch.tensor(
                row.prompt_ids, dtype=torch.long
            )
            mask[i, width - len(row.prompt_ids) :] = 1
        sampler = _RowSampler(chunk, self.device, self.logprobs_mode)
        stopper = _RowStopper(chunk, width, self.eos_ids, self.tokenizer)
        config = GenerationConfig(
            max_new_tokens=max(r.sampling.max_tokens for r in chunk),
            do_sample=False,
            num_beams=1,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
        )
        # The model's own generation defaults (repetition penalty, top-k, ...) would otherwise
        # fill every unset field and silently change the distribution the request asked for.
        saved, self.model.generation_config = self.model.generation_config, GenerationConfig()
        # A model shared with a trainer may be in train mode: sample without dropout.
        was_training = self.model.training
        self.model.eval()
        try:
            cache = self._prefill_per_row(chunk, width) if self._use_per_row(chunk) else None
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([stopper]),
                **({self._cache_kw: cache} if cache is not None else {}),
            )
        finally:
            self.model.generation_config = saved
            self.model.train(was_training)
        sequences = out.sequences if hasattr(out, "sequences") else out
        logprobs = torch.stack(sampler.logprobs, dim=1).cpu() if sampler.logprobs else None
        return [
            self._finish_row(
                row,
                i,
                sequences[i, width:].tolist(),
                stopper,
                None if logprobs is None else logprobs[i].tolist(),
            )
            for i, row in enumerate(chunk)
        ]

    def _use_per_row(self, chunk: list[_Row]) -> bool:
        if len(chunk) < 2 or self.prefill == "batched":
            return False
        if self.prefill == "auto" and (
            self.device.type != "cpu" or max(len(r.prompt_ids) for r in chunk) < _PER_ROW_MIN_TOKENS
        ):
            return False
        # Every prompt needs a token left over for generate's own first forward pass.
        return min(len(r.prompt_ids) for r in chunk) >= 2

    def _prefill_per_row(self, chunk: list[_Row], width: int) -> DynamicCache | None:
        """KV cache of every prompt but its last token, each computed unpadded, left-padded into a
        batch.

        Returns ``None`` (padded batch prefill instead) for caches that are not plain per-layer
        key/value tensors.
        """
        per_prompt: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for row in chunk:
            key = tuple(row.prompt_ids)
            if key in per_prompt:
                continue
            ids = torch.tensor([row.prompt_ids[:-1]], dtype=torch.long, device=self.device)
            extra = {"logits_to_keep": 1} if self._logits_to_keep else {}
            out = self.model(input_ids=ids, use_cache=True, **extra)
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            layers = getattr(cache, "layers", None)
            if (
                not isinstance(cache, DynamicCache)
                or not layers
                or any(
                    getattr(layer, "is_sliding", False) or not hasattr(layer, "keys")
                    for layer in layers
                )
            ):
                return None
            per_prompt[key] = [(layer.keys, layer.values) for layer in layers]
        batched = (
            DynamicCache()
        )  # filled through update(): the constructor's arguments vary by version
        for li in range(len(next(iter(per_prompt.values())))):
            keys, values = [], []
            for row in chunk:
                k, v = per_prompt[tuple(row.prompt_ids)][li]
                pad = (0, 0, width - 1 - k.shape[2], 0)  # left-pad the sequence dimension
                keys.append(torch.nn.functional.pad(k, pad))
                values.append(torch.nn.functional.pad(v, pad))
            batched.update(torch.cat(keys), torch.cat(values), li)
        return batched

    def _finish_row(
        self,
        row: _Row,
        i: int,
        generated: list[int],
        stopper: _RowStopper,
        logprobs: list[float] | None,
    ) -> GenerationResult:
        ended = stopper.ended_at[i]
        ids = generated[: ended if ended is not None else len(generated)]
        ids = ids[: row.sampling.max_tokens]
        reason = stopper.reason[i] if ended is not None else "length"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = find_stop(text, row.sampling.stop) if row.sampling.stop else None
        if cut is not None:
            ids = self._ids_through_stop(ids, text, cut, row.sampling.stop)
            text, reason = text[:cut], "stop"
        finish = "length" if reason == "length" else "stop"
        lp = logprobs[: len(ids)] if (logprobs is not None and row.sampling.logprobs) else None
        return GenerationResult(
            text=text,
            finish_reason=finish,
            token_ids=ids,
            logprobs=lp,
            prompt_tokens=len(row.prompt_ids),
            completion_tokens=len(ids),
        )

    def _ids_through_stop(
        self, ids: list[int], text: str, cut: int, stops: Sequence[str]
    ) -> list[int]:
        """Shortest prefix of ``ids`` whose decoding contains the stop string found at ``cut``."""
        stop_len = max(len(s) for s in stops if text.startswith(s, cut))
        target = text[: cut + stop_len]
        lo, hi = 1, len(ids)
        while lo < hi:  # decode(ids[:k]) grows with k, so bisect on "contains the target"
            mid = (lo + hi) // 2
            if self.tokenizer.decode(ids[:mid], skip_special_tokens=True).startswith(target):
                hi = mid
            else:
                lo = mid + 1
        return ids[:lo]

    def close(self) -> None:
        """Drop the model reference (memory is freed once nothing else holds it)."""
        self.model = None  # type: ignore[assignment]


def _derive_seed(seed: int, j: int) -> int:
    """Independent per-sample seed for sample ``j`` of a request seeded with ``seed``."""
    return int(np.random.SeedSequence([seed & (2**63 - 1), j]).generate_state(1, np.uint64)[0] >> 1)
