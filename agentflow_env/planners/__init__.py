"""Policies without training: scripted planners and the batched planner interface.

- :mod:`~agentflow_env.planners.scripted`: scripted planners (oracle, random tool, search then
  answer) for tests, baselines and SFT demonstrations;
- :mod:`~agentflow_env.planners.batch`: :class:`BatchPlanner`, the one-call-per-step interface an
  evaluation drives (scripted planners per episode, or an engine for all live episodes at once).
"""

from agentflow_env.planners.batch import (
    BatchPlanner,
    CountingEngine,
    EngineBatchPlanner,
    PlannerSpecError,
    ScriptedBatchPlanner,
    make_batch_planner,
)
from agentflow_env.planners.scripted import (
    SCRIPTED_PLANNERS,
    OraclePlanner,
    RandomToolPlanner,
    ScriptedPlanner,
    SearchThenAnswerPlanner,
    get_scripted_planner,
)

__all__ = [
    "SCRIPTED_PLANNERS",
    "BatchPlanner",
    "CountingEngine",
    "EngineBatchPlanner",
    "OraclePlanner",
    "PlannerSpecError",
    "RandomToolPlanner",
    "ScriptedBatchPlanner",
    "ScriptedPlanner",
    "SearchThenAnswerPlanner",
    "get_scripted_planner",
    "make_batch_planner",
]
