"""How one rollout's turn rows are cut into optimizer batches (``algo.mini_batch_rows`` or
``algo.mini_batches``)."""

from __future__ import annotations

import numpy as np

from learners.rollout import TurnSample

__all__ = ["mini_batch_indices"]


def mini_batch_indices(
    samples: list[TurnSample], parts: int, rows: int, rng: np.random.Generator
) -> list[list[int]]:
    """One epoch's optimizer batches (indices into ``samples``).

    ``rows`` > 0: the turn rows shuffled, then cut every ``rows`` (the last batch takes the rest;
    ceil(len / rows) batches), as verl splits the reference's rows. Else the trajectories are
    shuffled and split into ``parts`` near-equal parts, each taking all its trajectory's turns.
    """
    if rows > 0:
        order = rng.permutation(len(samples))
        return [order[i : i + rows].tolist() for i in range(0, len(samples), rows)]
    trajs = sorted({s.traj for s in samples})
    order = rng.permutation(len(trajs)) if trajs else np.array([], dtype=np.int64)
    batches = []
    for part in np.array_split(order, parts):
        chosen = {trajs[i] for i in part}
        batches.append([k for k, s in enumerate(samples) if s.traj in chosen])
    return batches
