"""The reserved-room KV cache: same values as transformers' dynamic cache, written in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from agentflow_env.llm.kv_cache import ReservedLayer, drop_rows, left_padded_cache


def _states(gen: torch.Generator, tokens: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.randn(batch, 3, tokens, 8, generator=gen),
        torch.randn(batch, 3, tokens, 8, generator=gen),
    )


def test_reserved_layer_matches_a_dynamic_layer_through_growth_crop_and_replacement() -> None:
    gen = torch.Generator().manual_seed(0)
    reserved, dynamic = ReservedLayer(room=6), DynamicLayer()

    def step(tokens: int) -> None:
        k, v = _states(gen, tokens)
        got, want = reserved.update(k, v), dynamic.update(k, v)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)

    step(4)  # prefill
    step(1)
    step(1)  # room is full now
    step(3)  # past the room: grows
    assert reserved.get_seq_length() == dynamic.get_seq_length() == 9
    reserved.crop(-2)
    dynamic.crop(-2)
    step(1)
    assert reserved.get_seq_length() == 8
    # a caller replacing the tensors (as beam reordering does) is respected
    order = torch.tensor([1, 0])
    reserved.reorder_cache(order)
    dynamic.reorder_cache(order)
    step(2)
    assert torch.equal(reserved.keys, dynamic.keys)
    assert torch.equal(reserved.values, dynamic.values)


def test_updates_within_the_room_write_in_place() -> None:
    gen = torch.Generator().manual_seed(1)
    layer = ReservedLayer(room=10)
    layer.update(*_states(gen, 5))
    start = layer.keys.data_ptr()
    for _ in range(5):
        keys, _ = layer.update(*_states(gen, 1))
        assert keys.data_ptr() == start  # a view of the same buffer: nothing was copied
    assert layer.get_seq_length() == 10
    layer.update(*_states(gen, 1))
    assert layer.get_seq_length() == 11 and layer._keys_buf.shape[-2] == 20  # doubled


def test_left_padded_cache_pads_with_zeros_and_keeps_each_row() -> None:
    gen = torch.Generator().manual_seed(2)
    rows = [
        [_states(gen, 3, batch=1), _states(gen, 3, batch=1)],
        [_states(gen, 5, batch=1), _states(gen, 5, batch=1)],
    ]
    cache = left_padded_cache(rows, width=5, room=9)
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 5
    for li, layer in enumerate(cache.layers):
        assert layer.keys.shape == (2, 3, 5, 8) and layer._keys_buf.shape[-2] == 9
        assert torch.equal(layer.keys[0, :, :2], torch.zeros(3, 2, 8))
        assert torch.equal(layer.keys[0, :, 2:], rows[0][li][0][0])
        assert torch.equal(layer.values[1], rows[1][li][1][0])
    with pytest.raises(ValueError, match="room"):
        left_padded_cache(rows, width=5, room=4)
    with pytest.raises(ValueError, match="room"):
        ReservedLayer(room=0)


def test_generation_through_a_reserved_cache_equals_a_dynamic_one(tiny_model_dir: Path) -> None:
    """A real model decoding 12 tokens from either cache: the same tokens and logits."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.randint(5, 100, (2, 20), generator=torch.Generator().manual_seed(3))
    runs = []
    with torch.inference_mode():
        for reserved in (False, True):
            cache = model(input_ids=ids[:, :-1], use_cache=True).past_key_values
            if reserved:  # the same values, per row, in buffers with room for the generation
                rows = [
                    [(layer.keys[i : i + 1], layer.values[i : i + 1]) for layer in cache.layers]
                    for i in range(2)
                ]
                cache = left_padded_cache(rows, width=19, room=32)
            runs.append(
                model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    past_key_values=cache,
                    max_new_tokens=12,
                    min_new_tokens=12,
                    do_sample=False,
                    output_scores=True,
                    return_dict_in_generate=True,
                    pad_token_id=0,
                )
            )
    assert torch.equal(runs[0].sequences, runs[1].sequences)
    for a, b in zip(runs[0].scores, runs[1].scores, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_dropping_rows_moves_the_last_row_into_each_freed_slot() -> None:
    gen = torch.Generator().manual_seed(4)
    rows = [[_states(gen, 4, batch=1)] for _ in range(4)]
    cache = left_padded_cache(rows, width=4, room=8)
    order = drop_rows(cache, ["a", "b", "c", "d"], [0, 2])  # type: ignore[list-item]
    assert order == ["d", "b"]
    layer = cache.layers[0]
    assert layer.keys.shape[0] == 2 and layer.keys.data_ptr() == layer._keys_buf.data_ptr()
    assert torch.equal(layer.keys[0], rows[3][0][0][0]) and torch.equal(
        layer.values[1], rows[1][0][1][0]
    )
    with pytest.raises(ValueError, match="2 rows for a cache of 4|4 rows for a cache of 2"):
        layer.update(*_states(gen, 1, batch=4))  # the old batch size: refused, not half-written
    layer.update(*_states(gen, 1, batch=2))  # the next step writes the two rows in place
    assert layer.get_seq_length() == 5 and layer.keys.data_ptr() == layer._keys_buf.data_ptr()
    with pytest.raises(TypeError, match="ReservedLayer"):
        plain = DynamicCache()
        plain.update(*_states(gen, 2), 0)
        drop_rows(plain, [0, 1], [0])
