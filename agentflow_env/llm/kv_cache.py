"""A key/value cache with room reserved for the whole generation: decoding writes in place.

transformers' ``DynamicLayer`` grows its keys and values by ``torch.cat`` at every decoding step,
so each new token copies the layer's whole cache: for SmolLM2-135M decoding 10 rows of ~1,100
prompt tokens that is ~0.5 GB copied per token, 13% of a module episode's time on this CPU (and
the garbage of one full-size copy per step for the allocator). :class:`ReservedLayer` behaves as
a ``DynamicLayer`` whose tensors live at the front of a buffer sized for the prompt plus every
token the request may generate; an update writes the new positions and returns views, so a step
copies only its own token's keys and values. Outputs equal a dynamic cache's exactly (same
values, same order of operations; only where they are stored differs).

It is used where the backend builds the cache itself (the CPU per-row prefill, whose layers are
known to be plain keys and values). A layer that a caller crops keeps its buffer (the view just
gets shorter); one replaced by another tensor (beam reordering, batch selection) is copied into a
fresh buffer at its next update; one asked for more than its room grows by doubling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["ReservedLayer", "drop_rows", "left_padded_cache"]


class ReservedLayer(DynamicLayer):
    """A dynamic cache layer whose keys and values are views of buffers with ``room`` positions.

    Args:
        room: positions to reserve at the first update (prompt plus generation budget); more are
            added, by doubling, if a caller goes past it.
    """

    def __init__(self, room: int) -> None:
        super().__init__()
        if room < 1:
            raise ValueError(f"room must be >= 1, got {room}")
        self.room = room
        self._keys_buf: torch.Tensor | None = None
        self._values_buf: torch.Tensor | None = None

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, length: int) -> ReservedLayer:
        """A layer over buffers already filled up to ``length`` (their size is the room)."""
        layer = cls(keys.shape[-2])
        layer.lazy_initialization(keys, values)
        layer._keys_buf, layer._values_buf = keys, values
        layer.keys, layer.values = keys[:, :, :length], values[:, :, :length]
        return layer

    def _length(self) -> int:
        return self.keys.shape[-2] if self.keys.dim() == 4 else 0

    def _owns_views(self, length: int, needed: int) -> bool:
        buf = self._keys_buf
        return (
            buf is not None
            and length + needed <= buf.shape[-2]
            and self.keys.data_ptr() == buf.data_ptr()
            and self.values.data_ptr() == self._values_buf.data_ptr()  # type: ignore[union-attr]
        )

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = self._length(), key_states.shape[-2]
        rows = key_states.shape[0]
        if length and rows != self.keys.shape[0]:
            raise ValueError(
                f"an update of {rows} rows for a cache of {self.keys.shape[0]} (drop rows with "
                "drop_rows first)"
            )
        if not self._owns_views(length, new):
            # first update, past the room, or keys replaced from outside: (re)allocate, keep
            # what is cached
            room = max(self.room, length + new)
            if self._keys_buf is not None and length + new > self._keys_buf.shape[-2]:
                room = max(room, 2 * self._keys_buf.shape[-2])
            b, h, _, d = key_states.shape
            self._keys_buf = key_states.new_empty(b, h, room, d)
            self._values_buf = value_states.new_empty(b, h, room, value_states.shape[-1])
            if length:
                self._keys_buf[:, :, :length] = self.keys
                self._values_buf[:, :, :length] = self.values
        end = length + new
        self._keys_buf[:rows, :, length:end] = key_states  # type: ignore[index]
        self._values_buf[:rows, :, length:end] = value_states  # type: ignore[index]
        self.keys = self._keys_buf[:rows, :, :end]  # type: ignore[index]
        self.values = self._values_buf[:rows, :, :end]  # type: ignore[index]
        return self.keys, self.values

    def drop_rows(self, rows: Sequence[int]) -> None:
        """Remove batch rows (indices into the current batch), in place: the last remaining row
        moves into each freed slot (one row's cache copied per row dropped), so the batch order
        changes exactly as :func:`drop_rows` describes."""
        length, batch = self._length(), self.keys.shape[0]
        for row in sorted(set(rows), reverse=True):
            batch -= 1
            if row != batch:
                self._keys_buf[row, :, :length] = self._keys_buf[batch, :, :length]  # type: ignore[index]
                self._values_buf[row, :, :length] = self._values_buf[batch, :, :length]  # type: ignore[index]
        self.keys = self._keys_buf[:batch, :, :length]  # type: ignore[index]
        self.values = self._values_buf[:batch, :, :length]  # type: ignore[index]


def left_padded_cache(
    rows: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]], width: int, room: int
) -> DynamicCache:
    """One batch cache from per-row caches (per layer ``(keys, values)`` of batch 1 and at most
    ``width`` positions), each row left-padded with zeros to ``width``, with ``room`` positions
    reserved for the generation that follows.

    Zeros, not uninitialized memory, under the padding: the attention mask gives those positions
    zero weight, and zero times a stray NaN would still be NaN.
    """
    if room < width:
        raise ValueError(f"room ({room}) must be at least width ({width})")
    layers = []
    for li in range(len(rows[0])):
        k0, v0 = rows[0][li]
        _, heads, _, k_dim = k0.shape
        keys = k0.new_empty(len(rows), heads, room, k_dim)
        values = v0.new_empty(len(rows), heads, room, v0.shape[-1])
        for i, row in enumerate(rows):
            k, v = row[li]
            start = width - k.shape[-2]
            keys[i, :, :start].zero_()
            values[i, :, :start].zero_()
            keys[i, :, start:width] = k[0]
            values[i, :, start:width] = v[0]
        layers.append(ReservedLayer.holding(keys, values, width))
    cache = DynamicCache()  # filled by hand: the constructor's arguments vary by version
    cache.layers = layers
    return cache


def drop_rows(cache: DynamicCache, order: list[int], rows: Sequence[int]) -> list[int]:
    """Remove batch rows from a cache of :class:`ReservedLayer` layers, in place.

    ``order[i]`` names what batch row ``i`` holds (a caller's own index); the returned list
    says the same after the drop: each dropped row's slot takes the batch's last row.
    """
    for layer in cache.layers:
        if not isinstance(layer, ReservedLayer):
            raise TypeError(f"drop_rows needs ReservedLayer layers, got {type(layer).__name__}")
        layer.drop_rows(rows)
    order = list(order)
    for row in sorted(set(rows), reverse=True):
        last = order.pop()
        if row < len(order):
            order[row] = last
    return order
