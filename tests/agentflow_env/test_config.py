"""EnvConfig: the one model behind build_flow, the envs, gym.make and the evaluator's overrides."""

from __future__ import annotations

import inspect
from typing import Any

import gymnasium as gym
import pytest

import agentflow_env  # noqa: F401 - registers the ids
from agentflow_env import AgentFlowEnv, AgentFlowVectorEnv
from agentflow_env.config import EnvConfig, EnvConfigError
from agentflow_env.env import build_flow
from agentflow_env.eval.config import OWN_OPTION, EnvOverrides, EvaluateError
from agentflow_env.eval.config import validate_env_overrides as overrides
from agentflow_env.llm.base import GenerationRequest
from agentflow_env.spaces import MIN_ACTION_SPACE_LENGTH
from tests.agentflow_env.helpers import LookupTool, exact_scorer, lookup_env_kwargs, numbered_tasks

# build_flow's keyword arguments and defaults before the model existed (tool_kwargs=None meant {})
BUILD_FLOW_DEFAULTS: dict[str, Any] = {
    "tasks": None,
    "documents": None,
    "tools": None,
    "tool_kwargs": {},
    "max_turns": 10,
    "executor": "direct",
    "verifier": "planner",
    "generator": "planner",
    "engine": None,
    "executor_engine": None,
    "verifier_engine": None,
    "generator_engine": None,
    "constrained_modules": True,
    "query_analysis": False,
    "scorer": None,
    "prompt_style": "full",
    "seed": 0,
    "num_tasks": None,
    "task_kwargs": None,
    "max_observation_chars": 200_000,
    "max_action_chars": 4_000,
    "max_result_chars": 4_000,
    "tool_timeout_s": 60.0,
    "max_episode_s": None,
}


def echo_modules(request: GenerationRequest) -> str:
    """A module engine reachable by spec: stop at once, answer with the last result."""
    return "Conclusion: STOP <answer>echo</answer>"


def test_defaults_are_build_flows_and_every_field_is_documented() -> None:
    assert EnvConfig().model_dump() == BUILD_FLOW_DEFAULTS
    for name, info in EnvConfig.model_fields.items():
        assert info.description, f"EnvConfig.{name} has no docstring"


def test_build_flow_and_the_envs_show_the_fields_as_keyword_arguments() -> None:
    for func in (build_flow, AgentFlowEnv.__init__, AgentFlowVectorEnv.__init__):
        params = inspect.signature(func).parameters
        for name, default in BUILD_FLOW_DEFAULTS.items():
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
            assert params[name].default == default
        assert "config" in params and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: gym.make("AgentFlow-Search-v0", **kw),
        lambda **kw: AgentFlowVectorEnv(2, **kw),
        lambda **kw: gym.make_vec(
            "AgentFlow-Search-v0", num_envs=2, vectorization_mode="vector_entry_point", **kw
        ),
        lambda **kw: build_flow(**kw),
    ],
)
def test_unknown_keys_fail_by_name_everywhere(make: Any) -> None:
    with pytest.raises(
        EnvConfigError, match=r"unknown setting 'max_turn'; did you mean 'max_turns'"
    ):
        make(num_tasks=4, max_turn=3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"executor": "telepathy"}, "executor must be one of ['direct', 'llm'] or an Executor"),
        ({"verifier": "oracle"}, "verifier must be one of ['planner', 'llm'] or a Verifier"),
        (
            {"tools": "Lookup_Tool"},
            "tools: must be a list of tool names or Tool objects (tools=['Lookup_Tool']), or a "
            "toolset: 'paper'",
        ),
        ({"tools": [3]}, "tools: 3 is neither a tool name nor a Tool"),
        ({"engine": "gpt4"}, "engine: bad engine spec 'gpt4'"),
        ({"executor_engine": 7}, "executor_engine: must be an engine, a spec string"),
        ({"documents": "corpus.jsonl"}, "tool_kwargs={'Search_Tool': {'corpus_path': PATH}}"),
        ({"prompt_style": "tiny"}, "prompt_style: Input should be 'full', 'compact' or 'paper'"),
        ({"max_turns": 0}, "max_turns: Input should be greater than or equal to 1 (got 0)"),
        ({"tool_timeout_s": 0}, "tool_timeout_s: Input should be greater than 0"),
        ({"scorer": "exact"}, "scorer: must be a function (prediction, task) -> float"),
        ({"tool_kwargs": {"Lookup_Tool": 1}}, "tool_kwargs.Lookup_Tool: Input should be a valid"),
        ({"tasks": 5}, "tasks: must be a list of Task/dicts or a path"),
    ],
)
def test_bad_values_say_how_to_fix_them(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvConfigError) as info:
        AgentFlowEnv(**{**lookup_env_kwargs(), **settings})
    assert message in str(info.value)


def test_objects_pass_through_as_the_very_objects() -> None:
    tasks, tool, docs = numbered_tasks(3), LookupTool(), [{"title": "t", "text": "x"}]
    cfg = EnvConfig(tasks=tasks, tools=[tool], scorer=exact_scorer, documents=docs)
    assert cfg.tasks is tasks and cfg.tools[0] is tool and cfg.documents is docs
    env = AgentFlowEnv(config=cfg)
    assert env.flow.tools["Lookup_Tool"] is tool and env.flow.scorer is exact_scorer
    env.close()


def test_config_and_keyword_arguments_combine_keywords_winning() -> None:
    cfg = EnvConfig(num_tasks=12, max_turns=2, prompt_style="compact", max_result_chars=50)
    env = gym.make("AgentFlow-Search-v0", config=cfg, max_turns=3)
    flow = env.unwrapped.flow
    assert (flow.max_turns, flow.prompt_style, flow.max_result_chars) == (3, "compact", 50)
    assert len(env.unwrapped.tasks) == 12 and cfg.max_turns == 2  # the config is not changed
    env.close()
    envs = gym.make_vec(
        "AgentFlow-Math-v0", num_envs=2, vectorization_mode="vector_entry_point", config=cfg
    )
    assert envs.flow.max_turns == 2 and len(envs.tasks) == 12
    envs.close()
    with pytest.raises(EnvConfigError, match="config must be an agentflow_env.config.EnvConfig"):
        AgentFlowEnv(config={"max_turns": 2})  # type: ignore[arg-type]


def test_the_action_space_admits_long_actions_whatever_the_observation_limit() -> None:
    env = AgentFlowEnv(**lookup_env_kwargs(max_observation_chars=500))
    envs = AgentFlowVectorEnv(2, **lookup_env_kwargs(max_observation_chars=500))
    assert env.observation_space.max_length == envs.single_observation_space.max_length == 500
    assert env.action_space.max_length == MIN_ACTION_SPACE_LENGTH
    assert envs.single_action_space.max_length == MIN_ACTION_SPACE_LENGTH
    long = AgentFlowEnv(**lookup_env_kwargs(max_observation_chars=MIN_ACTION_SPACE_LENGTH + 1))
    assert long.action_space.max_length == MIN_ACTION_SPACE_LENGTH + 1  # never below the obs
    for e in (env, envs, long):
        e.close()


def test_assignments_are_validated() -> None:
    cfg = EnvConfig()
    cfg.max_turns = 3
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        cfg.max_turns = 0


def test_one_engine_per_spec_shared_by_the_modules_and_the_generator_tool() -> None:
    spec = "python:tests.agentflow_env.test_config:echo_modules"
    kwargs = lookup_env_kwargs(executor="llm", verifier="llm", generator="llm", engine=spec)
    kwargs["tools"] = [*kwargs["tools"], "Base_Generator_Tool"]
    env = AgentFlowEnv(**kwargs)
    flow = env.flow
    engine = flow.tools["Base_Generator_Tool"].engine
    assert flow.executor.engine is engine and flow.verifier.engine is engine
    assert flow.generator.engine is engine
    env.close()


def test_env_overrides_are_the_model_fields_without_an_option_of_their_own() -> None:
    assert set(OWN_OPTION) - {"family"} <= set(EnvConfig.model_fields)
    assert list(EnvOverrides.model_fields) == [
        name for name in EnvConfig.model_fields if name not in OWN_OPTION
    ]
    for name, info in EnvOverrides.model_fields.items():
        assert info.description == EnvConfig.model_fields[name].description
    # the model's constraints hold in --env-kwargs, strictly (JSON types)
    with pytest.raises(EvaluateError, match="max_result_chars: Input should be greater than"):
        overrides({"max_result_chars": 0})
    with pytest.raises(EvaluateError, match="tool_timeout_s: Input should be a valid number"):
        overrides({"tool_timeout_s": "5"})
    assert overrides({"max_result_chars": 50, "task_kwargs": None}) == {
        "max_result_chars": 50,
        "task_kwargs": None,
    }
