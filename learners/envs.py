"""Build the vector envs and the train / held-out task split a learner uses."""

from __future__ import annotations

from typing import Any

from agentflow_env.tasks.base import Task
from learners.flow_grpo.config import EnvConfig

__all__ = ["env_kwargs", "make_vector_env", "split_tasks"]


def env_kwargs(cfg: EnvConfig) -> dict[str, Any]:
    """Keyword arguments for ``AgentFlowVectorEnv`` / ``gym.make`` from an :class:`EnvConfig`."""
    import agentflow_env  # noqa: F401 - registers the ids
    from agentflow_env.registration import ENV_IDS

    if cfg.env_id not in ENV_IDS:
        raise ValueError(
            f"env.env_id={cfg.env_id!r} is not an AgentFlow id; choose one of {sorted(ENV_IDS)}"
        )
    kwargs: dict[str, Any] = dict(
        family=ENV_IDS[cfg.env_id],
        max_turns=cfg.max_turns,
        prompt_style=cfg.prompt_style,
        executor=cfg.executor,
        verifier=cfg.verifier,
        generator=cfg.generator,
        tool_kwargs=dict(cfg.tool_kwargs),
        seed=cfg.task_seed,
    )
    if cfg.engine is not None:
        kwargs["engine"] = cfg.engine
    if cfg.tools is not None:
        kwargs["tools"] = list(cfg.tools)
        gen_kwargs = kwargs["tool_kwargs"].setdefault("Base_Generator_Tool", {})
        if "Base_Generator_Tool" in cfg.tools and "engine" not in gen_kwargs:
            if cfg.engine is None:
                raise ValueError("Base_Generator_Tool needs an LLM: set --env.engine")
            from agentflow_env.llm import make_engine

            gen_kwargs["engine"] = make_engine(cfg.engine)
    if cfg.tasks is not None:
        kwargs["tasks"] = cfg.tasks
    else:
        kwargs["num_tasks"] = cfg.num_tasks
        kwargs["task_kwargs"] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in cfg.task_kwargs.items()
        }
    return kwargs


def make_vector_env(cfg: EnvConfig, num_envs: int) -> Any:
    """A stage-batched vector env with autoreset disabled (rollouts reset it per collection)."""
    from gymnasium.vector import AutoresetMode

    from agentflow_env.vector import AgentFlowVectorEnv

    return AgentFlowVectorEnv(
        num_envs=num_envs, autoreset_mode=AutoresetMode.DISABLED, **env_kwargs(cfg)
    )


def split_tasks(tasks: list[Task], eval_tasks: int) -> tuple[list[Task], list[Task]]:
    """(train, held-out): the last ``eval_tasks`` tasks are held out."""
    if eval_tasks >= len(tasks):
        raise ValueError(f"{eval_tasks} held-out tasks leave none of the {len(tasks)} for training")
    if eval_tasks == 0:
        return list(tasks), []
    return list(tasks[:-eval_tasks]), list(tasks[-eval_tasks:])
