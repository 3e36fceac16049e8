"""Reset options that choose tasks: the single env reads them as a vector env of one."""

from __future__ import annotations

import numpy as np
import pytest

from agentflow_env import AgentFlowEnv, AgentFlowVectorEnv
from agentflow_env.reset_options import choose_tasks, sample_task
from tests.agentflow_env.helpers import lookup_env_kwargs, numbered_tasks

TASKS = numbered_tasks(4)


def test_single_and_vector_options_choose_the_same_way() -> None:
    as_dict = {"id": "d", "question": "q?", "answer": "a"}
    assert choose_tasks({"task_index": 2}, TASKS) == [TASKS[2]]
    assert choose_tasks({"task": as_dict}, TASKS)[0].id == "d"  # dicts become Tasks
    assert choose_tasks({}, TASKS) == [None]  # None: sample
    chosen = choose_tasks(
        {"tasks": [None, as_dict, TASKS[0]], "task_indices": [3, None, 1]}, TASKS, 3
    )
    assert [t.id for t in chosen] == ["t3", "d", "t1"]  # an index wins over a task


@pytest.mark.parametrize(
    ("options", "num_envs", "error", "message"),
    [
        ({"task_index": 4}, None, IndexError, "task index 4 out of range: the task set has 4"),
        ({"task_indices": [0, -1]}, 2, IndexError, "task index -1 out of range"),
        ({"tasks": [None]}, 2, ValueError, "options['tasks'] has 1 entries for num_envs=2"),
        ({"tasks": [None]}, None, ValueError, "unknown reset options ['tasks']; use 'task' or"),
        ({"task": None}, 2, ValueError, "use tasks, task_indices, reset_mask"),
    ],
)
def test_bad_options(options: dict, num_envs: int | None, error: type, message: str) -> None:
    with pytest.raises(error) as info:
        choose_tasks(options, TASKS, num_envs)
    assert message in str(info.value)


def test_single_env_and_sub_env_draw_the_same_task_from_the_same_seed() -> None:
    assert sample_task(TASKS, np.random.default_rng(5)) == sample_task(
        TASKS, np.random.default_rng(5)
    )
    env = AgentFlowEnv(**lookup_env_kwargs(n=20))
    envs = AgentFlowVectorEnv(3, **lookup_env_kwargs(n=20))
    envs.reset(seed=7)
    for i in range(3):
        env.reset(seed=7 + i)
        assert env.task == envs.current_tasks[i]
    env.close()
    envs.close()
