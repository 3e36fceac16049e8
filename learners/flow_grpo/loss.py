"""The Flow-GRPO loss: token-level clipped ratio, k3 KL to a frozen reference, entropy bonus.

All tensors are flat over the action tokens of a (micro-)batch. Aggregation is expressed as
per-token weights computed once for the whole optimizer batch (:func:`aggregation_weights`), so
the loss of a micro-batch is ``sum(weight * per_token_loss)`` and gradient accumulation over
micro-batches gives exactly the full-batch loss, whatever the micro-batch split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from learners.logits import entropy_from_logits, token_logprobs

__all__ = [
    "LossAgg",
    "LossOutput",
    "aggregation_weights",
    "entropy_from_logits",
    "k3_kl",
    "policy_loss",
    "token_logprobs",
]

LossAgg = Literal["token-mean", "seq-mean"]


def aggregation_weights(sample_index: torch.Tensor, mode: LossAgg) -> torch.Tensor:
    """Per-token weights summing to 1 over the batch.

    ``token-mean``: every action token weighs 1/T. ``seq-mean``: each turn sample (one
    response) weighs 1/S, split evenly over its tokens (the mean of per-sample token means).
    ``sample_index`` holds, for each token, the id of the turn sample it belongs to.
    """
    n = sample_index.numel()
    if n == 0:
        raise ValueError("no action tokens in the batch")
    if mode == "token-mean":
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    if mode == "seq-mean":
        _, inverse, counts = torch.unique(sample_index, return_inverse=True, return_counts=True)
        return (1.0 / (len(counts) * counts.to(torch.float64)))[inverse]
    raise ValueError(f"loss aggregation must be 'token-mean' or 'seq-mean', got {mode!r}")


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Low-variance KL(pi || ref) estimate per token: r - log r - 1 with r = ref / pi (>= 0)."""
    log_r = torch.clamp(ref_logp - logp, -20.0, 20.0)  # exp overflow guard, as verl does
    return torch.exp(log_r) - log_r - 1.0


@dataclass
class LossOutput:
    """The differentiable loss and its parts, each aggregated with the same weights."""

    loss: torch.Tensor
    pg_loss: float
    kl: float
    clip_frac: float
    entropy: float
    ratio_mean: float


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    dual_clip: float = 0.0,
    is_weights: torch.Tensor | None = None,
) -> LossOutput:
    """Clipped surrogate + ``kl_coef`` * k3 KL - ``entropy_coef`` * entropy, per token, weighted.

    Per token: ``ratio = exp(logp - old_logp)``, ``pg = max(-A ratio, -A clip(ratio, 1 - clip_low,
    1 + clip_high))``. With ``dual_clip`` c > 1 (dual-clip PPO, verl's ``clip_ratio_c``), a token
    with a negative advantage has ``pg = min(pg, -A c)``: a ratio far above 1 + clip_high no longer
    makes its loss (and its gradient's weight) unbounded. ``pg`` is then multiplied by
    ``is_weights`` when given (truncated importance weights of stale samples,
    :mod:`learners.flow_grpo.offpolicy`). ``clip_frac`` is the weighted share of tokens where a
    clipped branch is active (it then gives no gradient). Stats are weighted sums, so they add
    over micro-batches.
    """
    if dual_clip and dual_clip <= 1:
        raise ValueError(f"dual_clip must be > 1 (or 0 to disable), got {dual_clip}")
    shapes = {t.shape for t in (logp, old_logp, advantages, weights)}
    if len(shapes) != 1 or logp.dim() != 1:
        raise ValueError(
            f"logp, old_logp, advantages and weights must be 1-D and equal in shape, got {shapes}"
        )
    if kl_coef > 0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp (log-probs of the frozen reference policy)")
    if entropy_coef > 0 and entropy is None:
        raise ValueError("entropy_coef > 0 needs per-token entropy")
    w = weights.to(logp.dtype)
    adv = advantages.to(logp.dtype)
    ratio = torch.exp(torch.clamp(logp - old_logp, -20.0, 20.0))
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(unclipped, clipped)
    lower_bound = None
    if dual_clip:
        lower_bound = -adv * dual_clip
        pg = torch.where(adv < 0, torch.minimum(pg, lower_bound), pg)
    if is_weights is not None:
        if is_weights.shape != logp.shape:
            raise ValueError(
                f"is_weights has shape {tuple(is_weights.shape)}, not {tuple(logp.shape)}"
            )
        pg = pg * is_weights.to(logp.dtype)
    per_token = pg
    kl_value = 0.0
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        kl_value = float((w * kl.detach()).sum())
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl
    ent_value = 0.0
    if entropy is not None:
        ent_value = float((w * entropy.detach()).sum())
        if entropy_coef > 0:
            per_token = per_token - entropy_coef * entropy
    loss = (w * per_token).sum()
    with torch.no_grad():
        active = clipped > unclipped
        if lower_bound is not None:
            active |= (adv < 0) & (lower_bound < torch.maximum(unclipped, clipped))
        clip_frac = float((w * active.to(w.dtype)).sum())
        return LossOutput(
            loss=loss,
            pg_loss=float((w * pg).sum()),
            kl=kl_value,
            clip_frac=clip_frac,
            entropy=ent_value,
            ratio_mean=float((w * ratio).sum()),
        )
