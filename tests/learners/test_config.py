"""Config: presets, validation with fixing hints, files, CLI overrides, --help from field docs."""

from __future__ import annotations

import json

import pytest

from learners.flow_grpo.__main__ import build_parser, parse_config
from learners.flow_grpo.config import (
    AlgoConfig,
    ConfigError,
    DataConfig,
    FlowGRPOConfig,
    RolloutConfig,
    field_docs,
    make_config,
)


def test_presets_hold_the_documented_values() -> None:
    tiny = make_config("tiny")
    assert (
        tiny.model.name_or_path == "asset:tiny-warmstart" and tiny.rollout.backend == "transformers"
    )
    paper = make_config("paper")
    assert (paper.model.name_or_path, paper.rollout.group_size, paper.rollout.queries_per_step) == (
        "Qwen/Qwen2.5-7B-Instruct",
        8,
        32,
    )
    assert (paper.algo.lr, paper.algo.kl_coef, paper.algo.clip_low, paper.algo.clip_high) == (
        1e-6,
        0.001,
        0.2,
        0.3,
    )
    assert (paper.rollout.temperature, paper.env.max_turns, paper.rollout.max_new_tokens) == (
        0.7,
        3,
        2048,
    )
    assert paper.algo.entropy_coef == 0.0 and paper.rollout.max_prompt_tokens == 18432


def test_every_field_is_documented() -> None:
    for cls in (RolloutConfig, AlgoConfig, DataConfig, FlowGRPOConfig):
        docs = field_docs(cls)
        for name in cls.__dataclass_fields__:
            if name not in ("model", "env", "rollout", "algo", "data", "train"):
                assert docs.get(name), f"{cls.__name__}.{name} has no docstring"


def test_help_text_comes_from_field_docs() -> None:
    text = build_parser().format_help()
    assert "--rollout.group-size" in text
    assert "trajectories sampled per query" in text
    assert "--algo.loss-agg {token-mean,seq-mean}" in text


@pytest.mark.parametrize(
    ("flags", "hint"),
    [
        (["--rollout.group-size", "1"], "--rollout.group-size 2"),
        (["--rollout.temperature", "0"], "must sample"),
        (["--algo.estimator", "gae"], "register_estimator"),
        (["--env.executor", "llm"], "--env.engine"),
        (["--env.num-tasks", "50", "--env.eval-tasks", "50"], "raise num_tasks"),
        (["--train.num-threads", "-2"], "or -1"),
        # the loss scores actions without the grammar's mask: constrained rollouts are refused
        (["--rollout.constrained", "true"], "log-probs over the whole vocabulary"),
    ],
)
def test_validation_says_how_to_fix(flags: list[str], hint: str) -> None:
    with pytest.raises(ConfigError, match=hint.replace(".", r"\.").replace("-", r"\-")):
        parse_config(flags)


def test_overrides_file_and_precedence(tmp_path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(
        json.dumps({"algo": {"lr": 0.01, "loss_agg": "seq-mean"}, "rollout": {"group_size": 4}})
    )
    cfg, _ = parse_config(
        [
            "--config",
            str(path),
            "--rollout.group-size",
            "6",
            "--total-steps",
            "3",
            "--algo.pack-turns",
            "false",
            "--env.task-kwargs",
            '{"hops": [1, 2]}',
        ]
    )
    assert (cfg.algo.lr, cfg.algo.loss_agg, cfg.rollout.group_size) == (0.01, "seq-mean", 6)
    assert cfg.train.total_steps == 3 and cfg.algo.pack_turns is False
    assert cfg.env.task_kwargs == {"hops": [1, 2]}
    toml = tmp_path / "cfg.toml"
    toml.write_text("[train]\ntotal_steps = 7\n")
    assert make_config("tiny", toml).train.total_steps == 7


def test_bad_values_are_typed_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown config field 'algo.lrr'"):
        make_config("tiny", overrides={"algo.lrr": 1})
    with pytest.raises(ConfigError, match="not a valid int"):
        make_config("tiny", overrides={"rollout.group_size": "eight"})
    with pytest.raises(ConfigError, match="not a valid bool"):
        make_config("tiny", overrides={"algo.pack_turns": "maybe"})
    with pytest.raises(ConfigError, match="does not exist"):
        make_config("tiny", tmp_path / "missing.toml")
    with pytest.raises(SystemExit):
        parse_config(["--algo.loss-agg", "sum"])


def test_num_threads_auto_splits_the_cpus_among_local_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from learners.flow_grpo.trainer import resolve_num_threads

    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_num_threads(-1) == cpus  # a lone run takes every core it may use
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * cpus))
    assert resolve_num_threads(-1) == 1  # more ranks than cores: still one thread each
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert (
        resolve_num_threads(3) == 3 and resolve_num_threads(0) == 0
    )  # explicit values pass through
    assert parse_config([])[0].train.num_threads == -1  # the tiny preset's default


def test_the_paper_preset_runs_the_reference_protocol() -> None:
    env = make_config("paper").env
    assert (env.prompt_style, env.tools, env.query_analysis) == ("paper", ["paper"], True)
    assert env.max_episode_s == 500.0  # the reference's training budget (AGENT_MAX_TIMEOUT)
    assert env.constrained_modules is False  # the reference's modules write free text
    assert make_config("tiny").env.constrained_modules is True
    # The paper tools that need a model are named when no engine is configured.
    with pytest.raises(ConfigError, match="Generalist_Solution_Generator_Tool needs an engine"):
        parse_config(["--env.tools", "paper"])
    cfg = make_config(
        "tiny",
        overrides={
            "env.tools": "paper",
            "env.tool_kwargs": {
                t: {"engine": "python:m:f"}
                for t in (
                    "Generalist_Solution_Generator_Tool",
                    "Python_Code_Generator_Tool",
                    "Wikipedia_RAG_Search_Tool",
                )
            },
        },
    )
    assert cfg.env.tools == ["paper"]
