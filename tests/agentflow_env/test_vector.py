"""AgentFlowVectorEnv: gymnasium's vector API, autoreset modes, determinism and fault isolation."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from agentflow_env import AgentFlowEnv, AgentFlowVectorEnv
from tests.agentflow_env.helpers import (
    LookupTool,
    finish_action,
    lookup_action,
    lookup_env_kwargs,
    numbered_tasks,
)
from tools.base import ToolResult


def _policy(obs: str, rng: np.random.Generator) -> str:
    """A seeded random policy over good, bad and finishing actions."""
    item = obs.split("item ")[1].split("?")[0]
    choices = [
        lookup_action(f"item {item}"),
        finish_action(f"code-{item}"),
        finish_action("wrong"),
        "nonsense",
        lookup_action("nope"),
    ]
    return choices[int(rng.integers(len(choices)))]


def test_shapes_and_first_step() -> None:
    envs = AgentFlowVectorEnv(4, **lookup_env_kwargs())
    obs, infos = envs.reset(seed=0)
    assert isinstance(obs, tuple) and len(obs) == 4 and all(isinstance(o, str) for o in obs)
    assert envs.observation_space.contains(obs)
    obs, rewards, terms, truncs, infos = envs.step([lookup_action("item 0")] * 4)
    assert rewards.shape == terms.shape == truncs.shape == (4,)
    assert rewards.dtype == np.float64 and terms.dtype == np.bool_
    assert infos["_turn"].all() and (infos["turn"] == 1).all()
    envs.close()


def test_make_vec_uses_the_stage_batched_env() -> None:
    envs = gym.make_vec(
        "AgentFlow-Search-v0",
        num_envs=3,
        vectorization_mode="vector_entry_point",
        **lookup_env_kwargs(),
    )
    assert isinstance(envs.unwrapped, AgentFlowVectorEnv) and envs.num_envs == 3
    envs.close()


def test_per_sub_env_task_assignment_makes_groups() -> None:
    envs = AgentFlowVectorEnv(4, **lookup_env_kwargs())
    tasks = envs.tasks
    obs, infos = envs.reset(options={"tasks": [tasks[3]] * 2 + [tasks[1]] * 2})
    assert list(infos["task_id"]) == ["t3", "t3", "t1", "t1"]
    obs, infos = envs.reset(options={"task_indices": [0, None, 5, None]}, seed=1)
    assert infos["task_id"][0] == "t0" and infos["task_id"][2] == "t5"
    with pytest.raises(ValueError, match="3 entries for num_envs=4"):
        envs.reset(options={"tasks": tasks[:3]})
    with pytest.raises(IndexError):
        envs.reset(options={"task_indices": [99, 0, 0, 0]})


def test_next_step_autoreset() -> None:
    envs = AgentFlowVectorEnv(2, **lookup_env_kwargs())
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    envs.reset(options={"task_indices": [0, 1]})
    obs, rewards, terms, _, _ = envs.step([finish_action("code-0"), lookup_action("item 1")])
    assert terms.tolist() == [True, False] and rewards.tolist() == [1.0, 0.0]
    # Sub-env 0 resets now, ignoring its action; sub-env 1 keeps going.
    obs, rewards, terms, truncs, infos = envs.step(["ignored", finish_action("code-1")])
    assert obs[0].endswith("### Step 1\n") and "ignored" not in obs[0]
    assert infos["turn"][0] == 0 and terms.tolist() == [False, True]


def test_same_step_autoreset_reports_final_obs() -> None:
    envs = AgentFlowVectorEnv(2, autoreset_mode="SameStep", **lookup_env_kwargs())
    envs.reset(options={"task_indices": [0, 1]})
    obs, rewards, terms, _, infos = envs.step([finish_action("code-0"), lookup_action("item 1")])
    assert terms[0] and obs[0].endswith("### Step 1\n")
    assert infos["_final_obs"].tolist() == [True, False]
    assert "<answer>code-0</answer>" in infos["final_obs"][0]
    assert infos["final_info"]["score"][0] == 1.0


def test_disabled_autoreset_finished_envs_wait_without_work() -> None:
    tool = LookupTool({"item 1": "code-1"})
    envs = AgentFlowVectorEnv(
        2, autoreset_mode=AutoresetMode.DISABLED, **lookup_env_kwargs(tools=[tool])
    )
    envs.reset(options={"task_indices": [0, 1]})
    envs.step([finish_action("code-0"), lookup_action("item 1")])
    calls_before = list(tool.calls)
    obs, rewards, terms, truncs, infos = envs.step(
        [lookup_action("item 1"), lookup_action("item 1")]
    )
    assert tool.calls == calls_before + ["item 1"], "the finished episode made no tool call"
    assert infos["skipped"][0] and not terms[0] and rewards[0] == 0.0
    obs, infos = envs.reset(options={"reset_mask": np.array([True, False])})
    assert obs[0].endswith("### Step 1\n") and "Step 2" in obs[1]


def _run(envs_step, reset_obs: tuple[str, ...], n: int, steps: int, seed: int):
    rngs = [np.random.default_rng(seed + i) for i in range(n)]
    trace = [reset_obs]
    obs = reset_obs
    for _ in range(steps):
        actions = [_policy(o, rngs[i]) for i, o in enumerate(obs)]
        obs, rewards, terms, truncs = envs_step(actions)
        trace.append((obs, tuple(rewards), tuple(terms), tuple(truncs)))
    return trace


def test_identical_to_independent_single_envs() -> None:
    n = 5
    kwargs = lookup_env_kwargs(n=20)
    vec = AgentFlowVectorEnv(n, **kwargs)
    singles = [AgentFlowEnv(**kwargs) for _ in range(n)]
    vec_obs, _ = vec.reset(seed=7)
    single_obs = tuple(env.reset(seed=7 + i)[0] for i, env in enumerate(singles))
    assert vec_obs == single_obs

    def vec_step(actions):
        obs, r, te, tr, _ = vec.step(actions)
        return obs, r.tolist(), te.tolist(), tr.tolist()

    def single_step(actions):
        out = []
        for env, action, pending in zip(singles, actions, single_step.pending, strict=True):
            if pending:  # NEXT_STEP autoreset, as the vector env does
                out.append((env.reset()[0], 0.0, False, False))
            else:
                o, r, te, tr, _ = env.step(action)
                out.append((o, r, te, tr))
        single_step.pending = [te or tr for _, _, te, tr in out]
        obs, r, te, tr = zip(*out, strict=True)
        return tuple(obs), list(r), list(te), list(tr)

    single_step.pending = [False] * n
    assert _run(vec_step, vec_obs, n, 12, seed=3) == _run(single_step, single_obs, n, 12, seed=3)


def test_slow_tool_affects_only_its_episode() -> None:
    tool = LookupTool({f"item {i}": f"code-{i}" for i in range(4)}, hang_s=2.0)
    envs = AgentFlowVectorEnv(4, **lookup_env_kwargs(tools=[tool], tool_timeout_s=0.5))
    envs.reset(options={"task_indices": [0, 1, 2, 3]})
    start = time.perf_counter()
    obs, rewards, _, truncs, infos = envs.step(
        [lookup_action("hang")] + [lookup_action(f"item {i}") for i in (1, 2, 3)]
    )
    assert time.perf_counter() - start < 1.5
    # the hung tool is infrastructure: its episode ends unscored, the others go on
    assert "timed out" in infos["error"][0] and infos["infra_error"]["kind"][0] == "tool"
    assert truncs.tolist() == [True, False, False, False] and math.isnan(rewards[0])
    assert [infos["tool_result"][i] for i in (1, 2, 3)] == ["code-1", "code-2", "code-3"]
    _, rewards, terms, _, _ = envs.step(
        [finish_action("code-0")] + [finish_action(f"code-{i}") for i in (1, 2, 3)]
    )
    assert terms[1:].all() and rewards[1:].tolist() == [1.0] * 3


class _ThreadRecordingTool(LookupTool):
    """A lookup tool that records which thread ran each call."""

    def __init__(self, table: dict[str, str], name: str, inline: bool) -> None:
        super().__init__(table)
        self.card = self.card.model_copy(update={"name": name})
        self.runs_inline = inline
        self.threads: list[int] = []

    def execute(self, query: str = "", **extra: Any) -> ToolResult:
        self.threads.append(threading.get_ident())
        return super().execute(query, **extra)


def test_inline_tools_run_on_the_stepping_thread_and_pool_tools_do_not() -> None:
    table = {f"item {i}": f"code-{i}" for i in range(4)}
    inline, pooled = (
        _ThreadRecordingTool(table, "Inline_Tool", True),
        _ThreadRecordingTool(table, "Pool_Tool", False),
    )
    envs = AgentFlowVectorEnv(4, **lookup_env_kwargs(tools=[inline, pooled]))
    envs.reset(options={"task_indices": [0, 1, 2, 3]})
    act = [
        lookup_action(f"item {i}").replace("Lookup_Tool", name)
        for i, name in enumerate(["Inline_Tool", "Pool_Tool", "Inline_Tool", "Pool_Tool"])
    ]
    act[2] = act[2].replace(
        "item 2", "boom"
    )  # an inline tool that raises only fails its own episode
    _, _, _, _, infos = envs.step(act)
    assert [infos["tool_result"][i] for i in (0, 1, 3)] == ["code-0", "code-1", "code-3"]
    assert infos["error_kind"][2] == "tool" and "RuntimeError: tool exploded" in infos["error"][2]
    assert set(inline.threads) == {threading.get_ident()}
    assert pooled.threads and threading.get_ident() not in pooled.threads
    envs.close()


def _make_single():
    return AgentFlowEnv(**lookup_env_kwargs())


def test_gymnasium_sync_and_async_vector_envs_still_work() -> None:
    for envs in (
        SyncVectorEnv([_make_single] * 2),
        AsyncVectorEnv([_make_single] * 2, shared_memory=False, context="fork"),
    ):
        obs, _ = envs.reset(seed=0)
        assert all(o.startswith("You are the planner") for o in obs)
        obs, rewards, terms, _, infos = envs.step([lookup_action("item 0"), "junk"])
        assert "Result:" in obs[0] and "could not parse" in obs[1]
        envs.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        AgentFlowVectorEnv(0, **lookup_env_kwargs())
    envs = AgentFlowVectorEnv(
        2, tasks=numbered_tasks(2), tools=[LookupTool()], scorer=lambda a, t: 0.0
    )
    with pytest.raises(gym.error.ResetNeeded):
        envs.step(["a", "b"])
    envs.reset()
    with pytest.raises(ValueError, match="got 1 actions"):
        envs.step(["a"])
    with pytest.raises(TypeError, match="reset_mask"):
        envs.reset(options={"reset_mask": [True, False]})


def test_batched_spaces_equal_gymnasiums_but_share_the_charset_tables() -> None:
    from gymnasium.vector.utils import batch_space

    envs = AgentFlowVectorEnv(3, **lookup_env_kwargs())
    assert envs.observation_space == batch_space(envs.single_observation_space, 3)
    assert envs.action_space == batch_space(envs.single_action_space, 3)
    # batch_space deep-copies ~10 MB of tables per sub-env (2.5 GB at N=256); ours are shared
    first, second = envs.observation_space[0], envs.observation_space[1]
    assert first is not second and first.character_set is second.character_set
    envs.close()


def test_info_messages_per_sub_env_equal_a_single_envs() -> None:
    from agentflow_env.trajectory import info_at

    kwargs = lookup_env_kwargs()
    vec, single = AgentFlowVectorEnv(2, **kwargs), AgentFlowEnv(**kwargs)
    try:
        _, infos = vec.reset(options={"task_indices": [0, 1]})
        _, info = single.reset(options={"task_index": 1})
        assert info_at(infos, 1)["messages"] == info["messages"]
        assert "item 0" in info_at(infos, 0)["messages"][1]["content"]
        _, _, terms, _, infos = vec.step([finish_action("code-0"), lookup_action("item 1")])
        *_, info = single.step(lookup_action("item 1"))
        assert terms[0] and info_at(infos, 1)["messages"] == info["messages"]
        assert info_at(infos, 0)["messages"][-1] == {"role": "user", "content": "Result: Finished."}
        # NEXT_STEP autoreset: sub-env 0 starts over; its messages start over with it.
        _, _, _, _, infos = vec.step(["ignored", finish_action("code-1")])
        *_, info = single.step(finish_action("code-1"))
        assert [m["role"] for m in info_at(infos, 0)["messages"]] == ["system", "user"]
        assert info_at(infos, 1)["messages"] == info["messages"]
    finally:
        vec.close()
        single.close()
