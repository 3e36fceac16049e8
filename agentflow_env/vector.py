"""``AgentFlowVectorEnv``: N episodes per step, each stage batched across them.

A serial loop over N single envs pays every module call and tool call one at a time; here each
``step`` parses all N actions, makes one batched executor call, runs all tool calls concurrently
(searches batched into one retrieval), one batched verifier call and one batched generator call
for the episodes that end. All N episodes share one :class:`~agentflow_env.flow.AgentFlow`
(one sandbox pool, one search index), so the results equal N independent ``AgentFlowEnv``s with
the same seeds and deterministic engines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from agentflow_env.config import EnvConfig, Family, settings_signature
from agentflow_env.env import build_flow
from agentflow_env.flow import Episode
from agentflow_env.reset_options import choose_tasks, sample_task
from agentflow_env.spaces import action_space, text_space
from agentflow_env.tasks.base import Task

__all__ = ["AgentFlowVectorEnv"]


class AgentFlowVectorEnv(VectorEnv):
    """Stage-batched vector env over ``num_envs`` AgentFlow episodes.

    Observations are a tuple of N strings; actions a sequence of N strings; rewards,
    terminations and truncations numpy arrays; infos in gymnasium's vector format (each key
    with a boolean ``_key`` mask).

    Autoreset (``metadata["autoreset_mode"]``): ``NEXT_STEP`` (default, gymnasium 1.x) resets a
    finished sub-env on the following ``step`` and ignores that step's action; ``SAME_STEP``
    resets immediately and puts the final observation in ``info["final_obs"]``; ``DISABLED``
    leaves finished sub-envs done (their actions are ignored, info ``skipped``) until
    ``reset(options={"reset_mask": mask})``. Rollout collectors use ``DISABLED``.

    Reset options: ``tasks`` (a sequence of N Task/dict/None: None samples as usual; G copies of
    one task make a GRPO group), ``task_indices`` (N ints or None), ``reset_mask`` (N bools).
    The env's settings: ``config`` (an :class:`~agentflow_env.config.EnvConfig`) and/or its
    fields as keyword arguments, as for :func:`agentflow_env.env.build_flow`.
    """

    @settings_signature
    def __init__(
        self,
        num_envs: int = 1,
        family: Family = "search",
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        config: EnvConfig | None = None,
        **settings: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.family = family
        self.render_mode = render_mode
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": ["ansi"]}
        self.flow, self.tasks = build_flow(family, config=config, **settings)
        self.single_observation_space = text_space(self.flow.max_observation_chars)
        self.single_action_space = action_space(self.flow.max_observation_chars)
        # gymnasium's batch_space deep-copies the Text space per sub-env (~10 MB of charset tables
        # each: 2.5 GB at N=256); text_space's copies share the tables, which are never mutated.
        self.observation_space = spaces.Tuple(
            [text_space(self.flow.max_observation_chars) for _ in range(num_envs)]
        )
        self.action_space = spaces.Tuple(
            [text_space(self.single_action_space.max_length) for _ in range(num_envs)]
        )
        self._rngs = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self._episodes: list[Episode | None] = [None] * num_envs
        self._needs_reset = np.zeros(num_envs, dtype=bool)

    # ----------------------------------------------------------------------------- reset
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        options = dict(options or {})
        seeds = self._seed_list(seed)
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        elif not (
            isinstance(mask, np.ndarray)
            and mask.dtype == np.bool_
            and mask.shape == (self.num_envs,)
        ):
            raise TypeError(
                f"options['reset_mask'] must be a bool numpy array of shape ({self.num_envs},)"
            )
        per_env = self._per_env_tasks(options)
        indices = [i for i in range(self.num_envs) if mask[i]]
        for i in indices:
            if seeds[i] is not None:
                self._rngs[i], _ = seeding.np_random(seeds[i])
        infos: dict[str, Any] = {}
        for i, info in self._start(indices, per_env).items():
            infos = self._add_info(infos, info, i)
        return self._observations(), infos

    def _seed_list(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"got {len(seeds)} seeds for num_envs={self.num_envs}")
        return seeds

    def _per_env_tasks(self, options: Mapping[str, Any]) -> list[Task | None]:
        return choose_tasks(options, self.tasks, self.num_envs)

    def _start(
        self, indices: Sequence[int], per_env: Sequence[Task | None]
    ) -> dict[int, dict[str, Any]]:
        """Start new episodes in sub-envs ``indices`` (one batched query-analysis call)."""
        tasks = [
            per_env[i] if per_env[i] is not None else sample_task(self.tasks, self._rngs[i])
            for i in indices
        ]
        infos: dict[int, dict[str, Any]] = {}
        for i, (episode, info) in zip(
            indices, self.flow.start(tasks) if tasks else [], strict=True
        ):
            self._episodes[i] = episode
            self._needs_reset[i] = False
            infos[i] = info
        return infos

    @property
    def current_tasks(self) -> tuple[Task | None, ...]:
        """The task of each sub-env's current episode (None before the first reset)."""
        return tuple(ep.task if ep is not None else None for ep in self._episodes)

    def _observations(self) -> tuple[str, ...]:
        return tuple(self.flow.observation(ep) if ep is not None else "" for ep in self._episodes)

    # ------------------------------------------------------------------------------ step
    def step(
        self, actions: Sequence[str]
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if any(ep is None for ep in self._episodes):
            raise ResetNeeded("call reset() before step()")
        actions = list(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for num_envs={self.num_envs}")
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminations = np.zeros(self.num_envs, dtype=np.bool_)
        truncations = np.zeros(self.num_envs, dtype=np.bool_)
        env_infos: dict[int, dict[str, Any]] = {}
        # NEXT_STEP: sub-envs that ended on the previous step reset now; their action is ignored.
        next_step = self.autoreset_mode == AutoresetMode.NEXT_STEP
        to_reset = [i for i in range(self.num_envs) if self._needs_reset[i]] if next_step else []
        env_infos.update(self._start(to_reset, [None] * self.num_envs))
        stepping = [i for i in range(self.num_envs) if i not in to_reset]
        results = self.flow.step(
            [self._episodes[i] for i in stepping],  # type: ignore[misc]
            [actions[i] for i in stepping],
        )
        ended = []
        for i, (reward, term, trunc, info) in zip(stepping, results, strict=True):
            rewards[i], terminations[i], truncations[i] = reward, term, trunc
            env_infos[i] = info
            if term or trunc:
                ended.append(i)
                self._needs_reset[i] = True
        if ended and self.autoreset_mode == AutoresetMode.SAME_STEP:
            finals = {i: (self.flow.observation(self._episodes[i]), env_infos[i]) for i in ended}  # type: ignore[arg-type]
            env_infos.update(self._start(ended, [None] * self.num_envs))
            for i, (obs, info) in finals.items():
                env_infos[i] = {**env_infos[i], "final_obs": obs, "final_info": info}
        infos: dict[str, Any] = {}
        for i in sorted(env_infos):
            infos = self._add_info(infos, env_infos[i], i)
        return self._observations(), rewards, terminations, truncations, infos

    def abandon(self, indices: Sequence[int]) -> None:
        """End these sub-envs' episodes without another step, e.g. because the policy could not
        act for them (its engine failed); they then wait for a reset like finished ones (under
        ``NEXT_STEP`` autoreset the next ``step`` resets them). The caller records the outcome."""
        for i in indices:
            episode = self._episodes[i]
            if episode is None:
                raise ResetNeeded(f"sub-env {i} has no episode to abandon: call reset() first")
            episode.done = True
            self._needs_reset[i] = True

    def render(self) -> tuple[str, ...] | None:
        return self._observations() if self.render_mode == "ansi" else None

    def close_extras(self, **kwargs: Any) -> None:
        self.flow.close()
