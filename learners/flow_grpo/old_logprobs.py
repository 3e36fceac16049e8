"""Old log-probs recomputed by the trainer: the ratio's denominator from its own forward pass.

The clipped ratio ``exp(logp - old_logp)`` is only 1 at the first optimizer step when ``old_logp``
is what the trainer itself computes for the same tokens. The sampler's reported log-probs are that
only when it runs the same weights, kernels and precision and reports the same distribution: vLLM
reports raw or processed log-probs (before or after temperature, top-p), in its own kernels and
often another precision. :func:`recompute_old_logprobs` scores every sampled response with the
trainer's model once per rollout, before the first optimizer step (as verl does), in the layout
the loss uses (:func:`learners.packing.pack_samples`, packed or per turn), so the denominator no
longer depends on what or how the sampler reports. ``algo.recompute_old_logprobs`` switches it on
(by default for the vLLM backend).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from learners.distributed import Dist
from learners.packing import pack_samples
from learners.policy import Policy
from learners.rollout import TurnSample

__all__ = ["recompute_old_logprobs"]


def recompute_old_logprobs(
    policy: Policy,
    samples: Sequence[TurnSample],
    *,
    temperature: float,
    pack: bool,
    micro_batch_size: int,
    module: nn.Module | None = None,
    dist: Dist | None = None,
) -> tuple[list[TurnSample], dict[str, float]]:
    """The samples with ``logprobs`` replaced by the policy's own, and how far the sampler's were.

    Scored without gradients in eval mode (no dropout, no activation checkpointing), at the
    sampling ``temperature`` as the loss scores, ``micro_batch_size`` sequences per forward.
    ``module``: the trainer's (FSDP-wrapped) scorer. Under FSDP every rank runs as many forwards
    (zero-target padding ones where it has fewer), since each forward all-gathers weights. Stats
    (summed over ranks): ``train/old_logprob_abs_diff`` (token mean of |sampler - recomputed|) and
    ``train/old_logprob_max_abs_diff``.
    """
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    seqs = pack_samples(samples, pack=pack)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i].ids))  # less padding
    chunks = [order[k : k + micro_batch_size] for k in range(0, len(order), micro_batch_size)]
    n_forwards = len(chunks)
    if dist is not None and dist.fsdp:
        n_forwards = int(dist.all_reduce_max([n_forwards])[0])
    scored: dict[int, list[float]] = {}
    model = policy.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for k in range(n_forwards):
                if k >= len(chunks):  # only there to match the other ranks' collectives
                    pad = policy.pad_id
                    policy.score(
                        [[pad, pad]], [[False, True]], temperature=temperature, module=module
                    )
                    continue
                part = [seqs[i] for i in chunks[k]]
                logp, _ = policy.score(
                    [s.ids for s in part],
                    [s.target_mask for s in part],
                    temperature=temperature,
                    module=module,
                )
                flat = logp.float().cpu().tolist()
                offset = 0
                for i in chunks[k]:
                    scored[i] = flat[offset : offset + seqs[i].num_targets]
                    offset += seqs[i].num_targets
    finally:
        model.train(was_training)
    if policy.shards is not None:  # a forward leaves the FSDP root's weights gathered
        policy.shards.reshard()
    fresh: list[list[float]] = [[] for _ in samples]
    abs_sum, abs_max, count = 0.0, 0.0, 0
    for i, seq in enumerate(seqs):
        for sample, old, new in zip(seq.token_sample, seq.old_logprobs, scored[i], strict=True):
            fresh[sample].append(new)
            diff = abs(old - new)
            abs_sum, abs_max, count = abs_sum + diff, max(abs_max, diff), count + 1
    out = [
        dataclasses.replace(s, logprobs=fresh[k]) if s.response_ids else s
        for k, s in enumerate(samples)
    ]
    if dist is not None:
        abs_sum, count = dist.all_reduce_sum([abs_sum, count])
        abs_max = dist.all_reduce_max([abs_max])[0]
    stats = {
        "train/old_logprob_abs_diff": abs_sum / count if count else 0.0,
        "train/old_logprob_max_abs_diff": abs_max,
    }
    return out, stats
