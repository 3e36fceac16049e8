"""Held-out evaluation during training: success and pass@k of the policy, split across ranks.

Each held-out task is played ``train.eval_samples`` times when evaluation samples (once when it
is greedy): one sample per task on 100 tasks has a standard error of ~5 points at 30% success.
Episode ``j`` plays task ``j % n`` and rank ``r`` plays episodes ``r, r + W, ...``; per-task pass
counts are all-reduced, so every rank gets the same numbers. With several samples per task the
result includes the unbiased pass@k for k = 1..samples (:mod:`agentflow_env.eval.passk`; a pass
is a reward of 1). An episode whose outcome infrastructure lost (``RolloutBatch.valid`` False)
counts in neither: pass@k then uses each task's valid episodes (tasks with fewer than k left out
of pass@k).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentflow_env.eval.passk import PASS_SCORE, pass_at_k_curve
from agentflow_env.tasks.base import Task
from learners.distributed import Dist
from learners.envs import EnvConfig, make_vector_env
from learners.policy import Policy, SamplingSettings
from learners.rollout import collect

__all__ = ["EVAL_CHUNK", "EvalResult", "HeldOutEval"]

EVAL_CHUNK = 64
"""episodes played together (the eval vector env's size)"""


@dataclass
class EvalResult:
    success: float
    """mean reward over every episode played (all ranks)"""
    episodes: int
    pass_at_k: dict[int, float] = field(default_factory=dict)
    """k -> pass@k, when each task was played more than once"""


class HeldOutEval:
    """Plays the held-out tasks with a policy; owns the evaluation envs (built on first use)."""

    def __init__(self, env: EnvConfig, tasks: list[Task], dist: Dist, seed: int) -> None:
        self.env, self.tasks, self.dist, self.seed = env, tasks, dist, seed
        self._envs: Any = None

    def run(
        self,
        policy: Policy,
        step: int,
        samples: int,
        settings: SamplingSettings,
        max_prompt_tokens: int,
    ) -> EvalResult:
        """``samples`` episodes per task with ``settings`` (seeded by the run's seed and step)."""
        n = len(self.tasks)
        episodes = list(range(n * samples))[self.dist.rank :: self.dist.world_size]
        mine = [self.tasks[j % n] for j in episodes]
        total, played, passed = 0.0, np.zeros(n), np.zeros(n)
        with policy.gathered():  # FSDP: every rank gathers here, even one without tasks
            if mine:
                if self._envs is None:
                    self._envs = make_vector_env(self.env, min(EVAL_CHUNK, len(mine)))
                rng = np.random.default_rng([self.seed, 7919, step, self.dist.rank])
                for start in range(0, len(mine), EVAL_CHUNK):
                    chunk = mine[start : start + EVAL_CHUNK]
                    batch = collect(
                        self._envs,
                        policy,
                        chunk,
                        list(range(len(chunk))),
                        settings,
                        rng,
                        max_prompt_tokens=max_prompt_tokens,
                    )
                    # an episode whose outcome infrastructure lost is left out, never a 0
                    valid = batch.valid
                    total += float(batch.rewards[valid].sum())
                    tasks = np.array([j % n for j in episodes[start : start + EVAL_CHUNK]])
                    np.add.at(played, tasks[valid], 1)
                    np.add.at(passed, tasks[valid], batch.rewards[valid] >= PASS_SCORE)
        reduced = self.dist.all_reduce_sum([total, *played.tolist(), *passed.tolist()])
        counts, passes = reduced[1 : n + 1], reduced[n + 1 :]
        count = round(sum(counts))
        result = EvalResult(reduced[0] / max(count, 1), count)
        if samples > 1 and n:
            per_task = [(round(m), round(c)) for m, c in zip(counts, passes, strict=True) if m]
            curve = pass_at_k_curve(per_task, samples)
            result.pass_at_k = {k: v["value"] for k, v in curve.items()}
        return result

    def close(self) -> None:
        if self._envs is not None:
            self._envs.close()
            self._envs = None
