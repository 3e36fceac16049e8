"""The env section of a learner's config, and the vector envs and task split built from it.

:class:`EnvConfig` *is* :class:`agentflow_env.config.EnvConfig` (every env setting, documented
there, becomes an ``--env.*`` flag) with the tiny preset's values as defaults and the learner's
own fields: ``env_id`` (which env; it fixes the family) and ``eval_tasks`` (the held-out split).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from agentflow_env import config as env_config
from agentflow_env.format import PromptStyle
from agentflow_env.registration import ENV_IDS
from agentflow_env.tasks.base import Task

__all__ = ["EnvConfig", "env_kwargs", "make_vector_env", "split_tasks"]


class EnvConfig(env_config.EnvConfig):
    """The environment the planner acts in."""

    env_id: str = "AgentFlow-Search-v0"
    """gymnasium id of the training environment (it fixes the task family)"""
    eval_tasks: int = Field(100, ge=0)
    """held-out tasks (the last ones of the task set) never used for training"""
    # The tiny preset's values (the learners' defaults). 3-hop questions need 3 searches + 1
    # finishing step; one passage per search keeps prompts short enough for a 0.8M-parameter
    # model (NOTES.md: BM25 top-1 finds the right document here).
    max_turns: int = Field(4, ge=1)
    """planner turns per episode in training and evaluation rollouts (3-hop questions need 4)"""
    prompt_style: PromptStyle = "compact"
    """planner prompt: full (tool cards + format) or compact (query + tool names, for tiny
    models)"""
    num_tasks: int | None = Field(3100, ge=1)
    """generated tasks (train + held-out) when `tasks` is None; the warm start's demos used the
    first 3000 minus the 600-task split's held-out ones, so the last 100 here are unseen by it"""
    seed: int = Field(0, alias="task_seed")
    """seed of the generated task world (the warm start was trained on this world); named
    task_seed in files and flags, beside the run's own seed"""
    task_kwargs: dict[str, Any] | None = Field(default_factory=lambda: {"hops": [1, 3]})
    """extra arguments of the task generator, e.g. {"hops": [1, 3]}"""
    tool_kwargs: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"Search_Tool": {"top_k": 1}}
    )
    """per-tool constructor arguments, e.g. {"Search_Tool": {"top_k": 1}}"""

    @field_validator("env_id")
    @classmethod
    def _known_id(cls, env_id: str) -> str:
        if env_id not in ENV_IDS:
            raise ValueError(
                f"env_id={env_id!r} is not an AgentFlow id; choose one of {sorted(ENV_IDS)}"
            )
        return env_id

    @property
    def family(self) -> str:
        """The task family of ``env_id``."""
        return ENV_IDS[self.env_id]


def env_kwargs(cfg: EnvConfig) -> dict[str, Any]:
    """Keyword arguments for ``AgentFlowVectorEnv`` / ``gym.make`` from an :class:`EnvConfig`."""
    return {"family": cfg.family, **cfg.settings()}


def make_vector_env(cfg: EnvConfig, num_envs: int) -> Any:
    """A stage-batched vector env with autoreset disabled (rollouts reset it per collection)."""
    from gymnasium.vector import AutoresetMode

    from agentflow_env.vector import AgentFlowVectorEnv

    return AgentFlowVectorEnv(
        num_envs, cfg.family, autoreset_mode=AutoresetMode.DISABLED, config=cfg
    )


def split_tasks(tasks: list[Task], eval_tasks: int) -> tuple[list[Task], list[Task]]:
    """(train, held-out): the last ``eval_tasks`` tasks are held out."""
    if eval_tasks >= len(tasks):
        raise ValueError(f"{eval_tasks} held-out tasks leave none of the {len(tasks)} for training")
    if eval_tasks == 0:
        return list(tasks), []
    return list(tasks[:-eval_tasks]), list(tasks[-eval_tasks:])
