"""Configuration of an evaluation run: :class:`EvalConfig`, its validation, and env overrides.

Everything here is checked before anything expensive is built: a bad argument is an
:class:`EvaluateError` (the CLI prints it on one line and exits with code 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentflow_env.config import EnvConfig
from agentflow_env.llm.base import Engine

__all__ = [
    "EnvOverrides",
    "EvalConfig",
    "EvaluateError",
    "OWN_OPTION",
    "SCRIPTED_PREFIX",
    "validate_config",
    "validate_env_overrides",
]

SCRIPTED_PREFIX = "scripted:"
SEARCH_TOOLS = ("Search_Tool", "Wikipedia_Search_Tool")


class EvaluateError(ValueError):
    """Bad arguments or inputs for an evaluation run (the CLI prints it and exits with code 2)."""


@dataclass
class EvalConfig:
    """One evaluation run (the CLI's arguments; engines may also be passed as objects)."""

    env: str = "AgentFlow-Search-v0"
    """gymnasium id of an AgentFlow environment"""
    data: str | None = None
    """authors' JSON, JSONL, or ``hf:NAME``; None: the env's generated task set"""
    planner: str | Engine = "scripted:search-then-answer"
    """``scripted:NAME`` or an engine spec / engine"""
    executor: Literal["direct", "llm"] = "direct"
    verifier: Literal["planner", "llm"] = "planner"
    generator: Literal["planner", "llm"] = "planner"
    module_engine: str | Engine | None = None
    """engine for LLM modules, query analysis and Base_Generator_Tool"""
    query_analysis: bool = False
    judge: str | Engine | None = None
    """engine (spec) for the LLM-judge scorer; None: rule scorers"""
    judge_fallback: bool = False
    """on judge failure score with the rule scorer (counted as ``judge_fallback``) instead of an
    error"""
    tools: list[str] | None = None
    """tool names; None: chosen per data file (module docstring)"""
    corpus: str | None = None
    """JSONL corpus (``title``, ``text``) for the search tools"""
    episodes: int | None = None
    """None: every task"""
    shuffle: bool = False
    """a seeded random subset of tasks instead of the first ``episodes``"""
    max_turns: int = 10
    concurrency: int = 4
    """sub-envs stepping together (the planner sees batches of this size)"""
    seed: int = 0
    samples: int = 1
    """episodes per task (``--samples K``): the report adds per-task success, mean@K and pass@k
    for k = 1..K (:mod:`agentflow_env.eval.passk`)"""
    seeds: int = 1
    """runs with seeds ``seed, seed+1, ...`` (``--seeds S``) on the same tasks; the report gives
    each metric's mean over the runs with a 95% Student-t interval"""
    task_seed: int | None = None
    """seed of the generated task set and of the ``shuffle`` subset; None: ``seed`` (multi-seed
    runs set it to their first seed so that every run plays the same tasks)"""
    temperature: float = 0.0
    """planner sampling temperature"""
    max_tokens: int = 1024
    """planner tokens per step"""
    planner_input: Literal["chat", "prompt"] = "chat"
    """``chat`` (observation as a user message) or ``prompt`` (raw completion)"""
    env_kwargs: dict[str, Any] | None = None
    """more env constructor arguments (:class:`EnvOverrides`), merged last"""
    out: str | None = None
    trajectories: str | None = None


# Env settings the evaluator sets itself, and the option that sets each: a setting that is also
# an EvalConfig field has the same-named option; the others are spelled out.
OWN_OPTION: dict[str, str] = {
    "family": "--env",  # the env id's family (not an EnvConfig field: the id picks the env)
    "tasks": "--data",
    "documents": "--corpus",
    "scorer": "--judge",
    **dict.fromkeys(
        ("engine", "executor_engine", "verifier_engine", "generator_engine"), "--module-engine"
    ),
    **{
        name: "--" + name.replace("_", "-")
        for name in EnvConfig.model_fields
        if name in {f.name for f in fields(EvalConfig)}
    },
}

EnvOverrides: type[BaseModel] = create_model(
    "EnvOverrides",
    __config__=ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True),
    __doc__="Env settings ``env_kwargs`` may set: the :class:`~agentflow_env.config.EnvConfig` "
    "fields without an option of their own (:data:`OWN_OPTION`); strict (JSON types).",
    **{
        name: (info.annotation, info)
        for name, info in EnvConfig.model_fields.items()
        if name not in OWN_OPTION
    },
)


def _check_spec(flag: str, spec: object) -> None:
    """Reject a malformed engine spec before anything expensive is built."""
    if not isinstance(spec, str):
        return
    if flag == "--planner" and spec.startswith(SCRIPTED_PREFIX):
        from agentflow_env.planners.scripted import SCRIPTED_PLANNERS

        if spec[len(SCRIPTED_PREFIX) :] not in SCRIPTED_PLANNERS:
            raise EvaluateError(
                f"--planner {spec!r}: unknown scripted planner; valid: "
                + ", ".join(SCRIPTED_PREFIX + n for n in sorted(SCRIPTED_PLANNERS))
            )
        return
    from agentflow_env.llm import parse_spec

    try:
        parse_spec(spec)
    except ValueError as exc:
        hint = " (or scripted:NAME)" if flag == "--planner" else ""
        raise EvaluateError(f"{flag}: {exc}{hint}") from exc


def validate_config(cfg: EvalConfig) -> None:
    if cfg.max_turns < 1 or cfg.concurrency < 1:
        raise EvaluateError(
            f"--max-turns and --concurrency must be >= 1, got {cfg.max_turns}, {cfg.concurrency}"
        )
    if cfg.episodes is not None and cfg.episodes < 1:
        raise EvaluateError(f"--episodes must be >= 1, got {cfg.episodes}")
    if cfg.samples < 1 or cfg.seeds < 1:
        raise EvaluateError(
            f"--samples and --seeds must be >= 1, got {cfg.samples} and {cfg.seeds}"
        )
    if cfg.temperature < 0 or cfg.max_tokens < 1:
        raise EvaluateError("--temperature must be >= 0 and --max-tokens >= 1")
    for flag, mode, allowed in (
        ("--executor", cfg.executor, ("direct", "llm")),
        ("--verifier", cfg.verifier, ("planner", "llm")),
        ("--generator", cfg.generator, ("planner", "llm")),
    ):
        if mode not in allowed:
            raise EvaluateError(f"{flag} must be one of {', '.join(allowed)}, got {mode!r}")
        if mode == "llm" and cfg.module_engine is None:
            raise EvaluateError(f"{flag} llm needs --module-engine SPEC")
    if cfg.module_engine is None and (
        cfg.query_analysis or "Base_Generator_Tool" in (cfg.tools or ())
    ):
        raise EvaluateError("--query-analysis and Base_Generator_Tool need --module-engine SPEC")
    if cfg.corpus is not None and not Path(cfg.corpus).is_file():
        raise EvaluateError(f"--corpus {cfg.corpus!r}: no such file")
    for flag, spec in (
        ("--planner", cfg.planner),
        ("--module-engine", cfg.module_engine),
        ("--judge", cfg.judge),
    ):
        _check_spec(flag, spec)


def validate_env_overrides(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """``env_kwargs`` validated by :class:`EnvOverrides`; every problem named with its key."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise EvaluateError(f"--env-kwargs must be a JSON object, got {type(raw).__name__}")
    for key in raw:
        if key in OWN_OPTION:
            raise EvaluateError(
                f"--env-kwargs {key!r} has an option of its own: use {OWN_OPTION[key]}"
            )
        if key not in EnvOverrides.model_fields:
            valid = ", ".join(EnvOverrides.model_fields)
            raise EvaluateError(f"--env-kwargs: unknown key {key!r}; valid: {valid}")
    try:
        parsed = EnvOverrides.model_validate(dict(raw))
    except ValidationError as exc:
        problems = (
            f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})" for e in exc.errors()
        )
        raise EvaluateError(f"--env-kwargs: {'; '.join(problems)}") from exc
    return {name: getattr(parsed, name) for name in parsed.model_fields_set}
