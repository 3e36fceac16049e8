"""Truncated importance weights for rollouts sampled by older weights (``algo.tis_cap > 0``).

With ``rollout.max_staleness = k`` the behaviour policy that sampled a batch is up to ``k``
updates behind. By default the loss's ratio is taken against the behaviour log-probs stored
with the samples, so the clip range is centred on the behaviour policy. With ``tis_cap = C`` the
objective is decoupled (as in AReaL's decoupled PPO and verl's truncated importance sampling):
the ratio is taken against the *proximal* policy, the weights at the start of the update
(:func:`proximal_logprobs`, one scoring pass without gradients), and each token's policy-gradient
term is multiplied by ``min(pi_prox / pi_behaviour, C)`` (:func:`truncated_weights`), which
corrects for the lag while bounding the variance.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from learners.packing import ScoringSequence, pack_samples
from learners.policy import Policy
from learners.rollout import TurnSample

__all__ = ["decoupled", "per_token", "proximal_logprobs", "truncated_weights"]


@torch.no_grad()
def proximal_logprobs(
    policy: Policy,
    samples: Sequence[TurnSample],
    *,
    pack: bool,
    micro_batch_size: int,
    temperature: float,
) -> list[list[float]]:
    """Per sample, the log-probs of its response under ``policy``'s current weights."""
    seqs = pack_samples(samples, pack=pack)
    out: list[list[float]] = [[] for _ in samples]
    for start in range(0, len(seqs), micro_batch_size):
        chunk = seqs[start : start + micro_batch_size]
        logp, _ = policy.score(
            [s.ids for s in chunk], [s.target_mask for s in chunk], temperature=temperature
        )
        values = iter(logp.tolist())
        for seq in chunk:
            for k in seq.token_sample:
                out[k].append(next(values))
    return out


def truncated_weights(
    samples: Sequence[TurnSample], proximal: Sequence[Sequence[float]], cap: float
) -> tuple[list[TurnSample], list[list[float]]]:
    """Samples whose ``logprobs`` are the proximal ones, and per token ``min(exp(prox -
    behaviour), cap)``."""
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    weights = [
        [min(math.exp(min(p - b, 20.0)), cap) for p, b in zip(prox, s.logprobs, strict=True)]
        for s, prox in zip(samples, proximal, strict=True)
    ]
    return [replace(s, logprobs=list(p)) for s, p in zip(samples, proximal, strict=True)], weights


def decoupled(
    policy: Policy, samples: Sequence[TurnSample], algo: Any, temperature: float
) -> tuple[list[TurnSample], list[list[float]]]:
    """:func:`truncated_weights` of :func:`proximal_logprobs`, with ``algo``'s (an
    ``AlgoConfig``) ``tis_cap``, ``pack_turns`` and ``micro_batch_size``."""
    prox = proximal_logprobs(
        policy,
        samples,
        pack=algo.pack_turns,
        micro_batch_size=algo.micro_batch_size,
        temperature=temperature,
    )
    return truncated_weights(samples, prox, algo.tis_cap)


def per_token(
    seqs: Sequence[ScoringSequence], values: Sequence[Sequence[float]]
) -> list[list[float]]:
    """Per sequence, one value per target (``values[k]`` lists sample ``k``'s, in order)."""
    cursor: defaultdict[int, int] = defaultdict(int)
    out = []
    for seq in seqs:
        row = []
        for k in seq.token_sample:
            row.append(values[k][cursor[k]])
            cursor[k] += 1
        out.append(row)
    return out
