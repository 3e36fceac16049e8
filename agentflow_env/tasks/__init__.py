"""Tasks: the :class:`Task` record, loaders for benchmark files, and generated suites.

``make_suite(family, seed=...)`` builds the offline task sets of the four env families;
``load_tasks(path_or_records)`` reads the authors' JSON, JSONL, records or ``hf:`` datasets.
"""

from agentflow_env.tasks.base import ScorerName, Task
from agentflow_env.tasks.loaders import DatasetUnavailableError, TaskLoadError, load_tasks
from agentflow_env.tasks.suite import DEFAULT_NUM_TASKS, TaskSuite, make_suite

__all__ = [
    "Task",
    "ScorerName",
    "TaskSuite",
    "make_suite",
    "DEFAULT_NUM_TASKS",
    "load_tasks",
    "TaskLoadError",
    "DatasetUnavailableError",
]
