"""Which of one rollout's turn rows an update uses (:func:`kept_samples`) and how they are cut
into optimizer batches (``algo.mini_batch_rows`` or ``algo.mini_batches``)."""

from __future__ import annotations

import logging

import numpy as np

from learners.flow_grpo.advantages import thin_groups, zero_variance_groups
from learners.rollout import RolloutBatch, TurnSample

logger = logging.getLogger(__name__)

__all__ = ["kept_samples", "mini_batch_indices"]


def kept_samples(
    batch: RolloutBatch, skip_zero_variance: bool, step: int
) -> tuple[list[int], int, int]:
    """Samples the update uses: of trajectories with an outcome, in groups with two or more
    of them (else dropped: ``thin``) and, with ``skip_zero_variance``, some reward variance
    (``skipped``). Returns (sample indices, skipped, thin)."""
    thin = thin_groups(batch.valid, batch.group_ids)  # < 2 valid trajectories: dropped
    flat = zero_variance_groups(batch.rewards, batch.group_ids) if skip_zero_variance else set()
    if batch.infra_failed:
        lost = (r.infra_error for r in batch.replaced + batch.trajectories if r.infra_error)
        logger.warning(
            "step %d: %d episode(s) lost their outcome to infrastructure (%s); %d group(s) dropped",
            step,
            batch.infra_failed,
            next(lost, None),
            len(thin),
        )
    valid, skip = batch.valid, thin | flat
    keep = [k for k, s in enumerate(batch.samples) if s.group not in skip and valid[s.traj]]
    return keep, len(flat - thin), len(thin)


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
