"""Automatic prefix caching for the CPU per-row prefill: reuse the KV cache of a prompt's start.

An agent's module prompts repeat themselves: the executor's tool card and demo calls open every
executor prompt, the verifier's tool metadata every verifier prompt, and a later turn's prompt
extends an earlier one of the same episode. Prefill is what a CPU pays for most (a 600-token
prompt costs SmolLM2-135M as much as ~75 generated tokens), so :class:`PrefixCache` keeps the
per-layer keys and values of recently prefilled prompts and hands back the longest stored prefix
of a new prompt; only the rest is run through the model. This is what vLLM's automatic prefix
caching does on GPUs, at prompt rather than block granularity.

What it keeps: whole prompts' KV tensors (batch 1, unpadded), least recently used first out, up
to ``max_bytes``. A prefix shorter than ``min_tokens`` is not worth a copy and counts as a miss.
Stored tensors are never modified (the model's cache appends by concatenation, making new
tensors), so an entry can be handed out any number of times.

The cached values were computed with the weights of the moment: whoever changes the weights must
call :meth:`clear` (an engine that loads its own model never does; the learner's sampler does
not use a prefix cache). Reusing a prefix changes the shapes of the matrix products, so logits
agree with an uncached prefill up to float rounding (greedy ties may, rarely, break differently).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["KV", "PrefixCache", "PrefixCacheStats"]

KV = list[tuple[torch.Tensor, torch.Tensor]]
"""per layer, (keys, values) of shape ``[1, kv_heads, tokens, head_dim]``"""


@dataclass
class PrefixCacheStats:
    """Counters since the cache was made (or last :meth:`PrefixCache.clear`)."""

    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0
    """prompt tokens whose prefill a hit saved"""
    prefilled_tokens: int = 0
    """prompt tokens run through the model (misses and the rest after a hit)"""
    evictions: int = 0


@dataclass
class _Entry:
    ids: np.ndarray
    kv: KV
    nbytes: int


class PrefixCache:
    """Least-recently-used store of prompts' KV caches, looked up by longest common prefix.

    Args:
        max_bytes: the most the stored tensors may take together; the oldest go first. An entry
            larger than this alone is not stored.
        min_tokens: shortest shared prefix reused (a shorter one costs more to copy than to run).
    """

    def __init__(self, max_bytes: int, min_tokens: int = 16) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if min_tokens < 1:
            raise ValueError(f"min_tokens must be >= 1, got {min_tokens}")
        self.max_bytes, self.min_tokens = max_bytes, min_tokens
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self.nbytes = 0
        self.stats = PrefixCacheStats()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ids: Sequence[int]) -> tuple[int, KV | None]:
        """The longest stored prefix of ``ids``: ``(length, its KV cropped to it)``, or
        ``(0, None)`` when none reaches ``min_tokens``."""
        self.stats.lookups += 1
        query = np.asarray(ids, dtype=np.int64)
        best_len, best_key = 0, None
        for key, entry in self._entries.items():
            n = min(len(query), len(entry.ids))
            if n <= best_len:
                continue
            diff = np.flatnonzero(query[:n] != entry.ids[:n])
            shared = int(diff[0]) if diff.size else n
            if shared > best_len:
                best_len, best_key = shared, key
        if best_key is None or best_len < self.min_tokens:
            return 0, None
        self._entries.move_to_end(best_key)
        self.stats.hits += 1
        self.stats.reused_tokens += best_len
        kv = self._entries[best_key].kv
        return best_len, [(k[:, :, :best_len], v[:, :, :best_len]) for k, v in kv]

    def store(self, ids: Sequence[int], kv: KV) -> None:
        """Keep ``kv`` (computed for exactly ``ids``) as the newest entry."""
        key = tuple(int(i) for i in ids)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if nbytes > self.max_bytes:
            return
        # an entry that is a prefix of the new prompt adds nothing the new one does not hold
        for old in [k for k in self._entries if len(k) < len(key) and key[: len(k)] == k]:
            self._drop(old)
        self._entries[key] = _Entry(np.asarray(key, dtype=np.int64), kv, nbytes)
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.stats.evictions += 1

    def clear(self) -> None:
        """Forget every entry (call after the weights change) and reset the counters."""
        self._entries.clear()
        self.nbytes = 0
        self.stats = PrefixCacheStats()

    def _drop(self, key: tuple[int, ...]) -> None:
        self.nbytes -= self._entries.pop(key).nbytes


def _plain_layers(cache: object) -> KV | None:
    """Per-layer (keys, values) of a plain dynamic cache; ``None`` for any other kind (sliding
    window or recurrent layers), which the caller then prefills as a padded batch."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    if not isinstance(cache, DynamicCache) or not layers:
        return None
    if any(getattr(layer, "is_sliding", False) or not hasattr(layer, "keys") for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def prefill_one(
    model: torch.nn.Module,
    ids: Sequence[int],
    cache_kw: str,
    logits_to_keep: bool,
    prefix_cache: PrefixCache | None = None,
) -> KV | None:
    """KV cache of ``ids`` (batch 1, unpadded), reusing the longest cached prefix; stored back
    into ``prefix_cache``. ``None`` for caches that are not plain per-layer keys and values."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    start, past = prefix_cache.lookup(ids) if prefix_cache is not None else (0, None)
    if past is not None and start == len(ids):
        return past
    extra: dict[str, object] = {"logits_to_keep": 1} if logits_to_keep else {}
    if past is not None:
        cache = DynamicCache()  # filled through update(): the constructor's arguments vary
        for li, (k, v) in enumerate(past):
            cache.update(k, v, li)
        extra[cache_kw] = cache
    rest = torch.tensor([list(ids[start:])], dtype=torch.long, device=device)
    out = model(input_ids=rest, use_cache=True, **extra)
    kv = _plain_layers(out["cache"] if "cache" in out else out["past_key_values"])
    if prefix_cache is not None:
        prefix_cache.stats.prefilled_tokens += len(ids) - start
        if kv is not None:
            prefix_cache.store(ids, kv)
    return kv
