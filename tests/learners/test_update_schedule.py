"""The reference's update schedule: mini-batches of turn rows, dual-clip, kept flat groups."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from learners.flow_grpo.config import ConfigError, make_config
from learners.flow_grpo.loss import policy_loss
from learners.flow_grpo.schedule import mini_batch_indices
from learners.rollout import TurnSample

# ratio 5, 2, 5, 0.5; advantages -1, -1, +1, -2; clip range [0.8, 1.3]; four tokens of weight 1/4
OLD = torch.zeros(4, dtype=torch.float64)
RATIOS = torch.tensor([5.0, 2.0, 5.0, 0.5], dtype=torch.float64)
ADV = torch.tensor([-1.0, -1.0, 1.0, -2.0], dtype=torch.float64)
W = torch.full((4,), 0.25, dtype=torch.float64)


def _loss(dual_clip: float) -> tuple[float, list[float], float]:
    logp = RATIOS.log().clone().requires_grad_(True)
    out = policy_loss(logp, OLD, ADV, W, clip_low=0.2, clip_high=0.3, dual_clip=dual_clip)
    out.loss.backward()
    assert logp.grad is not None
    return float(out.loss.detach()), logp.grad.tolist(), out.clip_frac


def test_dual_clip_by_hand() -> None:
    # per token, max(-A r, -A clip(r)): 5, 2, -1.3 (clipped), 1.6 (clipped); dual-clip caps a
    # negative advantage's loss at -A c = 3: token 1 becomes 3 (and gives no gradient)
    loss, grad, clip_frac = _loss(3.0)
    assert loss == pytest.approx((3.0 + 2.0 - 1.3 + 1.6) / 4)
    assert grad == pytest.approx([0.0, 0.25 * 2.0, 0.0, 0.0])  # d(-A r)/dlogp = -A r
    assert clip_frac == pytest.approx(0.75)
    loss, grad, clip_frac = _loss(0.0)  # off: the unbounded branch of token 1 stays
    assert loss == pytest.approx((5.0 + 2.0 - 1.3 + 1.6) / 4)
    assert grad == pytest.approx([0.25 * 5.0, 0.25 * 2.0, 0.0, 0.0])
    assert clip_frac == pytest.approx(0.5)
    # a cap above every token's loss changes nothing
    assert _loss(100.0)[0] == pytest.approx((5.0 + 2.0 - 1.3 + 1.6) / 4)


def test_dual_clip_rejects_constants_not_above_one() -> None:
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        policy_loss(RATIOS.log(), OLD, ADV, W, clip_low=0.2, clip_high=0.3, dual_clip=0.9)
    with pytest.raises(ConfigError, match="dual-clip constant must be > 1"):
        make_config("tiny", overrides={"algo.dual_clip": 1.0})
    with pytest.raises(ConfigError, match="mini_batch_rows"):
        make_config("tiny", overrides={"algo.mini_batch_rows": -1})


def _rows(n_traj: int, turns: int) -> list[TurnSample]:
    return [
        TurnSample(t, t // 2, k, [1, 2], [3], [-0.1], "stop", "a")
        for t in range(n_traj)
        for k in range(turns)
    ]


def test_mini_batches_of_rows_cover_every_row_once() -> None:
    samples = _rows(43, 3)  # 129 turn rows
    batches = mini_batch_indices(samples, parts=2, rows=64, rng=np.random.default_rng(0))
    assert [len(b) for b in batches] == [64, 64, 1]
    assert sorted(i for b in batches for i in b) == list(range(129))
    # rows of one trajectory may land in different mini-batches (the reference shuffles rows)
    where = {i: k for k, b in enumerate(batches) for i in b}
    assert any(len({where[3 * t + j] for j in range(3)}) > 1 for t in range(43))
    # rows = 0: by trajectory into `parts` parts, each taking all of its trajectories' turns
    parts = mini_batch_indices(samples, parts=2, rows=0, rng=np.random.default_rng(0))
    assert len(parts) == 2 and sorted(i for b in parts for i in b) == list(range(129))
    for b in parts:
        assert len(b) % 3 == 0 and {samples[i].traj for i in b}.isdisjoint(
            {samples[i].traj for i in parts[1 - parts.index(b)]}
        )
    assert mini_batch_indices([], parts=1, rows=64, rng=np.random.default_rng(0)) == []


def test_the_presets_schedules() -> None:
    paper, tiny = make_config("paper").algo, make_config("tiny").algo
    assert (paper.mini_batch_rows, paper.dual_clip, paper.epochs) == (64, 3.0, 1)
    assert paper.recompute_old_logprobs is True and paper.skip_zero_variance_groups is False
    # the tiny preset keeps its measured settings
    assert (tiny.mini_batch_rows, tiny.dual_clip, tiny.mini_batches) == (0, 0.0, 2)
    assert tiny.skip_zero_variance_groups is True and tiny.recompute_old_logprobs is None


@pytest.mark.parametrize(("rows", "epochs"), [(3, 2), (0, 1)])
def test_the_trainer_steps_once_per_mini_batch_of_rows(
    tiny_model_dir: Path, tmp_path: Path, rows: int, epochs: int
) -> None:
    """8 sampled turn rows: ceil(8 / 3) = 3 optimizer steps per epoch with 3-row mini-batches
    (ratios against recomputed old log-probs, dual-clip on); by trajectory, algo.mini_batches."""
    from tests.learners.test_old_logprobs import _sample_two_turns, _trainer

    extra = {"algo.mini_batch_rows": rows, "algo.epochs": epochs, "algo.dual_clip": 3.0}
    extra |= {"algo.mini_batches": 2, "algo.kl_coef": 0.01}
    with _trainer(tiny_model_dir, tmp_path, True, **extra) as trainer:
        samples = _sample_two_turns(trainer.policy, 0.7)
        before = [p.detach().clone() for p in trainer.params]
        advantages = np.random.default_rng(0).normal(0.0, 1.0, len(samples))
        advantages[:4] = 0.0  # a flat group's rows: no policy gradient, still KL and tokens
        stats = trainer.update(samples, advantages, np.random.default_rng(0))
        moved = any(not torch.equal(a, p) for a, p in zip(before, trainer.params, strict=True))
    assert len(samples) == 8
    expected = epochs * (math.ceil(len(samples) / rows) if rows else 2)
    assert stats["train/optimizer_steps"] == expected
    assert moved and stats["train/kl"] >= 0.0


# ------------------------------------------------------------------------------- DDP, 2 ranks
def worker(model: str, out: str) -> None:
    """One update with 4-row mini-batches over 2 ranks holding 8 and 2 rows: each rank cuts 2-row
    batches (4 and 1), and both must run 4 optimizer steps (else DDP's all-reduce would hang)."""
    import json
    import os

    from tests.learners.test_old_logprobs import _sample_two_turns, _trainer

    extra = {"algo.mini_batch_rows": 4, "train.distributed": "ddp", "algo.dual_clip": 3.0}
    with _trainer(Path(model), Path(out) / f"rank{os.environ['RANK']}", True, **extra) as trainer:
        samples = _sample_two_turns(trainer.policy, 0.7)
        mine = samples if trainer.dist.rank == 0 else samples[:2]
        advantages = np.random.default_rng(0).normal(0.0, 1.0, len(mine))
        stats = trainer.update(mine, advantages, np.random.default_rng(trainer.dist.rank))
        prints = trainer.dist.fingerprints(trainer.policy.model)
        if trainer.dist.is_main:
            result = {"steps": stats["train/optimizer_steps"], "prints": prints}
            (Path(out) / "ddp.json").write_text(json.dumps(result))
    trainer.dist.close()


@pytest.mark.slow
def test_ranks_with_unequal_rows_step_together(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(Path(__file__).resolve()), str(tiny_model_dir), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "ddp.json").read_text())
    assert result["steps"] == 4  # ceil(8 / 2) on rank 0; rank 1 padded with empty batches
    assert len(result["prints"]) == 2 and result["prints"][0] == result["prints"][1]


if __name__ == "__main__":  # the DDP worker
    import sys

    torch.set_num_threads(1)
    worker(*sys.argv[1:3])
