"""Reset options that choose tasks: one reading for the single env and the vector env.

The single env takes ``task`` (a Task or a dict) or ``task_index``; the vector env takes
``tasks`` and ``task_indices`` (one entry per sub-env, None to sample). A single env is read as a
vector of one, so both check options, validate tasks and range-check indices the same way, and
both sample with the same draw (one integer from the episode's generator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agentflow_env.tasks.base import Task

__all__ = ["choose_tasks", "sample_task"]

_SINGLE = {"task": "tasks", "task_index": "task_indices"}


def _as_task(value: Task | Mapping[str, Any]) -> Task:
    return value if isinstance(value, Task) else Task.model_validate(value)


def _entries(options: Mapping[str, Any], key: str, num_envs: int) -> list[Any]:
    entries = list(options[key])
    if len(entries) != num_envs:
        raise ValueError(f"options[{key!r}] has {len(entries)} entries for num_envs={num_envs}")
    return entries


def choose_tasks(
    options: Mapping[str, Any], tasks: Sequence[Task], num_envs: int | None = None
) -> list[Task | None]:
    """The task each env's next episode gets (None: sample one).

    ``num_envs=None`` reads a single env's options (``task``, ``task_index``); otherwise a
    vector env's (``tasks``, ``task_indices``: ``num_envs`` entries each; an index wins over a
    task). Unknown options raise ValueError, out-of-range indices IndexError.
    """
    allowed = tuple(_SINGLE) if num_envs is None else tuple(_SINGLE.values())
    unknown = set(options) - set(allowed)
    if unknown:
        hint = "'task' or 'task_index'" if num_envs is None else "tasks, task_indices, reset_mask"
        raise ValueError(f"unknown reset options {sorted(unknown)}; use {hint}")
    if num_envs is None:
        options = {_SINGLE[k]: [v] for k, v in options.items()}
        num_envs = 1
    chosen: list[Task | None] = [None] * num_envs
    if "tasks" in options:
        chosen = [t if t is None else _as_task(t) for t in _entries(options, "tasks", num_envs)]
    if "task_indices" in options:
        for i, index in enumerate(_entries(options, "task_indices", num_envs)):
            if index is None:
                continue
            if not 0 <= int(index) < len(tasks):
                raise IndexError(
                    f"task index {index} out of range: the task set has {len(tasks)} tasks"
                )
            chosen[i] = tasks[int(index)]
    return chosen


def sample_task(tasks: Sequence[Task], rng: np.random.Generator) -> Task:
    """One task drawn with ``rng`` (the same draw in the single and the vector env)."""
    return tasks[int(rng.integers(len(tasks)))]
