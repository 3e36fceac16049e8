"""What advantage estimation needs from one step's rollout: :class:`AdvantageInputs`.

The rollout (:meth:`learners.rollout.RolloutBatch.advantage_inputs`) produces it and the
estimators (:mod:`learners.flow_grpo.advantages`, or another learner's) consume it; it lives on
the learners' floor so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AdvantageInputs", "IncompleteGroupError"]


class IncompleteGroupError(ValueError):
    """A group does not hold exactly ``group_size`` finished trajectories."""


@dataclass(frozen=True)
class AdvantageInputs:
    """One step's rollout, reduced to what advantage estimation needs.

    ``rewards[j]`` and ``group_ids[j]`` belong to trajectory ``j``; ``sample_traj[k]`` and
    ``sample_turn[k]`` (0-based) locate turn sample ``k``. Estimators with step-level credit
    (``gigpo``) also read ``sample_state[k]``, a key of the observation turn ``k`` acted on
    (equal keys: identical observations), and ``sample_reward[k]``, the env's reward for that
    turn (None: the outcome comes on each trajectory's last turn, as in this env).
    """

    rewards: np.ndarray
    group_ids: np.ndarray
    sample_traj: np.ndarray
    sample_turn: np.ndarray
    group_size: int
    sample_state: np.ndarray | None = None
    sample_reward: np.ndarray | None = None

    def validate(self) -> None:
        """Reject incomplete groups, NaN rewards and turn samples that do not line up."""
        n = len(self.rewards)
        if len(self.group_ids) != n:
            raise ValueError(f"{n} rewards but {len(self.group_ids)} group ids")
        if len(self.sample_traj) != len(self.sample_turn):
            raise ValueError("sample_traj and sample_turn differ in length")
        for name in ("sample_state", "sample_reward"):
            extra = getattr(self, name)
            if extra is not None and len(extra) != len(self.sample_traj):
                raise ValueError(
                    f"{name} has {len(extra)} entries for {len(self.sample_traj)} samples"
                )
        if self.group_size < 2:
            raise IncompleteGroupError(
                f"group_size={self.group_size}: a group needs >= 2 trajectories"
            )
        if not np.all(np.isfinite(self.rewards)):
            bad = np.flatnonzero(~np.isfinite(self.rewards)).tolist()
            raise ValueError(
                f"trajectories {bad} have non-finite rewards; score them before training"
            )
        groups, counts = np.unique(self.group_ids, return_counts=True)
        wrong = {
            int(g): int(c) for g, c in zip(groups, counts, strict=False) if c != self.group_size
        }
        if wrong:
            raise IncompleteGroupError(
                f"groups {wrong} (group id: trajectories) do not have group_size={self.group_size} "
                "trajectories; drop or resample the whole group"
            )
        if len(self.sample_traj) and (self.sample_traj.min() < 0 or self.sample_traj.max() >= n):
            raise ValueError("sample_traj refers to a trajectory that does not exist")
        turns = np.bincount(self.sample_traj, minlength=n)
        if np.any(turns == 0):
            raise IncompleteGroupError(
                f"trajectories {np.flatnonzero(turns == 0).tolist()} have no turn samples"
            )
