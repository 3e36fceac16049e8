"""Greedy-by-processor decoding that stops computing a row once it has finished.

``model.generate`` keeps every row of a batch in every forward pass until the last row ends: a
row that finished after 20 tokens is padded and run through the model for as long as the
longest row writes. On a CPU, where a decoding step costs about in proportion to its rows (one
SmolLM2-135M linear layer: 174 us for 1 row, 1,050 us for 10, 1,641 us for 20), that is most of
the work of a batch of module replies of mixed lengths. :func:`decode` runs the same steps as
``generate`` with ``do_sample=False`` (a logits processor that picks each row's token, a
stopping criterion that ends each row) over a :class:`~agentflow_env.llm.kv_cache.ReservedLayer`
cache, and after each step removes the rows that ended from the forward pass and the cache.

What stays as ``generate`` has it: the processor and the criterion see the whole batch (every
row's ids so far, ended rows padded with ``pad_id``; an ended row's scores are zeros), positions
come from the attention mask (left padding), and the result is ``generate``'s: the prompts
followed by the new tokens, ``pad_id`` after a row's end. Tokens and log-probs agree with
``generate`` up to float rounding (a batch of other rows computes the same matrix products in
other blocks).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, LogitsProcessor, StoppingCriteria

from agentflow_env.llm.kv_cache import drop_rows

__all__ = ["decode"]


def decode(
    model: torch.nn.Module,
    cache: DynamicCache,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    processor: LogitsProcessor,
    stopper: StoppingCriteria,
    pad_id: int,
    cache_kw: str = "past_key_values",
    logits_to_keep: bool = False,
) -> torch.Tensor:
    """Decode from a cache holding every prompt but its last token (``[B, W]`` left-padded
    prompts and mask); returns ``[B, W + n]`` as ``generate`` would. The caller runs it under
    ``torch.inference_mode()`` with the model in eval mode."""
    batch = input_ids.shape[0]
    seqs, mask = input_ids, attention_mask
    positions = attention_mask.sum(dim=-1) - 1  # the last prompt token's, per row
    current = input_ids[:, -1]
    order = list(range(batch))  # which row each slot of the shrinking forward batch holds
    running = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    extra = {"logits_to_keep": 1} if logits_to_keep else {}
    for _ in range(max_new_tokens):
        rows = torch.tensor(order, dtype=torch.long, device=input_ids.device)
        out = model(
            input_ids=current[rows, None],
            attention_mask=mask[rows],
            position_ids=positions[rows, None],
            use_cache=True,
            **{cache_kw: cache},
            **extra,
        )
        logits = out.logits[:, -1, :].float()
        scores = logits.new_zeros(batch, logits.shape[-1])
        scores[rows] = logits
        chosen = processor(seqs, scores).argmax(dim=-1)
        current = torch.where(running, chosen, torch.full_like(chosen, pad_id))
        seqs = torch.cat([seqs, current[:, None]], dim=-1)
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)
        positions = positions + 1
        running = running & ~stopper(seqs, scores)
        if not bool(running.any()):
            break
        still = running.tolist()
        ended = [slot for slot, row in enumerate(order) if not still[row]]
        if ended:
            order = drop_rows(cache, order, ended)
    return seqs
