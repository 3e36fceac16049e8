"""Automatic prefix caching (agentflow_env.llm.prefix_cache): the store's rules on tensors, and on
real models (the tiny one and SmolLM2) the same completions and log-probs as a full prefill."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch

from agentflow_env.llm import EngineConfigError, SamplingParams
from agentflow_env.llm.base import GenerationRequest
from agentflow_env.llm.hf_backend import load_causal_lm
from agentflow_env.llm.hf_engine import HFEngine
from agentflow_env.llm.prefix_cache import PrefixCache

BYTES_PER_TOKEN = 2 * 2 * 4 * 4  # two layers, keys and values, 4 floats of 4 bytes


def kv_for(n: int, fill: float = 0.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two layers of [1, 1, n, 4] keys/values whose token t holds t (+ fill)."""
    t = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1).expand(1, 1, n, 4) + fill
    return [(t.clone(), t.clone() + 0.5), (t.clone(), t.clone() + 0.5)]


# ------------------------------------------------------------------------------------ the store
def test_lookup_returns_the_longest_shared_prefix_cropped() -> None:
    cache = PrefixCache(max_bytes=10**6, min_tokens=2)
    cache.store([1, 2, 3, 4, 5], kv_for(5))
    cache.store([1, 2, 9, 9], kv_for(4, fill=100.0))
    n, kv = cache.lookup([1, 2, 3, 4, 7, 8])
    assert n == 4 and kv is not None
    assert kv[0][0].shape == (1, 1, 4, 4)
    assert kv[0][0][0, 0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0]  # the first entry's values
    assert kv[1][1][0, 0, 3, 0].item() == 3.5
    assert cache.stats.hits == 1 and cache.stats.reused_tokens == 4


def test_a_short_or_absent_prefix_is_a_miss() -> None:
    cache = PrefixCache(max_bytes=10**6, min_tokens=3)
    cache.store([1, 2, 3, 4], kv_for(4))
    assert cache.lookup([1, 2, 7]) == (0, None)  # 2 shared tokens < min_tokens
    assert cache.lookup([5, 6, 7, 8]) == (0, None)
    assert cache.stats.lookups == 2 and cache.stats.hits == 0


def test_the_least_recently_used_entry_goes_first_within_the_budget() -> None:
    cache = PrefixCache(max_bytes=8 * BYTES_PER_TOKEN, min_tokens=1)
    cache.store([1, 1, 1, 1], kv_for(4))
    cache.store([2, 2, 2, 2], kv_for(4))
    assert cache.nbytes == 8 * BYTES_PER_TOKEN
    cache.lookup([1, 1, 5])  # entry 1 becomes the most recently used
    cache.store([3, 3, 3, 3], kv_for(4))
    assert cache.lookup([2, 2])[0] == 0  # entry 2 was evicted
    assert cache.lookup([1, 1])[0] == 2 and cache.lookup([3, 3])[0] == 2
    assert cache.stats.evictions == 1 and cache.nbytes == 8 * BYTES_PER_TOKEN
    cache.store(list(range(9)), kv_for(9))  # larger than the whole budget: not stored
    assert len(cache) == 2


def test_an_entry_extended_by_a_new_prompt_is_replaced_by_it() -> None:
    cache = PrefixCache(max_bytes=10**6, min_tokens=1)
    cache.store([1, 2], kv_for(2))
    cache.store([1, 2, 3], kv_for(3))
    assert len(cache) == 1 and cache.nbytes == 3 * BYTES_PER_TOKEN
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.stats.lookups == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(max_bytes=0)
    with pytest.raises(ValueError, match="min_tokens"):
        PrefixCache(max_bytes=10, min_tokens=0)


# ------------------------------------------------------------------------------ real models
def _requests(prefix: str, tails: list[str], **sampling: object) -> list[GenerationRequest]:
    settings = SamplingParams(**{"max_tokens": 12, "logprobs": True, **sampling})
    return [GenerationRequest(prompt=prefix + tail, sampling=settings) for tail in tails]


PREFIX = "Records: " + " ".join(f"Item {i} is stored in room {i % 7}." for i in range(60))
TAILS = ["\nWhere is item 3?", "\nWhere is item 41?", "\nWhich room holds item 12?"]


def test_tiny_model_gives_the_same_completions_with_and_without_the_cache(
    tiny_model_dir: Path,
) -> None:
    plain = HFEngine(tiny_model_dir, prefix_cache_mb=0)
    cached = HFEngine(tiny_model_dir, prefix_cache_mb=64)
    assert plain.prefix_cache is None and cached.prefix_cache is not None
    for tail in TAILS:  # one at a time: each later prompt finds the earlier ones' prefix
        for seeded in ({}, {"temperature": 1.0, "seed": 5}):
            [a] = plain.generate(_requests(PREFIX, [tail], **seeded))
            [b] = cached.generate(_requests(PREFIX, [tail], **seeded))
            assert a.token_ids == b.token_ids and a.text == b.text
            assert a.logprobs is not None and b.logprobs is not None
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    # a batch of prompts sharing the prefix: the same as one at a time
    batch = cached.generate(_requests(PREFIX, TAILS))
    alone = [plain.generate(_requests(PREFIX, [t]))[0] for t in TAILS]
    assert [r.token_ids for r in batch] == [r.token_ids for r in alone]
    stats = cached.prefix_cache.stats
    assert stats.hits >= 5 and stats.reused_tokens > stats.prefilled_tokens
    cached.clear_prefix_cache()
    assert len(cached.prefix_cache) == 0


def test_the_cache_is_on_only_for_a_model_the_engine_loads_itself(tiny_model_dir: Path) -> None:
    assert HFEngine(tiny_model_dir).prefix_cache is not None
    model = load_causal_lm(tiny_model_dir)  # a caller's model may be trained: no stale values
    assert HFEngine(model, tiny_model_dir).prefix_cache is None
    assert HFEngine(model, tiny_model_dir, prefix_cache_mb=16).prefix_cache is not None
    with pytest.raises(EngineConfigError, match="prefix_cache_mb"):
        HFEngine(tiny_model_dir, prefix_cache_mb=-1)


def test_smollm2_module_prompts_agree_with_a_full_prefill(smollm2_dir: Path) -> None:
    plain = HFEngine(smollm2_dir, prefix_cache_mb=0)
    cached = HFEngine(smollm2_dir, prefix_cache_mb=128)
    tails = TAILS[:2]
    for tail in tails:
        [a] = plain.generate(_requests(PREFIX, [tail], max_tokens=8))
        [b] = cached.generate(_requests(PREFIX, [tail], max_tokens=8))
        assert a.text == b.text
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-3)
    assert cached.prefix_cache.stats.hits == 1


def test_a_misplaced_sampling_setting_is_an_error_not_a_default() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_tokens"):
        GenerationRequest(prompt="hi", max_tokens=1)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="max_token"):
        SamplingParams(max_token=3)  # type: ignore[call-arg]
