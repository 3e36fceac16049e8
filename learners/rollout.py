"""Collect complete groups of trajectories from a vector env with a policy.

For each of B queries, G sub-envs get the same task (``reset(options={"tasks": ...})``), the
policy samples every live sub-env's action in one batched call per turn, and the env steps all
of them at once. Every planner turn becomes a :class:`TurnSample` (prompt ids, response ids,
old log-probs, trajectory, group, turn); every trajectory a :class:`Trajectory` with its outcome.

Prompts are tracked as token ids. In raw-prompt mode, when the next observation equals the
previous one + the action text + a suffix (the env's append-only contract), the next prompt is
*the previous prompt ids + the sampled response ids + the suffix's ids*: the policy conditions
on exactly the tokens it produced, and all turns of a trajectory can later be scored in one
sequence (:mod:`learners.packing`). If the property does not hold, the observation is
re-tokenized from scratch (a new segment); nothing is lost but the packing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentflow_env.format import finish_action
from agentflow_env.tasks.base import Task
from learners.flow_grpo.advantages import AdvantageInputs
from learners.policy import Policy, SamplingSettings

logger = logging.getLogger(__name__)

__all__ = ["RolloutBatch", "Trajectory", "TurnSample", "collect", "collect_groups", "next_context"]

# Sent to padding sub-envs on their first step so that they finish at once and cost nothing.
_IDLE_ACTION = finish_action("idle")


@dataclass
class TurnSample:
    """One planner turn: what the policy saw and what it sampled."""

    traj: int
    group: int
    turn: int
    """0-based turn index within the trajectory"""
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    """log-probs of ``response_ids`` under the sampling policy (the PPO 'old' log-probs)"""
    finish_reason: str
    action_text: str


@dataclass
class Trajectory:
    """One episode's outcome and step log."""

    index: int
    group: int
    task_id: str
    question: str
    reward: float
    turns: int
    terminated: bool
    truncated: bool
    answer: str | None
    ground_truth: str | None
    tool_calls: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RolloutBatch:
    """Samples and trajectories of one collection (complete groups)."""

    samples: list[TurnSample]
    trajectories: list[Trajectory]
    group_size: int
    seconds: float = 0.0
    generation_seconds: float = 0.0

    @property
    def rewards(self) -> np.ndarray:
        return np.array([t.reward for t in self.trajectories], dtype=np.float64)

    @property
    def group_ids(self) -> np.ndarray:
        return np.array([t.group for t in self.trajectories], dtype=np.int64)

    def advantage_inputs(self) -> AdvantageInputs:
        return AdvantageInputs(
            rewards=self.rewards,
            group_ids=self.group_ids,
            sample_traj=np.array([s.traj for s in self.samples], dtype=np.int64),
            sample_turn=np.array([s.turn for s in self.samples], dtype=np.int64),
            group_size=self.group_size,
        )

    @property
    def generated_tokens(self) -> int:
        return sum(len(s.response_ids) for s in self.samples)

    def stats(self) -> dict[str, float]:
        """Scalars for logging: success, turns, tool calls per trajectory, errors."""
        n = max(len(self.trajectories), 1)
        out = {
            "rollout/success": float(np.mean(self.rewards)) if self.trajectories else 0.0,
            "rollout/turns": sum(t.turns for t in self.trajectories) / n,
            "rollout/errors": sum(t.errors for t in self.trajectories) / n,
            "rollout/response_tokens": self.generated_tokens / max(len(self.samples), 1),
            "rollout/truncated": sum(t.truncated for t in self.trajectories) / n,
        }
        calls: Counter[str] = Counter()
        for t in self.trajectories:
            calls.update(t.tool_calls)
        for name, count in sorted(calls.items()):
            out[f"rollout/tool_calls/{name}"] = count / n
        return out


def next_context(
    policy: Policy,
    context: list[int],
    response_ids: Sequence[int],
    prev_obs: str,
    action_text: str,
    new_obs: str,
) -> tuple[list[int], bool]:
    """Prompt ids for the next turn; the flag says whether they extend ``context`` (packable)."""
    expected = prev_obs + action_text
    if not policy.chat_template and new_obs.startswith(expected):
        return context + list(response_ids) + policy.text_ids(new_obs[len(expected) :]), True
    return policy.prompt_ids(new_obs), False


def _env_value(info: dict[str, Any], key: str, i: int) -> Any:
    mask = info.get(f"_{key}")
    if key not in info or mask is None or not mask[i]:
        return None
    return info[key][i]


def collect(
    envs: Any,
    policy: Policy,
    tasks: Sequence[Task],
    group_ids: Sequence[int],
    settings: SamplingSettings,
    rng: np.random.Generator,
    *,
    group_size: int = 1,
    max_prompt_tokens: int = 1 << 30,
) -> RolloutBatch:
    """Run ``tasks[i]`` in sub-env ``i`` to the end; unused sub-envs idle (finish at once)."""
    n_env, n = envs.num_envs, len(tasks)
    if n == 0 or n > n_env:
        raise ValueError(f"got {n} tasks for a vector env of {n_env} sub-envs")
    if len(group_ids) != n:
        raise ValueError("one group id per task")
    t0 = time.perf_counter()
    padded = list(tasks) + [tasks[0]] * (n_env - n)
    obs, _ = envs.reset(seed=int(rng.integers(2**31)), options={"tasks": padded})
    contexts = [policy.prompt_ids(o) for o in obs[:n]]
    prev_obs = list(obs[:n])
    trajs = [
        Trajectory(
            index=i,
            group=int(group_ids[i]),
            task_id=t.id,
            question=t.question,
            reward=float("nan"),
            turns=0,
            terminated=False,
            truncated=False,
            answer=None,
            ground_truth=None,
        )
        for i, t in enumerate(tasks)
    ]
    samples: list[TurnSample] = []
    done = [False] * n
    gen_s, turn = 0.0, 0
    while not all(done):
        live = [i for i in range(n) if not done[i]]
        prompts = [contexts[i][-max_prompt_tokens:] for i in live]
        step_settings = SamplingSettings(
            settings.temperature,
            settings.top_p,
            settings.max_new_tokens,
            seed=int(rng.integers(2**31)),
        )
        g0 = time.perf_counter()
        outs = policy.generate(prompts, step_settings)
        gen_s += time.perf_counter() - g0
        actions = [_IDLE_ACTION if turn == 0 else ""] * n_env
        for i, out in zip(live, outs, strict=False):
            actions[i] = out.text
        obs, rewards, terms, truncs, info = envs.step(actions)
        for i, prompt, out in zip(live, prompts, outs, strict=False):
            samples.append(
                TurnSample(
                    traj=i,
                    group=trajs[i].group,
                    turn=turn,
                    prompt_ids=prompt,
                    response_ids=list(out.token_ids),
                    logprobs=list(out.logprobs),
                    finish_reason=out.finish_reason,
                    action_text=out.text,
                )
            )
            _record_step(trajs[i], info, i, out.text)
            if terms[i] or truncs[i]:
                done[i] = True
                t = trajs[i]
                t.reward, t.terminated, t.truncated = (
                    float(rewards[i]),
                    bool(terms[i]),
                    bool(truncs[i]),
                )
                t.answer, t.ground_truth = (
                    _env_value(info, "answer", i),
                    _env_value(info, "ground_truth", i),
                )
            else:
                contexts[i], _ = next_context(
                    policy, prompt, out.token_ids, prev_obs[i], out.text, obs[i]
                )
                prev_obs[i] = obs[i]
        turn += 1
    return RolloutBatch(
        samples, trajs, group_size, seconds=time.perf_counter() - t0, generation_seconds=gen_s
    )


def _record_step(traj: Trajectory, info: dict[str, Any], i: int, action: str) -> None:
    traj.turns += 1
    tool = _env_value(info, "tool_name", i)
    error = _env_value(info, "error", i)
    if tool:
        traj.tool_calls[str(tool)] = traj.tool_calls.get(str(tool), 0) + 1
    if error:
        traj.errors += 1
    traj.steps.append(
        {
            "action": action,
            "tool_name": tool,
            "tool_input": _env_value(info, "tool_input", i),
            "tool_result": _env_value(info, "tool_result", i),
            "error": error,
        }
    )


def collect_groups(
    envs: Any,
    policy: Policy,
    queries: Sequence[Task],
    group_size: int,
    settings: SamplingSettings,
    rng: np.random.Generator,
    *,
    max_prompt_tokens: int = 1 << 30,
) -> RolloutBatch:
    """G trajectories for each of the B queries (needs a vector env of exactly B * G sub-envs).

    Every trajectory ends (terminated or truncated at the env's turn limit), so every group
    is complete by construction; the advantage code still checks it.
    """
    if len(queries) * group_size != envs.num_envs:
        raise ValueError(
            f"{len(queries)} queries x group {group_size} != {envs.num_envs} sub-envs; "
            "build the vector env with num_envs = queries_per_step * group_size"
        )
    tasks = [q for q in queries for _ in range(group_size)]
    groups = [g for g in range(len(queries)) for _ in range(group_size)]
    return collect(
        envs,
        policy,
        tasks,
        groups,
        settings,
        rng,
        group_size=group_size,
        max_prompt_tokens=max_prompt_tokens,
    )
