"""Collect complete groups of trajectories from a vector env with a policy.

For each of B queries, G sub-envs get the same task (``reset(options={"tasks": ...})``), the
policy samples every live sub-env's action in one batched call per turn, and the env steps all
of them at once. Every planner turn becomes a :class:`TurnSample` (prompt ids, response ids,
old log-probs, trajectory, group, turn); every trajectory an
:class:`~agentflow_env.trajectory.EpisodeRecord` built from the env's step outputs (the record
evaluation and the viewer use), with ``group``, ``index`` and ``sampling`` in its metadata. Its
return (:attr:`~agentflow_env.trajectory.EpisodeRecord.total_reward`) is the learner's reward; the
token data stays in the samples, out of the record.

Prompts are tracked as token ids. In raw-prompt mode, when the next observation equals the
previous one + the action text + a suffix (the env's append-only contract), the next prompt is
*the previous prompt ids + the sampled response ids + the suffix's ids*: the policy conditions
on exactly the tokens it produced, and all turns of a trajectory can later be scored in one
sequence (:mod:`learners.packing`). If the property does not hold, the observation is
re-tokenized from scratch (a new segment); nothing is lost but the packing.

A trajectory whose outcome infrastructure lost (``infra_error`` on its record: an engine failed
after its retries, a tool could not run, the judge failed) has no reward. It is marked invalid
(:attr:`RolloutBatch.valid`), and :func:`resample_failed` plays its query again in its place (a
bounded number of times); the records it replaced are kept in :attr:`RolloutBatch.replaced`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentflow_env.format import finish_action
from agentflow_env.tasks.base import Task
from agentflow_env.trajectory import EpisodeRecord, TrajectoryBuilder, info_at
from learners.groups import AdvantageInputs
from learners.policy import Policy, SamplingSettings

logger = logging.getLogger(__name__)

__all__ = [
    "RolloutBatch",
    "TurnSample",
    "collect",
    "collect_groups",
    "next_context",
    "observation_key",
    "resample_failed",
]

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
    state: str = ""
    """digest of the observation this turn acted on: equal for identical observations (the
    anchor states of step-level credit, :func:`learners.flow_grpo.advantages.gigpo`)"""


@dataclass
class RolloutBatch:
    """Samples and trajectories of one collection (complete groups)."""

    samples: list[TurnSample]
    trajectories: list[EpisodeRecord]
    """one record per trajectory; ``TurnSample.traj`` indexes this list"""
    group_size: int
    seconds: float = 0.0
    generation_seconds: float = 0.0
    replaced: list[EpisodeRecord] = field(default_factory=list)
    """records of trajectories that lost their outcome to infrastructure and were played again"""

    @property
    def rewards(self) -> np.ndarray:
        """Each trajectory's return (NaN for one without an outcome)."""
        return np.array([t.total_reward for t in self.trajectories], dtype=np.float64)

    @property
    def valid(self) -> np.ndarray:
        """False for trajectories whose outcome infrastructure lost."""
        return np.array([t.infra_error is None for t in self.trajectories], dtype=bool)

    @property
    def infra_failed(self) -> int:
        """Episodes of this collection that lost their outcome (replaced ones included)."""
        return len(self.replaced) + int((~self.valid).sum())

    @property
    def group_ids(self) -> np.ndarray:
        return np.array([t.metadata["group"] for t in self.trajectories], dtype=np.int64)

    def tool_calls(self) -> Counter[str]:
        """Tool calls over all trajectories, by tool name."""
        return Counter(
            turn.tool_name for t in self.trajectories for turn in t.turns if turn.tool_name
        )

    def advantage_inputs(self) -> AdvantageInputs:
        return AdvantageInputs(
            rewards=self.rewards,
            group_ids=self.group_ids,
            sample_traj=np.array([s.traj for s in self.samples], dtype=np.int64),
            sample_turn=np.array([s.turn for s in self.samples], dtype=np.int64),
            group_size=self.group_size,
            valid=self.valid,
            sample_state=np.array([s.state for s in self.samples], dtype=object),
            sample_reward=np.array([self._turn_reward(s) for s in self.samples], dtype=np.float64),
        )

    def _turn_reward(self, sample: TurnSample) -> float:
        """The env's reward for a sample's turn (NaN when it has none)."""
        turns = self.trajectories[sample.traj].turns
        reward = turns[sample.turn].reward if sample.turn < len(turns) else None
        return math.nan if reward is None else float(reward)

    @property
    def generated_tokens(self) -> int:
        return sum(len(s.response_ids) for s in self.samples)

    def stats(self) -> dict[str, float]:
        """Scalars for logging: success (over trajectories with an outcome), turns, tool calls
        per trajectory, errors."""
        n = max(len(self.trajectories), 1)
        valid = self.rewards[self.valid]
        out = {
            "rollout/success": float(np.mean(valid)) if len(valid) else 0.0,
            "rollout/turns": sum(t.num_turns for t in self.trajectories) / n,
            "rollout/errors": sum(bool(x.error) for t in self.trajectories for x in t.turns) / n,
            "rollout/response_tokens": self.generated_tokens / max(len(self.samples), 1),
            "rollout/truncated": sum(t.truncated for t in self.trajectories) / n,
        }
        for name, count in sorted(self.tool_calls().items()):
            out[f"rollout/tool_calls/{name}"] = count / n
        return out


def observation_key(observation: str) -> str:
    """A short digest of an observation (equal observations, equal keys)."""
    return hashlib.blake2b(observation.encode("utf-8"), digest_size=16).hexdigest()


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


def _builders(
    tasks: Sequence[Task],
    group_ids: Sequence[int],
    settings: SamplingSettings,
    episode_prefix: str,
    metadata: Mapping[str, Any],
) -> list[TrajectoryBuilder]:
    """One record builder per trajectory, its metadata filled but for the per-turn lists."""
    sampling = {
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "max_new_tokens": settings.max_new_tokens,
    }
    return [
        TrajectoryBuilder(
            f"{episode_prefix}{i}",
            task,
            **{
                **metadata,
                "index": i,
                "group": int(group_ids[i]),
                "sampling": dict(sampling),
                "response_tokens": [],
                "finish_reasons": [],
            },
        )
        for i, task in enumerate(tasks)
    ]


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
    episode_prefix: str = "traj",
    metadata: Mapping[str, Any] | None = None,
) -> RolloutBatch:
    """Run ``tasks[i]`` in sub-env ``i`` to the end; unused sub-envs idle (finish at once).

    Trajectory ``i`` is recorded as episode ``f"{episode_prefix}{i}"`` whose metadata holds
    ``metadata`` (e.g. the trainer's ``step`` and ``rank``), ``index`` (``i``), ``group``,
    ``sampling`` (temperature, top_p, max_new_tokens) and, per turn, ``response_tokens`` and
    ``finish_reasons`` of the sampled action.
    """
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
    builders = _builders(tasks, group_ids, settings, episode_prefix, metadata or {})
    samples: list[TurnSample] = []
    done = [False] * n
    gen_s, turn = 0.0, 0
    while not all(done):
        live = [i for i in range(n) if not done[i]]
        states = {i: observation_key(obs[i]) for i in live}  # what these turns act on
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
        obs, rewards, terms, truncs, infos = envs.step(actions)
        for i, prompt, out in zip(live, prompts, outs, strict=False):
            samples.append(
                TurnSample(
                    traj=i,
                    group=int(group_ids[i]),
                    turn=turn,
                    prompt_ids=prompt,
                    response_ids=list(out.token_ids),
                    logprobs=list(out.logprobs),
                    finish_reason=out.finish_reason,
                    action_text=out.text,
                    state=states[i],
                )
            )
            record = builders[i].record
            record.metadata["response_tokens"].append(len(out.token_ids))
            record.metadata["finish_reasons"].append(out.finish_reason)
            builders[i].add(
                out.text, float(rewards[i]), bool(terms[i]), bool(truncs[i]), info_at(infos, i)
            )
            if terms[i] or truncs[i]:
                done[i] = True
            else:
                contexts[i], _ = next_context(
                    policy, prompt, out.token_ids, prev_obs[i], out.text, obs[i]
                )
                prev_obs[i] = obs[i]
        turn += 1
    return RolloutBatch(
        samples,
        [b.record for b in builders],
        group_size,
        seconds=time.perf_counter() - t0,
        generation_seconds=gen_s,
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
    query_ids: Sequence[int] | None = None,
    episode_prefix: str = "traj",
    metadata: Mapping[str, Any] | None = None,
) -> RolloutBatch:
    """G trajectories for each of the B queries (needs a vector env of exactly B * G sub-envs).

    Every trajectory ends (terminated or truncated at the env's turn limit), so every group
    is complete by construction; the advantage code still checks it. Query ``q``'s group id is
    ``query_ids[q]`` (default ``q``; the trainer passes each query's position in the step's
    batch over all ranks, so a group id names one group of the step). ``episode_prefix`` and
    ``metadata`` go to :func:`collect`.
    """
    if len(queries) * group_size != envs.num_envs:
        raise ValueError(
            f"{len(queries)} queries x group {group_size} != {envs.num_envs} sub-envs; "
            "build the vector env with num_envs = queries_per_step * group_size"
        )
    ids = list(range(len(queries))) if query_ids is None else [int(q) for q in query_ids]
    if len(ids) != len(queries) or len(set(ids)) != len(ids):
        raise ValueError(f"query_ids must be {len(queries)} distinct ids, got {query_ids}")
    tasks = [q for q in queries for _ in range(group_size)]
    groups = [g for g in ids for _ in range(group_size)]
    return collect(
        envs,
        policy,
        tasks,
        groups,
        settings,
        rng,
        group_size=group_size,
        max_prompt_tokens=max_prompt_tokens,
        episode_prefix=episode_prefix,
        metadata=metadata,
    )


def resample_failed(
    envs: Any,
    policy: Policy,
    batch: RolloutBatch,
    tasks: Mapping[int, Task],
    settings: SamplingSettings,
    rng: np.random.Generator,
    *,
    tries: int,
    max_prompt_tokens: int = 1 << 30,
    episode_prefix: str = "traj",
    metadata: Mapping[str, Any] | None = None,
) -> RolloutBatch:
    """Play the queries of trajectories without an outcome again, in their place, up to
    ``tries`` rounds; returns ``batch`` updated (the replaced records in ``batch.replaced``).

    ``tasks`` maps a group id to its query. Nothing is drawn from ``rng`` when every
    trajectory has its outcome, so a run without failures is unchanged by this step.
    """
    for attempt in range(1, tries + 1):
        failed = [j for j, t in enumerate(batch.trajectories) if t.infra_error is not None]
        if not failed:
            break
        groups = [int(batch.trajectories[j].metadata["group"]) for j in failed]
        again = collect(
            envs,
            policy,
            [tasks[g] for g in groups],
            groups,
            settings,
            rng,
            group_size=batch.group_size,
            max_prompt_tokens=max_prompt_tokens,
            episode_prefix=f"{episode_prefix}{attempt}-",
            metadata={**(metadata or {}), "attempt": attempt},
        )
        keep = [s for s in batch.samples if s.traj not in set(failed)]
        for i, j in enumerate(failed):
            record = again.trajectories[i]
            record.metadata["index"] = batch.trajectories[j].metadata["index"]
            batch.replaced.append(batch.trajectories[j])
            batch.trajectories[j] = record
            keep.extend(TurnSample(**{**vars(s), "traj": j}) for s in again.samples if s.traj == i)
        batch.samples = keep
        batch.seconds += again.seconds
        batch.generation_seconds += again.generation_seconds
    return batch
