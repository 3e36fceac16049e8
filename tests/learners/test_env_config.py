"""The trainer's env section is agentflow_env's EnvConfig extended; learners/ has a floor."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import gymnasium as gym
import pytest

from agentflow_env import config as env_config
from learners.config import ASSETS_DIR, ConfigError, apply_overrides
from learners.envs import EnvConfig, env_kwargs, make_vector_env
from learners.flow_grpo.__main__ import build_parser, parse_config
from learners.flow_grpo.config import make_config
from tests.conftest import REPO_ROOT

# the learner's env section before it extended the env model (the tiny preset's values)
OLD_DEFAULTS = {
    "env_id": "AgentFlow-Search-v0",
    "max_turns": 4,
    "prompt_style": "compact",
    "tasks": None,
    "num_tasks": 3100,
    "task_seed": 0,
    "task_kwargs": {"hops": [1, 3]},
    "eval_tasks": 100,
    "executor": "direct",
    "verifier": "planner",
    "generator": "planner",
    "engine": None,
    "tools": None,
    "tool_kwargs": {"Search_Tool": {"top_k": 1}},
}


def test_the_env_section_is_the_env_model_with_the_tiny_presets_defaults() -> None:
    assert issubclass(EnvConfig, env_config.EnvConfig)
    assert set(env_config.EnvConfig.model_fields) <= set(EnvConfig.model_fields)
    dumped = EnvConfig().model_dump(by_alias=True)
    assert {k: dumped[k] for k in OLD_DEFAULTS} == OLD_DEFAULTS
    base = env_config.EnvConfig().model_dump()
    assert {k: dumped[k] for k in base if k not in OLD_DEFAULTS and k != "seed"} == {
        k: v for k, v in base.items() if k not in OLD_DEFAULTS and k != "seed"
    }
    for name, info in EnvConfig.model_fields.items():
        assert info.description, f"EnvConfig.{name} has no docstring"


def test_every_env_setting_with_a_text_form_is_a_documented_flag() -> None:
    text = " ".join(build_parser().format_help().split())
    for flag in (
        "--env.max-observation-chars INT",
        "--env.tool-timeout-s FLOAT",
        "--env.executor {direct,llm}",
        "--env.task-seed INT",
        "--env.env-id STR",
        "--env.query-analysis",
        "--env.executor-engine",
    ):
        assert flag in text, flag
    doc = env_config.EnvConfig.model_fields["max_result_chars"].description
    assert " ".join(doc.split()) in text
    assert "--env.scorer" not in text  # a function has no command-line form
    assert "--env.seed" not in text  # task_seed in files and flags (beside the run's --seed)


def test_flags_and_files_reach_the_model_validated() -> None:
    cfg, _ = parse_config(
        [
            "--env.task-seed",
            "3",
            "--env.tools",
            "Search_Tool,Python_Coder_Tool",
            "--env.max-result-chars",
            "50",
            "--env.num-tasks",
            "none",
            "--env.query-analysis",
            "false",
        ]
    )
    e = cfg.env
    assert (e.seed, e.tools, e.max_result_chars, e.num_tasks, e.query_analysis) == (
        3,
        ["Search_Tool", "Python_Coder_Tool"],
        50,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--env.max-turns", "0"], "env.max_turns: Input should be greater than or equal to 1"),
        (["--env.env-id", "CartPole-v1"], "env.env_id: env_id='CartPole-v1' is not an AgentFlow"),
        (["--env.engine", "gpt4"], "env.engine: bad engine spec 'gpt4'"),
        (
            ["--env.tools", "Base_Generator_Tool"],
            "Base_Generator_Tool needs an engine: set --env.engine",
        ),
        (["--env.tool-kwargs", "{bad"], "env.tool_kwargs='{bad' is not valid JSON"),
        (["--env.verifier-engine", "hf:x", "--env.executor", "llm"], "env.executor='llm' needs"),
    ],
)
def test_bad_env_values_say_how_to_fix_them(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(flags)
    assert message in str(info.value)


def test_unknown_env_keys_fail_by_name(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"env": {"max_turn": 3}}))
    with pytest.raises(ConfigError, match=r"unknown config field 'env.max_turn'; known: \["):
        make_config("tiny", path)
    with pytest.raises(ConfigError, match="unknown config field 'env.render_mode'"):
        make_config("tiny", overrides={"env.render_mode": "ansi"})


def test_written_configs_read_back_including_the_old_env_format(tmp_path: Path) -> None:
    paper = make_config("paper")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(paper.to_dict()))
    again = make_config("tiny", path)
    assert again.to_dict() == {**paper.to_dict(), "preset": "tiny"}
    assert paper.to_dict()["env"]["task_seed"] == 0 and "seed" not in paper.to_dict()["env"]
    # the shipped warm start's report holds the env section as it was before this model
    report = json.loads((ASSETS_DIR / "tiny-warmstart" / "sft_report.json").read_text())
    env = apply_overrides(EnvConfig(), report["config"]["env"])
    assert env == EnvConfig(num_tasks=600)


def test_the_vector_env_is_built_from_the_section() -> None:
    spec = "python:tests.agentflow_env.test_config:echo_modules"
    cfg = EnvConfig(
        env_id="AgentFlow-Math-v0",
        num_tasks=8,
        eval_tasks=2,
        max_turns=2,
        max_result_chars=64,
        executor="llm",
        engine=spec,
        tools=["Python_Coder_Tool", "Base_Generator_Tool"],
        task_kwargs=None,
        tool_kwargs={},
    )
    envs = make_vector_env(cfg, 2)
    flow = envs.flow
    assert (len(envs.tasks), flow.max_turns, flow.max_result_chars) == (8, 2, 64)
    assert flow.tools["Base_Generator_Tool"].engine is flow.executor.engine  # one engine
    assert flow.prompt_style == "compact"  # the learner's default, not the env's
    envs.close()
    env = gym.make(cfg.env_id, **env_kwargs(cfg))  # the same settings as keyword arguments
    assert env.unwrapped.family == "math" and env.unwrapped.flow.max_result_chars == 64
    env.close()


def test_learners_shared_modules_never_import_flow_grpo() -> None:
    """learners/*.py is the floor: only learners/flow_grpo/ imports learners.flow_grpo."""
    for path in sorted((REPO_ROOT / "learners").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.startswith("learners.flow_grpo") for n in names), path.name
