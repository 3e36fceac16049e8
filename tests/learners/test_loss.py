"""The Flow-GRPO loss against hand computations: clip edges, k3 KL, aggregation, micro-batching."""

from __future__ import annotations

import math

import pytest
import torch

from learners.flow_grpo.loss import (
    aggregation_weights,
    entropy_from_logits,
    k3_kl,
    policy_loss,
    token_logprobs,
)

# Four tokens: ratio 1.5 (A=+1, clipped), 0.5 (A=-1, clipped), 0.5 (A=+1, free), 1.5 (A=-1, free).
OLD = torch.log(torch.tensor([0.2, 0.4, 0.4, 0.2], dtype=torch.float64))
RATIO = torch.tensor([1.5, 0.5, 0.5, 1.5], dtype=torch.float64)
ADV = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)


def _logp() -> torch.Tensor:
    return (OLD + torch.log(RATIO)).clone().requires_grad_(True)


def test_clipped_objective_and_gradient_by_hand() -> None:
    logp = _logp()
    w = aggregation_weights(torch.arange(4), "token-mean")
    out = policy_loss(logp, OLD, ADV, w, clip_low=0.2, clip_high=0.2)
    # per token: max(-1.5, -1.2) = -1.2; max(0.5, 0.8) = 0.8; max(-0.5, -0.8) = -0.5;
    # max(1.5, 1.2) = 1.5
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 0.5 + 1.5) / 4)
    assert out.clip_frac == pytest.approx(0.5)
    assert out.ratio_mean == pytest.approx(1.0)
    out.loss.backward()
    # clipped tokens give no gradient; d/dlogp(-A ratio)/4 = -A ratio / 4 otherwise
    torch.testing.assert_close(
        logp.grad, torch.tensor([0.0, 0.0, -0.125, 0.375], dtype=torch.float64)
    )


def test_asymmetric_clip_edges() -> None:
    w = aggregation_weights(torch.arange(4), "token-mean")
    out = policy_loss(_logp(), OLD, ADV, w, clip_low=0.6, clip_high=0.3)
    # high edge 1.3 clips token 0 (-1.3); low edge 0.4 no longer clips token 1 (0.5)
    assert out.loss.item() == pytest.approx((-1.3 + 0.5 - 0.5 + 1.5) / 4)
    assert out.clip_frac == pytest.approx(0.25)


def test_ratio_at_the_edge_is_not_counted_as_clipped() -> None:
    old = torch.zeros(1, dtype=torch.float64)
    logp = torch.log(torch.tensor([1.2], dtype=torch.float64))
    out = policy_loss(
        logp, old, torch.ones(1, dtype=torch.float64), torch.ones(1), clip_low=0.2, clip_high=0.2
    )
    assert out.clip_frac == 0.0 and out.loss.item() == pytest.approx(-1.2)


def test_k3_kl_by_hand() -> None:
    # pi = 0.5, ref = 0.25: r = 0.5, k3 = 0.5 - ln 0.5 - 1
    kl = k3_kl(torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25])))
    assert kl.item() == pytest.approx(0.5 + math.log(2) - 1, rel=1e-6)
    assert k3_kl(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0


def test_kl_and_entropy_terms_enter_the_loss() -> None:
    logp = torch.log(torch.tensor([0.5, 0.5], dtype=torch.float64)).requires_grad_(True)
    ref = torch.log(torch.tensor([0.25, 0.5], dtype=torch.float64))
    ent = torch.tensor([1.0, 3.0], dtype=torch.float64)
    w = aggregation_weights(torch.arange(2), "token-mean")
    out = policy_loss(
        logp,
        logp.detach(),
        torch.zeros(2, dtype=torch.float64),
        w,
        clip_low=0.2,
        clip_high=0.3,
        ref_logp=ref,
        kl_coef=0.1,
        entropy=ent,
        entropy_coef=0.01,
    )
    k = 0.5 + math.log(2) - 1
    assert out.kl == pytest.approx(k / 2)
    assert out.entropy == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(0.1 * k / 2 - 0.01 * 2.0)


def test_kl_needs_reference() -> None:
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(_logp(), OLD, ADV, torch.ones(4), clip_low=0.2, clip_high=0.2, kl_coef=0.1)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="1-D"):
        policy_loss(_logp(), OLD[:3], ADV, torch.ones(4), clip_low=0.2, clip_high=0.2)


def test_seq_mean_weights_by_hand() -> None:
    w = aggregation_weights(torch.tensor([0, 0, 0, 1]), "seq-mean")
    torch.testing.assert_close(w, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2], dtype=torch.float64))
    out = policy_loss(_logp(), OLD, ADV, w, clip_low=0.2, clip_high=0.2)
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 0.5) / 6 + 1.5 / 2)
    with pytest.raises(ValueError, match="aggregation"):
        aggregation_weights(torch.arange(3), "sum")  # type: ignore[arg-type]


def test_micro_batches_sum_to_the_full_batch_loss_and_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    n = 11
    old = torch.randn(n, generator=gen, dtype=torch.float64) - 2
    new = (old + 0.3 * torch.randn(n, generator=gen, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(n, generator=gen, dtype=torch.float64)
    samples = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 4])
    w = aggregation_weights(samples, "seq-mean")
    full = policy_loss(new, old, adv, w, clip_low=0.2, clip_high=0.3)
    (g_full,) = torch.autograd.grad(full.loss, new)
    total, grads = 0.0, torch.zeros(n, dtype=torch.float64)
    for sl in (slice(0, 5), slice(5, 11)):
        part = policy_loss(new[sl], old[sl], adv[sl], w[sl], clip_low=0.2, clip_high=0.3)
        (g,) = torch.autograd.grad(part.loss, new)
        total += part.loss.item()
        grads += g
    assert total == pytest.approx(full.loss.item())
    torch.testing.assert_close(grads, g_full)


def test_logprobs_and_entropy_with_temperature() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    lp = token_logprobs(logits, torch.tensor([0]), temperature=2.0)
    assert lp.item() == pytest.approx(1 - math.log(math.e + 2))
    uniform = entropy_from_logits(torch.zeros(1, 4))
    assert uniform.item() == pytest.approx(math.log(4))
