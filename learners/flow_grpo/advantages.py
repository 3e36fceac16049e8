"""Advantage estimators for multi-turn group rollouts.

Inputs are trajectory-level outcomes and, for every per-turn sample, the trajectory it belongs
to, its turn index and (for step-level credit) a key of the observation it acted on. Every
estimator returns one advantage per turn sample (every token of that turn's response gets it).
Another estimator is one small function registered with :func:`register_estimator`.

Registered: ``flow_grpo`` (the paper), ``flow_grpo_turn_norm`` (the authors' code),
``last_turn``, and ``gigpo`` (episode-level plus anchor-state step-level advantages, Feng et al.
2025).

Group statistics use the sample standard deviation (Bessel-corrected, ``torch.std``'s default),
as the authors' verl-based code does, plus ``eps`` in the denominator.

Trajectories whose outcome infrastructure lost (``AdvantageInputs.valid`` False: an engine, tool
or judge failed, no reward) are no zeros: :func:`compute_advantages` leaves them out of their
group's mean and std, gives their turns advantage 0, and gives 0 to every turn of a group left
with fewer than two valid trajectories. Estimators only ever see valid trajectories.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from learners.groups import AdvantageInputs, IncompleteGroupError

__all__ = [
    "ESTIMATORS",
    "AdvantageInputs",
    "IncompleteGroupError",
    "compute_advantages",
    "discounted_returns",
    "flow_grpo",
    "flow_grpo_turn_norm",
    "gigpo",
    "last_turn",
    "thin_groups",
    "register_estimator",
    "zero_variance_groups",
]


Estimator = Callable[..., np.ndarray]
ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Decorator: make ``fn(inputs, *, scale_by_std, eps) -> per-sample advantages`` selectable."""

    def deco(fn: Estimator) -> Estimator:
        ESTIMATORS[name] = fn
        return fn

    return deco


def _normalize(values: np.ndarray, keys: np.ndarray, scale_by_std: bool, eps: float) -> np.ndarray:
    """(value - mean of its key's values) [/ (sample std + eps)], per key."""
    out = np.zeros(len(values), dtype=np.float64)
    for key in np.unique(keys):
        idx = keys == key
        v = values[idx].astype(np.float64)
        centered = v - v.mean()
        if scale_by_std:
            std = v.std(ddof=1) if len(v) > 1 else 0.0
            centered = centered / (std + eps)
        out[idx] = centered
    return out


def _trajectory_normalized(inputs: AdvantageInputs, scale_by_std: bool, eps: float) -> np.ndarray:
    return _normalize(
        np.asarray(inputs.rewards, dtype=np.float64),
        np.asarray(inputs.group_ids),
        scale_by_std,
        eps,
    )


@register_estimator("flow_grpo")
def flow_grpo(
    inputs: AdvantageInputs, *, scale_by_std: bool = True, eps: float = 1e-6
) -> np.ndarray:
    """The paper: normalize outcomes over the G trajectories of a group, broadcast to every turn."""
    per_traj = _trajectory_normalized(inputs, scale_by_std, eps)
    return per_traj[inputs.sample_traj]


@register_estimator("flow_grpo_turn_norm")
def flow_grpo_turn_norm(
    inputs: AdvantageInputs, *, scale_by_std: bool = True, eps: float = 1e-6
) -> np.ndarray:
    """The authors' code: every turn carries its trajectory's outcome; normalize over all turns
    of the group (long trajectories weigh more in the mean and std)."""
    rewards = np.asarray(inputs.rewards, dtype=np.float64)[inputs.sample_traj]
    groups = np.asarray(inputs.group_ids)[inputs.sample_traj]
    return _normalize(rewards, groups, scale_by_std, eps)


@register_estimator("last_turn")
def last_turn(
    inputs: AdvantageInputs, *, scale_by_std: bool = True, eps: float = 1e-6
) -> np.ndarray:
    """Credit only the final turn of each trajectory (group-normalized); earlier turns get 0."""
    per_traj = _trajectory_normalized(inputs, scale_by_std, eps)
    n = len(inputs.rewards)
    final = np.full(n, -1, dtype=np.int64)
    np.maximum.at(final, inputs.sample_traj, inputs.sample_turn)
    is_last = inputs.sample_turn == final[inputs.sample_traj]
    return np.where(is_last, per_traj[inputs.sample_traj], 0.0)


def discounted_returns(inputs: AdvantageInputs, gamma: float) -> np.ndarray:
    """Per turn sample: ``sum over the trajectory's turns u >= t of gamma**(u - t) * r_u``.

    Turn rewards are ``inputs.sample_reward``; without them the trajectory's outcome is the
    reward of its last turn (0 before), as this env gives it.
    """
    traj, turn = np.asarray(inputs.sample_traj), np.asarray(inputs.sample_turn)
    if inputs.sample_reward is not None:
        reward = np.asarray(inputs.sample_reward, dtype=np.float64)
    else:
        last = np.full(len(inputs.rewards), -1, dtype=np.int64)
        np.maximum.at(last, traj, turn)
        outcome = np.asarray(inputs.rewards, dtype=np.float64)[traj]
        reward = np.where(turn == last[traj], outcome, 0.0)
    out = np.zeros(len(traj), dtype=np.float64)
    for j in np.unique(traj):
        idx = np.flatnonzero(traj == j)
        later = turn[idx][None, :] - turn[idx][:, None]  # [k, u]: u's turn minus k's
        weights = np.where(later >= 0, gamma ** np.maximum(later, 0), 0.0)
        out[idx] = weights @ reward[idx]
    return out


@register_estimator("gigpo")
def gigpo(
    inputs: AdvantageInputs,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-6,
    omega: float = 1.0,
    gamma: float = 0.95,
) -> np.ndarray:
    """GiGPO (Feng et al. 2025, "Group-in-Group Policy Optimization for LLM Agent Training").

    ``A = A_episode + omega * A_step`` per turn sample:

    - ``A_episode``: the trajectory's outcome normalized over its group (as ``flow_grpo``);
    - ``A_step``: the turn's discounted return ``R_t = sum_u gamma**(u-t) r_u``
      (:func:`discounted_returns`) normalized over its *anchor-state group*: the turns of the
      same group that acted on an identical observation (``inputs.sample_state``), wherever they
      are in their trajectories. A state seen once gives 0 (no comparison is possible).

    Both levels use ``scale_by_std`` (divide by the sample std + ``eps``; the paper's F_norm =
    std, or 1 when False). ``omega`` (the paper's weight, 1 by default) trades step-level credit
    against the episode's; ``gamma`` (0.95 in the paper) makes a success reached in fewer turns
    worth more at the shared state. Trajectories with a non-finite reward (no outcome: the
    infrastructure failed) are left out of every mean and std, and their turns get 0 (called
    through :func:`compute_advantages`, they never reach it: this keeps direct calls safe).
    """
    if inputs.sample_state is None:
        raise ValueError(
            "gigpo needs anchor states: AdvantageInputs.sample_state (one observation key per "
            "turn sample; learners.rollout fills it)"
        )
    if not 0 <= gamma <= 1:
        raise ValueError(f"gigpo: gamma={gamma} must be in [0, 1]")
    rewards = np.asarray(inputs.rewards, dtype=np.float64)
    groups = np.asarray(inputs.group_ids)
    traj = np.asarray(inputs.sample_traj)
    valid = np.isfinite(rewards)
    episode = np.zeros(len(rewards), dtype=np.float64)
    episode[valid] = _normalize(rewards[valid], groups[valid], scale_by_std, eps)
    kept = valid[traj]
    returns = discounted_returns(inputs, gamma)
    # One key per (group, observation): anchor states are shared within a group only.
    keys = np.array([f"{g}|{s}" for g, s in zip(groups[traj], inputs.sample_state, strict=True)])
    step = np.zeros(len(traj), dtype=np.float64)
    step[kept] = _normalize(returns[kept], keys[kept], scale_by_std, eps)
    return np.where(kept, episode[traj] + omega * step, 0.0)


def compute_advantages(
    name: str,
    inputs: AdvantageInputs,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-6,
    **options: float,
) -> np.ndarray:
    """Validate the batch (complete groups only) and run the named estimator on its valid
    trajectories; the turns of the others get 0 (see the module docstring).

    ``options`` go to the estimator as keyword arguments (e.g. ``gigpo``'s ``omega``, ``gamma``).
    """
    if name not in ESTIMATORS:
        raise KeyError(f"unknown advantage estimator {name!r}; registered: {sorted(ESTIMATORS)}")
    inputs.validate()
    subset, owned = inputs.valid_subset()
    out = np.zeros(len(inputs.sample_traj), dtype=np.float64)
    if not len(subset.rewards):
        return out
    adv = np.asarray(
        ESTIMATORS[name](subset, scale_by_std=scale_by_std, eps=eps, **options), dtype=np.float64
    )
    if adv.shape != (len(subset.sample_traj),):
        raise ValueError(
            f"estimator {name!r} returned shape {adv.shape}, expected "
            f"({len(subset.sample_traj)},): one advantage per turn sample"
        )
    out[owned] = adv
    return out


def zero_variance_groups(
    rewards: np.ndarray, group_ids: np.ndarray, tol: float = 1e-12
) -> set[int]:
    """Groups whose (valid: finite-reward) trajectories all got the same reward: no
    policy-gradient signal. A group without two valid trajectories is :func:`thin_groups`'."""
    out = set()
    for g in np.unique(group_ids):
        r = rewards[(group_ids == g) & np.isfinite(rewards)]
        if len(r) >= 2 and float(r.max() - r.min()) <= tol:
            out.add(int(g))
    return out


def thin_groups(valid: np.ndarray, group_ids: np.ndarray) -> set[int]:
    """Groups with fewer than two valid trajectories: dropped (nothing to compare within)."""
    return {int(g) for g in np.unique(group_ids) if int(valid[group_ids == g].sum()) < 2}
