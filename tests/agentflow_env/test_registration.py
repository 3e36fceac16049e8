"""Every registered id: gymnasium's checker, determinism, and offline defaults."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import agentflow_env
from agentflow_env import ENV_IDS, AgentFlowEnv, AgentFlowVectorEnv

# Small task sets keep construction cheap; the defaults are exercised by test_default_construction.
SMALL = {"num_tasks": 20}


@pytest.fixture(scope="module", params=sorted(ENV_IDS))
def env_id(request: pytest.FixtureRequest) -> str:
    return request.param


def test_import_registers_every_id() -> None:
    assert set(ENV_IDS) == {
        "AgentFlow-Search-v0",
        "AgentFlow-Agentic-v0",
        "AgentFlow-Math-v0",
        "AgentFlow-Science-v0",
    }
    for env_id in ENV_IDS:
        assert env_id in gym.registry
        assert gym.registry[env_id].vector_entry_point == "agentflow_env.vector:AgentFlowVectorEnv"
    agentflow_env.register_envs()  # idempotent


def test_check_env_without_unexpected_warnings(env_id: str) -> None:
    env = gym.make(env_id, **SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    messages = [str(w.message) for w in caught]
    assert not messages, messages
    env.close()


def test_same_seed_same_task_and_observations(env_id: str) -> None:
    a, b = gym.make(env_id, **SMALL), gym.make(env_id, **SMALL)
    for seed in (0, 1, 2):
        obs_a, info_a = a.reset(seed=seed)
        obs_b, info_b = b.reset(seed=seed)
        assert obs_a == obs_b and info_a["task_id"] == info_b["task_id"]
        step_a = a.step("Tool Name: Finish\n<answer>x</answer>")
        step_b = b.step("Tool Name: Finish\n<answer>x</answer>")
        assert step_a[:4] == step_b[:4]
    ids = {a.reset(seed=s)[1]["task_id"] for s in range(10)}
    assert len(ids) >= 4, "different seeds should pick different tasks"
    a.close(), b.close()


def test_generated_task_sets_are_deterministic_across_instances(env_id: str) -> None:
    a, b = gym.make(env_id, **SMALL), gym.make(env_id, **SMALL)
    assert a.unwrapped.tasks == b.unwrapped.tasks
    c = gym.make(env_id, seed=1, **SMALL)
    assert c.unwrapped.tasks != a.unwrapped.tasks
    a.close(), b.close(), c.close()


def test_default_construction_is_offline_and_nonempty(env_id: str) -> None:
    env = gym.make(env_id)
    assert isinstance(env.unwrapped, AgentFlowEnv)
    assert len(env.unwrapped.tasks) >= 100
    obs, _ = env.reset(seed=0)
    assert "Query:" in obs
    env.close()


def test_make_vec_gives_the_batched_env(env_id: str) -> None:
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **SMALL)
    assert isinstance(envs.unwrapped, AgentFlowVectorEnv)
    obs, _ = envs.reset(seed=0)
    assert len(obs) == 2
    envs.close()
