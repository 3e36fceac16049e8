"""What advantage estimation needs from one step's rollout: :class:`AdvantageInputs`.

The rollout (:meth:`learners.rollout.RolloutBatch.advantage_inputs`) produces it and the
estimators (:mod:`learners.flow_grpo.advantages`, or another learner's) consume it; it lives on
the learners' floor so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["AdvantageInputs", "IncompleteGroupError"]


class IncompleteGroupError(ValueError):
    """A group does not hold exactly ``group_size`` finished trajectories."""


@dataclass(frozen=True)
class AdvantageInputs:
    """One step's rollout, reduced to what advantage estimation needs.

    ``rewards[j]`` and ``group_ids[j]`` belong to trajectory ``j``; ``sample_traj[k]`` and
    ``sample_turn[k]`` (0-based) locate turn sample ``k``. ``valid[j]`` is False for a trajectory
    whose outcome infrastructure lost (its reward is NaN): it is left out of its group's
    statistics and its turns get no advantage (None: every trajectory is valid). Estimators with
    step-level credit (``gigpo``) also read ``sample_state[k]``, a key of the observation turn
    ``k`` acted on (equal keys: identical observations), and ``sample_reward[k]``, the env's reward
    for that turn (None: the outcome comes on each trajectory's last turn, as in this env).
    """

    rewards: np.ndarray
    group_ids: np.ndarray
    sample_traj: np.ndarray
    sample_turn: np.ndarray
    group_size: int
    valid: np.ndarray | None = field(default=None)
    sample_state: np.ndarray | None = None
    sample_reward: np.ndarray | None = None

    @property
    def valid_mask(self) -> np.ndarray:
        """``valid`` as a boolean array (all True when None)."""
        if self.valid is None:
            return np.ones(len(self.rewards), dtype=bool)
        return np.asarray(self.valid, dtype=bool)

    def valid_subset(self) -> tuple[AdvantageInputs, np.ndarray]:
        """The valid trajectories of groups keeping at least two of them, renumbered, and the
        mask of the turn samples they own (group sizes may then differ); per-sample extras
        (``sample_state``, ``sample_reward``) follow their samples."""
        valid = self.valid_mask.copy()
        groups, counts = np.unique(self.group_ids[valid], return_counts=True)
        valid &= np.isin(self.group_ids, groups[counts >= 2])
        new_index = np.cumsum(valid) - 1
        samples = valid[self.sample_traj]
        subset = AdvantageInputs(
            rewards=np.asarray(self.rewards, dtype=np.float64)[valid],
            group_ids=np.asarray(self.group_ids)[valid],
            sample_traj=new_index[self.sample_traj[samples]],
            sample_turn=np.asarray(self.sample_turn)[samples],
            group_size=self.group_size,
            sample_state=None if self.sample_state is None else self.sample_state[samples],
            sample_reward=None if self.sample_reward is None else self.sample_reward[samples],
        )
        return subset, samples

    def validate(self) -> None:
        """Reject incomplete groups, NaN rewards of valid trajectories and turn samples that do
        not line up. A group counts its invalid trajectories (they were played)."""
        n = len(self.rewards)
        if len(self.group_ids) != n:
            raise ValueError(f"{n} rewards but {len(self.group_ids)} group ids")
        if self.valid is not None and len(self.valid) != n:
            raise ValueError(f"{n} rewards but {len(self.valid)} validity flags")
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
        finite = np.isfinite(np.asarray(self.rewards, dtype=np.float64))
        if not np.all(finite | ~self.valid_mask):
            bad = np.flatnonzero(~finite & self.valid_mask).tolist()
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
