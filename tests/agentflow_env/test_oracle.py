"""End to end with the real tools: a scripted oracle planner solves generated tasks."""

from __future__ import annotations

import gymnasium as gym
import pytest

import agentflow_env  # noqa: F401 - registers the ids
from agentflow_env.planners import OraclePlanner


def _run_episode(env: gym.Env, planner: OraclePlanner, index: int) -> tuple[float, dict, int]:
    obs, _ = env.reset(options={"task_index": index})
    planner.reset(env.unwrapped.task)
    for turn in range(1, 11):
        obs, reward, terminated, truncated, info = env.step(planner.act(obs))
        if terminated or truncated:
            return reward, info, turn
    raise AssertionError("episode did not end")


@pytest.mark.parametrize("verbose", [True, False])
def test_oracle_solves_search_tasks_of_one_to_three_hops(verbose: bool) -> None:
    env = gym.make("AgentFlow-Search-v0", num_tasks=30, task_kwargs={"hops": (1, 3)})
    planner = OraclePlanner(verbose=verbose)
    hops_seen = set()
    for index in range(len(env.unwrapped.tasks)):
        task = env.unwrapped.tasks[index]
        hops_seen.add(task.metadata["hops"])
        reward, info, turns = _run_episode(env, planner, index)
        assert reward == 1.0, (task.question, info["answer"], task.answer)
        assert info["error"] is None and turns == task.metadata["hops"] + 1
    assert hops_seen == {1, 2, 3}
    env.close()


def test_wrong_answer_gets_zero_on_generated_search_task() -> None:
    env = gym.make("AgentFlow-Search-v0", num_tasks=5)
    env.reset(options={"task_index": 0})
    _, reward, terminated, _, info = env.step(
        "Tool Name: Finish\n<answer>Nobody In Particular</answer>"
    )
    assert terminated and reward == 0.0 and info["score"] == 0.0
    env.close()


@pytest.mark.parametrize(
    "env_id", ["AgentFlow-Math-v0", "AgentFlow-Agentic-v0", "AgentFlow-Science-v0"]
)
def test_oracle_solves_tool_using_families(env_id: str) -> None:
    env = gym.make(env_id, num_tasks=8)
    planner = OraclePlanner()
    rewards = [_run_episode(env, planner, i)[0] for i in range(len(env.unwrapped.tasks))]
    assert rewards == [1.0] * len(rewards)
    env.close()


def test_python_code_in_command_and_in_a_fence() -> None:
    env = gym.make("AgentFlow-Math-v0", num_tasks=4)
    env.reset(options={"task_index": 0})
    _, _, _, _, info = env.step(
        "Sub-Goal: add\nTool Name: Python_Coder_Tool\nCommand: print(19 + 23)"
    )
    assert info["error"] is None and "42" in info["tool_result"]
    _, _, _, _, info = env.step(
        "Sub-Goal: multiply\nTool Name: Python_Coder_Tool\n```python\nx = 6 * 7\nprint(x)\n```"
    )
    assert info["error"] is None and "42" in info["tool_result"]
    _, _, _, _, info = env.step("Sub-Goal: fail\nTool Name: Python_Coder_Tool\nCommand: 1/0")
    assert "ZeroDivisionError" in (info["error"] or "") + info["tool_result"]
    env.close()
