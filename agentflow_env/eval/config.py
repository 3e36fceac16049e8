"""Configuration of an evaluation run: :class:`EvalConfig`, its validation, and env overrides.

Everything here is checked before anything expensive is built: a bad argument is an
:class:`EvaluateError` (the CLI prints it on one line and exits with code 2). A run stopped by
infrastructure (a failed preflight, more errored episodes than ``max_errors`` allows) raises
:class:`RunStopped` (exit code 3), carrying the partial report when episodes ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentflow_env.config import EnvConfig
from agentflow_env.llm.base import Engine
from agentflow_env.runfiles import OutputPathError, WriteMode, claim_output

__all__ = [
    "EnvOverrides",
    "EvalConfig",
    "EvaluateError",
    "OWN_OPTION",
    "RunStopped",
    "error_limit",
    "parse_max_errors",
    "write_mode",
    "SCRIPTED_PREFIX",
    "validate_config",
    "validate_env_overrides",
]

SCRIPTED_PREFIX = "scripted:"
SEARCH_TOOLS = ("Search_Tool", "Wikipedia_Search_Tool")


class EvaluateError(ValueError):
    """Bad arguments or inputs for an evaluation run (the CLI prints it and exits with code 2)."""


class RunStopped(RuntimeError):
    """The run stopped because infrastructure failed (the CLI prints why and exits with code 3).

    ``report`` is the partial report (also written to ``--out``) when episodes ran, else None.
    """

    def __init__(self, reason: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.report = reason, report


def parse_max_errors(text: str | float) -> float:
    """``--max-errors``: a count (``5``: stop at the 6th errored episode) or a fraction of the
    planned episodes (``0.1``); counts are returned as ints, fractions as floats."""
    raw = str(text).strip()
    try:
        value: float = int(raw)
    except ValueError:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"not a count or a fraction: {raw!r}") from None
    if isinstance(value, float) and not 0.0 <= value <= 1.0:
        raise ValueError(f"a fraction must be in [0, 1], got {raw}")
    if value < 0:
        raise ValueError(f"a count must be >= 0, got {raw}")
    return value


def error_limit(max_errors: float, planned: int) -> int:
    """Errored episodes a run of ``planned`` episodes tolerates (it stops at one more)."""
    if isinstance(max_errors, int):
        return max_errors
    return int(max_errors * planned + 1e-9)


@dataclass
class EvalConfig:
    """One evaluation run (the CLI's arguments; engines may also be passed as objects)."""

    env: str = "AgentFlow-Search-v0"
    """gymnasium id of an AgentFlow environment"""
    data: str | None = None
    """authors' JSON, JSONL, or ``hf:NAME``; None: the env's generated task set"""
    protocol: str = "rules"
    """the preset that fills every setting left None below (:mod:`agentflow_env.eval.protocol`):
    ``rules`` (rule scorers, this project's tools) or ``paper`` (the reference's evaluation)"""
    planner: str | Engine | None = None
    """``scripted:NAME`` or an engine spec / engine; None: the protocol's"""
    executor: Literal["direct", "llm"] | None = None
    verifier: Literal["planner", "llm"] | None = None
    generator: Literal["planner", "llm"] | None = None
    module_engine: str | Engine | None = None
    """engine for LLM modules, query analysis and Base_Generator_Tool; None: the protocol's
    (rules: none)"""
    query_analysis: bool | None = None
    judge: str | Engine | None = None
    """engine (spec) for the LLM-judge scorer; None: the protocol's (rules: rule scorers;
    paper: the module engine)"""
    judge_verdict: Literal["line", "json"] | None = None
    """the judge's verdict format (:class:`~agentflow_env.judge.LLMJudge` ``verdict``)"""
    judge_two_stage: bool | None = None
    """score tasks with choices by extraction then verification (the reference's GPQA/MedQA)"""
    judge_max_tokens: int | None = None
    """the judge's tokens per reply (None: 256 for verdict lines, 512 for JSON verdicts)"""
    judge_fallback: bool = False
    """on judge failure score with the rule scorer (counted as ``judge_fallback``) instead of an
    error"""
    tools: list[str] | None = None
    """tool names; None: chosen per protocol and data file (module docstring)"""
    corpus: str | None = None
    """JSONL corpus (``title``, ``text``) for the search tools"""
    episodes: int | None = None
    """None: every task"""
    shuffle: bool = False
    """a seeded random subset of tasks instead of the first ``episodes``"""
    max_turns: int | None = None
    """planner turns per episode; None: the protocol's (10 in both)"""
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
    temperature: float | None = None
    """planner sampling temperature; None: the protocol's (0.0 in both)"""
    max_tokens: int | None = None
    """planner tokens per step; None: the protocol's (rules 1024, paper 2048)"""
    planner_input: Literal["chat", "prompt"] = "chat"
    """``chat`` (the episode's chat messages, ``info["messages"]``) or ``prompt`` (the text
    observation as a raw completion prompt)"""
    planner_constrained: bool = False
    """hold an engine planner's output to the action grammar (fields in order, Tool Name one of
    the episode's tools); the engine enforces it or the turn fails as a planner error"""
    env_kwargs: dict[str, Any] | None = None
    """more env constructor arguments (:class:`EnvOverrides`), merged last (over the
    protocol's env settings: paper sets ``prompt_style`` and ``max_episode_s``)"""
    out: str | None = None
    trajectories: str | None = None
    resume: bool = False
    """continue from ``trajectories``: finished episodes are kept, the rest (and those whose
    outcome infrastructure lost) are played"""
    overwrite: bool = False
    """replace existing ``out`` / ``trajectories`` files"""
    max_errors: float = 0.1
    """stop when more episodes than this errored (infrastructure): a count (int) or a fraction
    of the planned episodes (float in [0, 1])"""
    request_timeout: float | None = None
    """seconds per attempt of an OpenAI-compatible engine's request (None: the engine's 60)"""
    max_retries: int | None = None
    """retries of a failed OpenAI-compatible request (None: the engine's 3)"""
    preflight: bool = True
    """send one short request to every remote engine before the first episode"""


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
        parsed = parse_spec(spec)
    except ValueError as exc:
        hint = " (or scripted:NAME)" if flag == "--planner" else ""
        raise EvaluateError(f"{flag}: {exc}{hint}") from exc
    target = parsed.target
    # a path (not a hub id or a registry name) that is not there: say so before loading anything
    if parsed.kind == "hf" and target.startswith(("/", "./", "../", "~")):
        if not Path(target).expanduser().is_dir():
            raise EvaluateError(f"{flag} {spec!r}: no model directory at {target!r}")


def write_mode(cfg: EvalConfig) -> WriteMode:
    return "resume" if cfg.resume else "overwrite" if cfg.overwrite else "new"


def _check_outputs(cfg: EvalConfig) -> None:
    """Outputs are this run's: new, or resumed/overwritten on request; writable."""
    if cfg.resume and cfg.overwrite:
        raise EvaluateError("--resume and --overwrite exclude each other: choose one")
    if cfg.resume and not cfg.trajectories:
        raise EvaluateError("--resume continues from a trajectory file: pass --trajectories FILE")
    if cfg.out and cfg.trajectories and Path(cfg.out).resolve() == Path(cfg.trajectories).resolve():
        raise EvaluateError("--out and --trajectories must be different files")
    try:
        for flag, path in (("--out", cfg.out), ("--trajectories", cfg.trajectories)):
            if path:
                claim_output(path, flag, write_mode(cfg))
    except OutputPathError as exc:
        raise EvaluateError(str(exc)) from exc


def validate_config(cfg: EvalConfig) -> None:
    _check_outputs(cfg)
    try:
        parse_max_errors(cfg.max_errors)
    except ValueError as exc:
        raise EvaluateError(f"--max-errors: {exc}") from exc
    if cfg.request_timeout is not None and not cfg.request_timeout > 0:
        raise EvaluateError(f"--request-timeout must be > 0, got {cfg.request_timeout}")
    if cfg.max_retries is not None and cfg.max_retries < 0:
        raise EvaluateError(f"--max-retries must be >= 0, got {cfg.max_retries}")
    if cfg.max_turns < 1 or cfg.concurrency < 1:
        raise EvaluateError(
            f"--max-turns and --concurrency must be >= 1, got {cfg.max_turns}, {cfg.concurrency}"
        )
    if cfg.episodes is not None and cfg.episodes < 1:
        raise EvaluateError(f"--episodes must be >= 1, got {cfg.episodes}")
    if cfg.judge_max_tokens is not None and cfg.judge_max_tokens < 1:
        raise EvaluateError(f"--judge-max-tokens must be >= 1, got {cfg.judge_max_tokens}")
    if cfg.samples < 1 or cfg.seeds < 1:
        raise EvaluateError(
            f"--samples and --seeds must be >= 1, got {cfg.samples} and {cfg.seeds}"
        )
    if cfg.temperature < 0 or cfg.max_tokens < 1:
        raise EvaluateError("--temperature must be >= 0 and --max-tokens >= 1")
    if cfg.planner_constrained and isinstance(cfg.planner, str):
        if cfg.planner.startswith(SCRIPTED_PREFIX):
            raise EvaluateError(
                "--planner-constrained holds an engine planner to the action grammar; "
                f"{cfg.planner!r} writes its actions itself: use an engine spec"
            )
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
