"""Transformers generation over a live model: prompt token ids in, sampled ids + log-probs out.

The project's one implementation of sampling with ``model.generate``. :class:`HFBackend` wraps a
model and tokenizer that someone else loaded and owns, so whoever holds the weights decides what
generates: :class:`~agentflow_env.llm.hf_engine.HFEngine` wraps one around a model it loads itself
(text requests in, text results out) and the learner's ``Policy`` wraps one around the model it
trains (the weights being trained are the weights that sample). This module also owns loading a
causal LM and tokenizer (:func:`load_causal_lm`, :func:`load_tokenizer`), the EOS/pad ids of a
model (:func:`eos_token_ids`, :func:`pad_token_id`) and per-sample seeds (:func:`derive_seed`).

Every row (one :class:`~agentflow_env.llm.base.TokenPrompt`) keeps its own settings, even when rows
with different settings share one batch: a logits processor (:class:`_RowSampler`) applies each
row's optional logits processor, temperature and top-p, and draws the token itself from uniforms
that the row's seed fixes in advance (transformers' ``generate`` has no generator argument and
would otherwise sample from the global RNG); a stopping criterion (:class:`_RowStopper`) ends
each row at its own ``max_tokens``, EOS or stop string. Consequences worth knowing:

- the same prompt with the same seed gives the same completion whatever else is in the batch (up
  to floating-point effects of padding), on any device, without touching global RNG state;
- returned ``token_ids`` are the sampled ids (EOS included when the model stopped on it; cut after
  the token that completed a stop string), ``text`` is their decoding without special tokens and
  without the stop string;
- ``logprobs`` are the sampled tokens' log-probabilities under the distribution ``logprobs_mode``
  names: ``"raw"`` (``log_softmax`` of the model's logits: what an engine user recomputes),
  ``"temperature"`` (``log_softmax(logits / temperature)``, before top-p and any row processor:
  what a learner's loss recomputes at its sampling temperature) or ``"processed"`` (the
  distribution actually sampled from, after the row's processor, temperature and top-p). Greedy
  rows (``temperature == 0``) report the raw value in every mode.

A row's :class:`~agentflow_env.llm.constraints.Constraint` becomes one more row processor (after
the row's own): llguidance masks every token the constraint does not allow
(:mod:`agentflow_env.llm.structured`, the ``structured`` extra), so greedy and sampled rows alike
only write text the constraint accepts, and end (EOS) only where it is complete.

Long prompts on CPU are prefilled one at a time (``prefill="auto"``: 512 tokens or more): a
left-padded batch needs an explicit attention mask, and with a mask PyTorch's CPU
``scaled_dot_product_attention`` leaves its flash kernel for one that materializes every
(query, key) score (16 x 2,000 tokens: 458 ms masked vs 163 ms causal per call); a whole
24-token generation for 16 prompts of ~2,300 tokens took 2.2 s padded, 1.2 s this way. Each
prompt but its last token is prefilled unpadded (causal, no mask), the per-prompt KV caches are
left-padded into one batch cache with room reserved for every token to come (decoding then
writes in place instead of concatenating, :mod:`~agentflow_env.llm.kv_cache`), and
:func:`~agentflow_env.llm.hf_decode.decode` decodes the batch from there, each row leaving the
forward pass when it ends (``generate`` would pad it until the longest row ends).
Identical prompts (``n > 1``, or a group of trajectories on one question) are prefilled once. On
GPUs (``"auto"``) the padded batch prefill is kept: masked attention kernels there are efficient
and one prompt at a time would leave the device idle.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
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

from agentflow_env.llm.base import TokenCompletion, TokenPrompt
from agentflow_env.llm.common import EngineConfigError, find_stop
from agentflow_env.llm.hf_decode import decode
from agentflow_env.llm.kv_cache import left_padded_cache
from agentflow_env.llm.prefix_cache import KV, PrefixCache, prefill_one

logger = logging.getLogger(__name__)

__all__ = [
    "DTYPES",
    "HFBackend",
    "LogprobsMode",
    "derive_seed",
    "eos_token_ids",
    "load_causal_lm",
    "load_tokenizer",
    "pad_token_id",
]

LogprobsMode = Literal["raw", "temperature", "processed"]
_LOGPROBS_MODES = ("raw", "temperature", "processed")
_PREFILLS = ("auto", "per_row", "batched")

# Below this prompt width the padded batch prefill is cheaper on CPU: each unpadded forward pass
# costs a few ms of fixed overhead (16 prompts: 265 tokens 196 vs 240 ms per call, 587 tokens
# 385 vs 359 ms, 1,212 tokens 903 vs 574 ms, 2,300 tokens 2,211 vs 1,165 ms; tiny Qwen2).
_PER_ROW_MIN_TOKENS = 512

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""dtype names a model can be loaded in"""

# _RowStopper's reasons
_RUNNING, _EOS, _STOP, _LENGTH = 0, 1, 2, 3


# ------------------------------------------------------------------------------------ loading
def load_causal_lm(
    source: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """A causal LM from a hub name or local path, on ``device``, in eval mode.

    ``dtype``: a name in :data:`DTYPES`, ``"auto"`` (the checkpoint's), a torch dtype, or
    ``None`` (float32). Bad names and unloadable sources raise :class:`EngineConfigError`.
    """
    if isinstance(dtype, str):
        if dtype != "auto" and dtype not in DTYPES:
            raise EngineConfigError(
                f"dtype must be one of {sorted(DTYPES)} or 'auto', got {dtype!r}"
            )
        dtype = DTYPES.get(dtype, "auto")  # type: ignore[assignment]
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(source), dtype=dtype or torch.float32, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:  # missing files / not a causal LM checkpoint
        raise EngineConfigError(f"cannot load a causal LM from {str(source)!r}: {exc}") from exc
    return model.to(device).eval()


def load_tokenizer(
    source: str | Path | PreTrainedModel, *, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer saved at ``source`` (a hub name, a path, or a model loaded from one)."""
    if isinstance(source, PreTrainedModel):
        source = source.config.name_or_path
        if not source:
            raise EngineConfigError("pass tokenizer=... along with a model object")
    return AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust_remote_code)


def eos_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Every id that ends generation: the model's generation config's and the tokenizer's."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    if not ids:
        raise EngineConfigError(
            "the model and tokenizer define no EOS token; generation could not stop"
        )
    return frozenset(ids)


def pad_token_id(tokenizer: PreTrainedTokenizerBase, eos_ids: frozenset[int]) -> int:
    """The tokenizer's pad id, else the smallest EOS id (padding is masked out either way)."""
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else min(eos_ids)


def derive_seed(seed: int, j: int) -> int:
    """Independent seed for sample ``j`` of a batch or request seeded with ``seed``."""
    return int(np.random.SeedSequence([seed & (2**63 - 1), j]).generate_state(1, np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------ per row
class _RowSampler(LogitsProcessor):
    """Chooses every row's next token itself and returns scores whose argmax is that token.

    Generation runs with ``do_sample=False``, so transformers' argmax picks exactly the token
    chosen here. A sampled row draws by inverting its distribution's CDF at a uniform number
    from its own sequence (one ``torch.rand`` per row and chunk, drawn up front from the row's
    seed): one batched draw per step, independent of the other rows.
    """

    def __init__(
        self, rows: Sequence[TokenPrompt], width: int, steps: int, mode: str, stopper: _RowStopper
    ) -> None:
        device = stopper.reason.device
        temps = [r.sampling.temperature or 1.0 for r in rows]  # greedy rows: scaled == raw
        self.temps = torch.tensor(temps, dtype=torch.float32, device=device)[:, None]
        self.unit_temps = all(t == 1.0 for t in temps)
        self.greedy = torch.tensor([r.sampling.temperature == 0.0 for r in rows], device=device)
        self.any_sampled = not bool(self.greedy.all())
        top_ps = [1.0 if r.sampling.temperature == 0.0 else r.sampling.top_p for r in rows]
        self.top_ps = torch.tensor(top_ps, dtype=torch.float32, device=device)
        self.any_top_p = any(p < 1.0 for p in top_ps)
        uniforms = torch.zeros((len(rows), steps), dtype=torch.float64)
        for i, row in enumerate(rows):
            if row.sampling.temperature > 0.0:
                gen = torch.Generator().manual_seed(row.seed)
                uniforms[i] = torch.rand(steps, generator=gen, dtype=torch.float64)
        self.uniforms = uniforms.to(device)
        # Row processors see their row as if alone: its prompt and tokens so far, no padding; and
        # only while it runs (a stateful one, e.g. a grammar, must not be fed padding).
        self.stopper = stopper
        self.processors = [
            (i, r.logits_processor, width - len(r.prompt_ids))
            for i, r in enumerate(rows)
            if r.logits_processor is not None
        ]
        self.mode = mode
        self.step = 0
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        raw = scores.float()
        scores = raw
        if self.processors:
            scores = raw.clone()
            ended = (self.stopper.reason != _RUNNING).tolist()
            for i, processor, start in self.processors:
                if ended[i]:
                    continue
                scores[i : i + 1] = processor(input_ids[i : i + 1, start:], scores[i : i + 1])
        scaled = scores if self.unit_temps else scores / self.temps
        warped = _top_p_filter(scaled, self.top_ps) if self.any_top_p else scaled
        logp = torch.log_softmax(warped, dim=-1)
        chosen = scores.argmax(dim=-1)
        if self.any_sampled:
            cdf = logp.exp().double().cumsum(dim=-1)
            target = self.uniforms[:, self.step] * cdf[:, -1]
            drawn = torch.searchsorted(cdf, target[:, None], right=True)[:, 0]
            # target < total by construction; the guard keeps a rounding edge on a real token
            drawn = torch.where(target < cdf[:, -1], drawn.clamp_(max=cdf.shape[1] - 1), chosen)
            chosen = torch.where(self.greedy, chosen, drawn)
        self.step += 1
        self.logprobs.append(self._logprobs(raw, logp, chosen[:, None]))
        out = torch.full_like(raw, float("-inf"))
        return out.scatter_(1, chosen[:, None], 0.0)

    def _logprobs(self, raw: torch.Tensor, logp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The chosen tokens' log-probs under the distribution ``mode`` names (module docstring).

        ``logp`` is what was sampled from; without row processors and top-p it is
        ``log_softmax(raw / T)`` (T = 1 for greedy rows), and is reused instead of recomputed.
        """
        picked = logp.gather(1, idx)[:, 0]
        plain = not self.processors and not self.any_top_p
        if self.mode == "processed":
            if not self.processors:  # greedy rows sampled from the raw distribution
                return picked
            return torch.where(self.greedy, _logprob_at(raw, idx), picked)
        if self.mode == "temperature":
            if plain:
                return picked
            return _logprob_at(raw if self.unit_temps else raw / self.temps, idx)
        return picked if plain and self.unit_temps else _logprob_at(raw, idx)


class _Chain:
    """Two row processors, one after the other (``error``: the second's, a constraint's)."""

    def __init__(
        self,
        first: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        second: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        self.first, self.second = first, second

    def __call__(self, ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.second(ids, self.first(ids, scores))

    @property
    def error(self) -> str | None:
        return getattr(self.second, "error", None)


def _logprob_at(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` at ``idx`` (one per row) without materializing the softmax."""
    return logits.gather(1, idx)[:, 0] - torch.logsumexp(logits, dim=-1)


def _top_p_filter(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep, per row, the smallest set of tokens whose probability mass reaches ``top_p``."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= top_p[:, None]  # the kept set already reached top_p
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class _RowStopper(StoppingCriteria):
    """Ends each row at its own max_tokens, at EOS, or when its text contains a stop string.

    Records where (``ended_at``, tokens generated) and why each row ended; rows keep being padded
    by ``generate`` afterwards.
    """

    def __init__(
        self,
        rows: Sequence[TokenPrompt],
        prompt_width: int,
        eos_ids: frozenset[int],
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
    ) -> None:
        self.rows = rows
        self.prompt_width = prompt_width
        self.tokenizer = tokenizer
        self.eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
        self.max_tokens = torch.tensor([r.sampling.max_tokens for r in rows], device=device)
        self.stop_rows = [i for i, r in enumerate(rows) if r.sampling.stop]
        # A stop string of B bytes spans at most B byte-level tokens; a margin covers
        # special tokens that decode to nothing.
        self.windows = {
            i: max(len(s.encode()) for s in rows[i].sampling.stop) + 8 for i in self.stop_rows
        }
        self.ended_at = torch.zeros(len(rows), dtype=torch.long, device=device)
        self.reason = torch.full((len(rows),), _RUNNING, dtype=torch.long, device=device)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        gen_len = input_ids.shape[1] - self.prompt_width
        if gen_len > 0:
            self._end(torch.isin(input_ids[:, -1], self.eos), gen_len, _EOS)
            if self.stop_rows:
                running = (self.reason == _RUNNING).tolist()
                hits = [
                    i
                    for i in self.stop_rows
                    if running[i] and self._hits_stop(input_ids[i], i, gen_len)
                ]
                if hits:
                    mask = torch.zeros_like(self.reason, dtype=torch.bool)
                    mask[hits] = True
                    self._end(mask, gen_len, _STOP)
            self._end(gen_len >= self.max_tokens, gen_len, _LENGTH)
        return self.reason != _RUNNING

    def _end(self, mask: torch.Tensor, length: int, reason: int) -> None:
        mask = mask & (self.reason == _RUNNING)
        self.ended_at.masked_fill_(mask, length)
        self.reason.masked_fill_(mask, reason)

    def _hits_stop(self, ids: torch.Tensor, i: int, gen_len: int) -> bool:
        tail = ids[self.prompt_width + max(0, gen_len - self.windows[i]) :]
        text = self.tokenizer.decode(tail, skip_special_tokens=True)
        return find_stop(text, self.rows[i].sampling.stop) is not None


# ------------------------------------------------------------------------------------ backend
class HFBackend:
    """Batched, per-row seeded sampling with ``model.generate`` on a model someone else holds.

    Args:
        model: a loaded transformers causal LM (a LoRA-injected or FSDP-sharded one too: it is
            only run, never copied or moved). Under FSDP the caller holds the full weights
            (``Policy.gathered``) while :meth:`generate` runs.
        tokenizer: its tokenizer (decodes completions and checks stop strings).
        max_batch_size: rows per ``model.generate`` call; rows are grouped by prompt length.
        logprobs_mode: ``"raw"``, ``"temperature"`` or ``"processed"`` (module docstring).
        prefill: ``"auto"`` (one prompt at a time on CPU for prompts of 512+ tokens, padded
            batch otherwise), ``"per_row"`` or ``"batched"`` (module docstring). Models whose
            cache is not a plain per-layer key/value cache (sliding-window or recurrent layers)
            always use the padded batch.
        device: where the model runs (default: where its first parameter is).
        prefix_cache: reuse the KV cache of recently prefilled prompts' longest shared prefix
            (:mod:`~agentflow_env.llm.prefix_cache`; CPU per-row prefill only, which ``"auto"``
            then uses for every prompt). Whoever changes the weights clears it.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 16,
        logprobs_mode: LogprobsMode = "raw",
        prefill: Literal["auto", "per_row", "batched"] = "auto",
        device: torch.device | None = None,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        if prefill not in _PREFILLS:
            raise EngineConfigError(
                f"prefill must be 'auto', 'per_row' or 'batched', got {prefill!r}"
            )
        if logprobs_mode not in _LOGPROBS_MODES:
            raise EngineConfigError(
                f"logprobs_mode must be one of {_LOGPROBS_MODES}, got {logprobs_mode!r}"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.logprobs_mode = logprobs_mode
        self.prefill = prefill
        self.prefix_cache = prefix_cache
        self.device = device if device is not None else next(model.parameters()).device
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)
        self._lock = threading.Lock()
        # transformers 5.x renamed the cache argument (``past_key_values`` still works, with a
        # warning).
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @max_batch_size.setter
    def max_batch_size(self, value: int) -> None:
        if value < 1:
            raise EngineConfigError(f"max_batch_size must be >= 1, got {value}")
        self._max_batch_size = value

    def generate(self, prompts: Sequence[TokenPrompt]) -> list[TokenCompletion]:
        """One completion per prompt, in order (see the module docstring)."""
        if any(len(p.prompt_ids) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        results: list[TokenCompletion | None] = [None] * len(prompts)
        # Similar prompt lengths share a batch: less left padding, same results. Inference mode
        # (cheaper per op than no_grad for a small model): nothing made here reaches autograd.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].prompt_ids))
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.max_batch_size):
                idx = order[start : start + self.max_batch_size]
                chunk = [prompts[i] for i in idx]
                for i, result in zip(idx, self._generate_chunk(chunk), strict=True):
                    results[i] = result
        return results  # type: ignore[return-value]

    def _constrained(self, chunk: list[TokenPrompt]) -> list[TokenPrompt]:
        """Rows whose constraint became a (fresh, stateful) row processor."""
        if all(r.constraint is None for r in chunk):
            return chunk
        from agentflow_env.llm.structured import masker_for

        masker = masker_for(self.tokenizer, self.eos_ids)
        rows = []
        for row in chunk:
            if row.constraint is None:
                rows.append(row)
                continue
            mask = masker.processor(row.constraint)
            own = row.logits_processor
            processor = mask if own is None else _Chain(own, mask)
            rows.append(dataclasses.replace(row, logits_processor=processor))
        return rows

    def _generate_chunk(self, chunk: list[TokenPrompt]) -> list[TokenCompletion]:
        chunk = self._constrained(chunk)
        width = max(len(r.prompt_ids) for r in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):  # left padding: prompts end where generation starts
            input_ids[i, width - len(row.prompt_ids) :] = torch.as_tensor(
                list(row.prompt_ids), dtype=torch.long
            )
            mask[i, width - len(row.prompt_ids) :] = 1
        steps = max(r.sampling.max_tokens for r in chunk)
        stopper = _RowStopper(chunk, width, self.eos_ids, self.tokenizer, self.device)
        sampler = _RowSampler(chunk, width, steps, self.logprobs_mode, stopper)
        config = GenerationConfig(
            max_new_tokens=steps,
            do_sample=False,
            num_beams=1,
            use_cache=True,
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
            cache = self._prefill_per_row(chunk, width, steps) if self._use_per_row(chunk) else None
            if cache is not None:  # rows leave the forward pass as they end (hf_decode)
                sequences = decode(
                    self.model,
                    cache,
                    input_ids.to(self.device),
                    mask.to(self.device),
                    max_new_tokens=steps,
                    processor=sampler,
                    stopper=stopper,
                    pad_id=self.pad_id,
                    cache_kw=self._cache_kw,
                    logits_to_keep=self._logits_to_keep,
                )
            else:
                sequences = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    generation_config=config,
                    logits_processor=LogitsProcessorList([sampler]),
                    stopping_criteria=StoppingCriteriaList([stopper]),
                    # transformers turns this on for FSDP modules (a collective per token);
                    # the caller holds full weights and ranks generate different numbers of
                    # tokens.
                    synced_gpus=False,
                )
        finally:
            self.model.generation_config = saved
            self.model.train(was_training)
        self._report_constraint_errors(chunk)
        generated = sequences[:, width:].tolist()
        logprobs = torch.stack(sampler.logprobs, dim=1).tolist()
        ended, reasons = stopper.ended_at.tolist(), stopper.reason.tolist()
        return [
            self._finish(row, generated[i], logprobs[i], ended[i], reasons[i])
            for i, row in enumerate(chunk)
        ]

    @staticmethod
    def _report_constraint_errors(chunk: Sequence[TokenPrompt]) -> None:
        for row in chunk:
            error = getattr(row.logits_processor, "error", None)
            if error:  # not expected: the mask only lets through tokens the matcher accepts
                logger.error("a constrained row left its constraint: %s", error)

    def _use_per_row(self, chunk: Sequence[TokenPrompt]) -> bool:
        # Every prompt needs a token left over for the decoder's own first forward pass.
        if self.prefill == "batched" or min(len(r.prompt_ids) for r in chunk) < 2:
            return False
        if self.prefill == "per_row":
            return True
        # "auto": CPU only; with a prefix cache always (only this path uses it), else for a
        # batch of long prompts
        if self.device.type != "cpu":
            return False
        if self.prefix_cache is not None:
            return True
        return len(chunk) >= 2 and max(len(r.prompt_ids) for r in chunk) >= _PER_ROW_MIN_TOKENS

    def _prefill_per_row(
        self, chunk: list[TokenPrompt], width: int, steps: int
    ) -> DynamicCache | None:
        """KV cache of every prompt but its last token, each computed unpadded (reusing the
        longest cached prefix when a prefix cache is on), left-padded into a batch cache with
        room for the ``steps`` tokens to come (:mod:`~agentflow_env.llm.kv_cache`).

        Returns ``None`` (padded batch prefill instead) for caches that are not plain per-layer
        key/value tensors.
        """
        per_prompt: dict[tuple[int, ...], KV] = {}
        for row in chunk:
            key = tuple(row.prompt_ids)
            if key in per_prompt:
                continue
            kv = prefill_one(
                self.model, key[:-1], self._cache_kw, self._logits_to_keep, self.prefix_cache
            )
            if kv is None:
                return None
            per_prompt[key] = kv
        rows = [per_prompt[tuple(row.prompt_ids)] for row in chunk]
        # width - 1 prefilled positions, then generate's first pass (the last prompt token) and
        # one position per new token
        return left_padded_cache(rows, width - 1, width + steps)

    def _finish(
        self, row: TokenPrompt, generated: list[int], logprobs: list[float], ended: int, reason: int
    ) -> TokenCompletion:
        ids = generated[: ended if reason != _RUNNING else len(generated)]
        ids = ids[: row.sampling.max_tokens]
        stop_hit = reason in (_EOS, _STOP)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = find_stop(text, row.sampling.stop) if row.sampling.stop else None
        if cut is not None:
            ids = self._ids_through_stop(ids, text, cut, row.sampling.stop)
            text, stop_hit = text[:cut], True
        return TokenCompletion(
            token_ids=ids,
            logprobs=logprobs[: len(ids)],
            text=text,
            finish_reason="stop" if stop_hit else "length",
            prompt_tokens=len(row.prompt_ids),
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
