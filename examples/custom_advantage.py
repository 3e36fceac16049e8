"""Plug another advantage estimator into the Flow-GRPO learner.

An estimator is one function ``(inputs, *, scale_by_std, eps) -> one advantage per turn sample``,
registered under a name with ``register_estimator``; ``algo.estimator`` then selects it (in a
config, or ``--algo.estimator NAME`` on the command line once the module that registers it has
been imported). ``inputs`` is an ``AdvantageInputs``: trajectory outcomes (``rewards``), their
``group_ids``, and for every turn sample the trajectory it belongs to (``sample_traj``), its
0-based turn index (``sample_turn``), a key of the observation it acted on (``sample_state``) and
the env's reward for that turn (``sample_reward``); ``gigpo`` is a built-in that uses all of them.
The learner validates the batch first (complete groups, finite rewards), so an estimator only
does arithmetic.

This file registers two estimators and checks them by hand on a tiny batch:

- ``rloo``: leave-one-out baseline (each trajectory is compared with the mean of the *other*
  G-1 trajectories of its group), broadcast to every turn like Flow-GRPO;
- ``flow_grpo_discounted``: Flow-GRPO's group-normalized outcome, scaled by ``gamma ** (turns
  left after this one)``, so early turns of long trajectories get less credit.

    python examples/custom_advantage.py

To train with one, select it and run the trainer in the same process (the registry is filled by
importing this module)::

    from learners.flow_grpo.config import FlowGRPOConfig
    from learners.flow_grpo.trainer import FlowGRPOTrainer
    import custom_advantage  # noqa: F401 - registers "rloo" and "flow_grpo_discounted"

    cfg = FlowGRPOConfig()                 # the tiny CPU preset's defaults
    cfg.algo.estimator, cfg.algo.scale_by_std = "rloo", False
    trainer = FlowGRPOTrainer(cfg)
    try:
        trainer.train()
    finally:
        trainer.close()
"""

from __future__ import annotations

import numpy as np
from rich.console import Console
from rich.table import Table

from learners.flow_grpo.advantages import (
    AdvantageInputs,
    compute_advantages,
    flow_grpo,
    register_estimator,
)


@register_estimator("rloo")
def rloo(inputs: AdvantageInputs, *, scale_by_std: bool = False, eps: float = 1e-6) -> np.ndarray:
    """REINFORCE leave-one-out: r_j - mean(r_k for the other k in j's group), to every turn of j."""
    rewards = np.asarray(inputs.rewards, dtype=np.float64)
    groups = np.asarray(inputs.group_ids)
    per_traj = np.zeros_like(rewards)
    for g in np.unique(groups):
        idx = groups == g
        n = int(idx.sum())
        others_mean = (rewards[idx].sum() - rewards[idx]) / (n - 1)  # validate() guarantees n >= 2
        per_traj[idx] = rewards[idx] - others_mean
        if scale_by_std:
            per_traj[idx] /= rewards[idx].std(ddof=1) + eps
    return per_traj[inputs.sample_traj]


@register_estimator("flow_grpo_discounted")
def flow_grpo_discounted(
    inputs: AdvantageInputs, *, scale_by_std: bool = True, eps: float = 1e-6, gamma: float = 0.9
) -> np.ndarray:
    """Flow-GRPO's advantage times gamma ** (number of later turns in the same trajectory)."""
    base = flow_grpo(inputs, scale_by_std=scale_by_std, eps=eps)
    last = np.zeros(len(inputs.rewards), dtype=np.int64)
    np.maximum.at(last, inputs.sample_traj, inputs.sample_turn)
    turns_left = last[inputs.sample_traj] - inputs.sample_turn
    return base * gamma**turns_left


def tiny_batch() -> AdvantageInputs:
    """One group of 3 trajectories: rewards 1, 0, 0 with 2, 1 and 3 turns."""
    return AdvantageInputs(
        rewards=np.array([1.0, 0.0, 0.0]),
        group_ids=np.array([0, 0, 0]),
        sample_traj=np.array([0, 0, 1, 2, 2, 2]),
        sample_turn=np.array([0, 1, 0, 0, 1, 2]),
        group_size=3,
    )


def main() -> dict[str, list[float]]:
    batch = tiny_batch()
    results = {
        name: compute_advantages(name, batch, scale_by_std=scale).tolist()
        for name, scale in (("flow_grpo", True), ("rloo", False), ("flow_grpo_discounted", True))
    }
    # Hand computation: rloo gives trajectory 0 1 - (0 + 0)/2 = 1, the others 0 - (1 + 0)/2 = -0.5.
    assert np.allclose(results["rloo"], [1.0, 1.0, -0.5, -0.5, -0.5, -0.5])
    # flow_grpo: mean 1/3, sample std sqrt(1/3); the discounted variant scales by 0.9 ** turns left.
    z = (np.array([1.0, 0.0, 0.0]) - 1 / 3) / (np.sqrt(1 / 3) + 1e-6)
    assert np.allclose(results["flow_grpo"], z[[0, 0, 1, 2, 2, 2]])
    assert np.allclose(
        results["flow_grpo_discounted"], z[[0, 0, 1, 2, 2, 2]] * 0.9 ** np.array([1, 0, 0, 2, 1, 0])
    )

    table = Table(title="Advantages per turn sample (trajectory, turn)")
    table.add_column("estimator")
    for traj, turn in zip(batch.sample_traj, batch.sample_turn, strict=False):
        table.add_column(f"({traj},{turn})", justify="right")
    for name, values in results.items():
        table.add_row(name, *(f"{v:+.3f}" for v in values))
    Console().print(table)

    # Select it for training: the config validates the name against the registry.
    from learners.flow_grpo.config import FlowGRPOConfig

    cfg = FlowGRPOConfig()
    cfg.algo.estimator = "rloo"
    cfg.algo.scale_by_std = False
    cfg.validate()
    Console().print(
        f"config ok: algo.estimator={cfg.algo.estimator!r} (train with this cfg, in this process)"
    )
    return results


if __name__ == "__main__":
    main()
