"""One training step's rollout on one rank: its share of the step's queries, played as groups.

The synchronous loop calls :func:`collect_step` with the trainer's policy and envs; each
asynchronous collector (:mod:`learners.flow_grpo.async_rollout`) calls it with its own policy
copy and its own envs. Everything it draws comes from the plan's seed (a generator made here,
per rank) and the envs are reset from that generator, so what it returns depends only on the
plan, the policy's weights and the env's settings: never on which collector ran it or when.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agentflow_env.tasks.base import Task
from learners.distributed import Dist
from learners.flow_grpo.async_rollout import StepPlan
from learners.flow_grpo.config import RolloutConfig
from learners.policy import Policy, SamplingSettings
from learners.rollout import PrefixBreakLog, RolloutBatch, collect_groups, resample_failed

__all__ = ["collect_step"]


def collect_step(
    cfg: RolloutConfig,
    dist: Dist,
    train_tasks: Sequence[Task],
    prefix_log: PrefixBreakLog,
    policy: Policy,
    envs: Any,
    plan: StepPlan,
    version: int,
) -> tuple[RolloutBatch, np.random.Generator]:
    """This rank's groups of ``plan``, sampled by ``policy`` (weights ``version``) in ``envs``
    (``queries_per_step / world_size`` x ``group_size`` sub-envs); also the step's generator
    after collection (the update draws its mini-batch order from it). Episodes whose outcome
    infrastructure lost are played again in their group's place (``cfg.infra_retries``)."""
    rank, W = dist.rank, dist.world_size
    roll_rng = np.random.default_rng([plan.seed, rank])
    settings = SamplingSettings(cfg.temperature, cfg.top_p, cfg.max_new_tokens)
    tasks = [train_tasks[q] for q in plan.queries[rank::W]]
    # Group ids are the queries' positions in the step: unique across ranks.
    group_ids = list(range(rank, cfg.queries_per_step, W))
    where = {"step": plan.step, "rank": rank, "policy_version": version}
    with policy.gathered():  # FSDP: all ranks gather here, then generate freely
        batch = collect_groups(
            envs,
            policy,
            tasks,
            cfg.group_size,
            settings,
            roll_rng,
            max_prompt_tokens=cfg.max_prompt_tokens,
            query_ids=group_ids,
            episode_prefix=f"step{plan.step}-rank{rank}-traj",
            metadata=where,
            prefix_log=prefix_log,
        )
        batch = resample_failed(  # queries whose episodes lost their outcome, again
            envs,
            policy,
            batch,
            dict(zip(group_ids, tasks, strict=True)),
            settings,
            roll_rng,
            tries=cfg.infra_retries,
            max_prompt_tokens=cfg.max_prompt_tokens,
            episode_prefix=f"step{plan.step}-rank{rank}-retry",
            metadata=where,
            prefix_log=prefix_log,
        )
    return batch, roll_rng
