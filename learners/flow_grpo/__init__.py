"""Flow-GRPO: the paper's learner for the AgentFlow planner (``python -m learners.flow_grpo``).

Light imports only: the trainer (torch, transformers, the env) loads on first use.
"""

from learners.flow_grpo.advantages import ESTIMATORS, compute_advantages, register_estimator
from learners.flow_grpo.config import FlowGRPOConfig, make_config

__all__ = [
    "ESTIMATORS",
    "FlowGRPOConfig",
    "FlowGRPOTrainer",
    "compute_advantages",
    "make_config",
    "register_estimator",
]


def __getattr__(name: str):
    if name == "FlowGRPOTrainer":
        from learners.flow_grpo.trainer import FlowGRPOTrainer

        return FlowGRPOTrainer
    raise AttributeError(f"module 'learners.flow_grpo' has no attribute {name!r}")
