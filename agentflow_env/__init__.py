"""AgentFlow as a text Gymnasium environment: the planner is the acting policy.

``import agentflow_env`` registers ``AgentFlow-Search-v0``, ``AgentFlow-Agentic-v0``,
``AgentFlow-Math-v0`` and ``AgentFlow-Science-v0``.
"""

from agentflow_env.env import AgentFlowEnv, build_flow
from agentflow_env.registration import ENV_IDS, register_envs
from agentflow_env.tasks.base import Task

__all__ = ["AgentFlowEnv", "AgentFlowVectorEnv", "ENV_IDS", "Task", "build_flow"]
__version__ = "0.1.0"

register_envs()


def __getattr__(name: str):  # noqa: ANN202 - lazy attribute
    # The vector env imports gymnasium.vector machinery; load it on first use.
    if name == "AgentFlowVectorEnv":
        from agentflow_env.vector import AgentFlowVectorEnv

        return AgentFlowVectorEnv
    raise AttributeError(f"module 'agentflow_env' has no attribute {name!r}")
