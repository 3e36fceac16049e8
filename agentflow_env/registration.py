"""Gymnasium ids. ``import agentflow_env`` registers them."""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

__all__ = ["ENV_IDS", "register_envs"]

ENV_IDS: dict[str, str] = {
    "AgentFlow-Search-v0": "search",
    "AgentFlow-Agentic-v0": "agentic",
    "AgentFlow-Math-v0": "math",
    "AgentFlow-Science-v0": "science",
}


def register_envs() -> None:
    """Register every id (idempotent). ``make_vec`` gets the stage-batched vector env."""
    for env_id, family in ENV_IDS.items():
        if env_id in registry:
            continue
        register(
            id=env_id,
            entry_point="agentflow_env.env:AgentFlowEnv",
            vector_entry_point="agentflow_env.vector:AgentFlowVectorEnv",
            kwargs={"family": family},
            # The env enforces max_turns itself (and still scores a truncated episode), so no
            # TimeLimit wrapper: it would cut the episode before the generator answers.
            max_episode_steps=None,
        )
