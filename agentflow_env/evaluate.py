"""Benchmark a planner as a policy: ``python -m agentflow_env.evaluate``.

Runs ``--episodes`` episodes (the first N tasks in file order, or a seeded random subset with
``--shuffle``) on an :class:`~agentflow_env.vector.AgentFlowVectorEnv` of ``--concurrency``
sub-envs; each step calls the planner once on the batch of live observations (one ``generate``
call for an engine planner). Prints a table; writes ``--out`` JSON and ``--trajectories`` JSONL
(:mod:`agentflow_env.trajectory` records, streamed as episodes finish)::

    python -m agentflow_env.evaluate --data ../shared/benchmarks/agentflow/aime24.json \\
        --planner scripted:oracle --episodes 10
    python -m agentflow_env.evaluate --data bamboogle.json --corpus wiki.jsonl --judge SPEC \\
        --planner openai:Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1 \\
        --executor llm --verifier llm --generator llm --module-engine openai:MODEL@URL

Planners: ``scripted:NAME`` (``oracle``, ``random-tool``, ``search-then-answer``) or an engine
spec (``openai:MODEL@URL``, ``hf:PATH``, ``vllm:NAME``, ``python:module:function``).
``--temperature``/``--max-tokens`` are the planner's sampling settings; request seeds derive from
``--seed``, the episode index and the turn, so results do not depend on ``--concurrency``.

Tools for ``--data`` (unless ``--tools`` is given) follow the kind of the file's tasks: multiple
choice -> science, math / Game of 24 -> math, GAIA -> agentic, other free-form answers -> search,
each with its env family's tools (:data:`agentflow_env.env.FAMILY_TOOLS`). Search_Tool needs
``--corpus PATH.jsonl``; without one it is left out and the table says so. ``--module-engine``
adds ``Base_Generator_Tool``. Without ``--data`` the env's generated tasks and corpus are used.

``--env-kwargs JSON`` sets env arguments without an option of their own (:class:`EnvOverrides`),
e.g. the settings a planner was trained with: ``'{"prompt_style": "compact", "tool_kwargs":
{"Search_Tool": {"top_k": 1}}}'``. They are merged last (``tool_kwargs`` per tool); keys with an
option of their own and unknown keys are rejected by name.

Accuracy: mean score over scored episodes, 95% Wilson interval; a failed scorer (e.g. a judge
error) is a ``score`` error, never a 0 (:mod:`agentflow_env.eval_report`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentflow_env.batch_planner import (
    BatchPlanner,
    CountingEngine,
    ScriptedBatchPlanner,
    make_batch_planner,
)
from agentflow_env.env import FAMILY_TOOLS
from agentflow_env.eval_report import episode_rows, print_report, summarize, wilson_interval
from agentflow_env.llm.base import Engine, GenerationRequest
from agentflow_env.registration import ENV_IDS
from agentflow_env.tasks.base import Task
from agentflow_env.trajectory import EpisodeRecord, TrajectoryBuilder, write_jsonl

__all__ = [
    "EnvOverrides",
    "EvalConfig",
    "EvaluateError",
    "choose_tools",
    "infer_kind",
    "main",
    "print_report",
    "run",
    "wilson_interval",
]

logger = logging.getLogger(__name__)

SCRIPTED_PREFIX = "scripted:"
_SEARCH_TOOLS = ("Search_Tool", "Wikipedia_Search_Tool")


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


# env constructor arguments the evaluator sets from an option of its own
_OWN_OPTION = {
    "family": "--env",
    "tasks": "--data",
    "documents": "--corpus",
    "scorer": "--judge",
    **{
        k: "--" + k.replace("_", "-")
        for k in (
            "tools",
            "max_turns",
            "executor",
            "verifier",
            "generator",
            "query_analysis",
            "seed",
        )
    },
    **dict.fromkeys(
        ("engine", "executor_engine", "verifier_engine", "generator_engine"), "--module-engine"
    ),
}


class EnvOverrides(BaseModel):
    """Env constructor arguments ``env_kwargs`` may set (see
    :func:`agentflow_env.env.build_flow`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt_style: Literal["full", "compact"] | None = None
    tool_kwargs: dict[str, dict[str, Any]] | None = None
    """per-tool constructor arguments, e.g. ``{"Search_Tool": {"top_k": 1}}``"""
    num_tasks: int | None = Field(None, ge=1)
    """size of the generated task set (without ``--data``)"""
    task_kwargs: dict[str, Any] | None = None
    """task generator arguments (without ``--data``), e.g. ``{"hops": [1, 3]}``"""
    max_observation_chars: int | None = Field(None, ge=1)
    max_action_chars: int | None = Field(None, ge=1)
    max_result_chars: int | None = Field(None, ge=1)
    tool_timeout_s: float | None = Field(None, gt=0)


# ---------------------------------------------------------------------------- engines, planner
def _engine(spec: str | Engine, flag: str) -> Engine:
    if not isinstance(spec, str):
        return spec
    from agentflow_env.llm import make_engine

    try:
        return make_engine(spec)
    except Exception as exc:  # any construction failure is a bad argument, shown plainly
        raise EvaluateError(f"{flag} {spec!r}: {type(exc).__name__}: {exc}") from exc


def _make_planner(cfg: EvalConfig) -> BatchPlanner:
    try:
        return make_batch_planner(
            cfg.planner,
            seed=cfg.seed,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            input_mode=cfg.planner_input,
        )
    except ValueError as exc:  # PlannerSpecError, or a bad input mode
        raise EvaluateError(f"--planner: {exc}") from exc


# --------------------------------------------------------------------------------- tasks, tools
def _env_family(env_id: str) -> str:
    import gymnasium as gym

    try:
        spec = gym.spec(env_id)
    except gym.error.Error as exc:
        raise EvaluateError(
            f"unknown env id {env_id!r} ({exc}); AgentFlow ids: {', '.join(ENV_IDS)}"
        ) from exc
    family = spec.kwargs.get("family")
    if (
        spec.vector_entry_point != "agentflow_env.vector:AgentFlowVectorEnv"
        or family not in FAMILY_TOOLS
    ):
        raise EvaluateError(
            f"{env_id!r} is not an AgentFlow environment; use one of {', '.join(ENV_IDS)}"
        )
    return str(family)


def _load_data(source: str) -> list[Task]:
    if not source.startswith("hf:") and not Path(source).is_file():
        raise EvaluateError(f"--data {source!r}: no such file (give a JSON/JSONL path or hf:NAME)")
    from agentflow_env.tasks.loaders import load_tasks

    try:
        tasks = list(load_tasks(source))
    except Exception as exc:  # loader errors name the problem; keep their message
        raise EvaluateError(f"--data {source!r}: {type(exc).__name__}: {exc}") from exc
    if not tasks:
        raise EvaluateError(f"--data {source!r} has no tasks")
    return tasks


def infer_kind(tasks: Sequence[Task]) -> str:
    """The benchmark group of a task list: ``search``, ``agentic``, ``math`` or ``science``."""
    if any("gaia" in t.source.lower() for t in tasks):
        return "agentic"
    scorer = Counter(t.scorer for t in tasks).most_common(1)[0][0]
    if scorer in ("math", "game24"):
        return "math"
    if scorer == "mc" or any(t.choices for t in tasks):
        return "science"
    return "search"


def choose_tools(
    kind: str, requested: Sequence[str] | None, corpus: str | None, module_engine: bool
) -> tuple[list[str], list[str]]:
    """Tool names for external data, and notes for the table (see the module docstring)."""
    notes: list[str] = []
    if requested is not None:
        names = list(requested)
        missing = sorted(set(names) & set(_SEARCH_TOOLS)) if corpus is None else []
        if missing:
            raise EvaluateError(
                f"{missing[0]} needs a corpus for external data: pass --corpus PATH.jsonl "
                f"(JSONL lines with 'title' and 'text'), or leave it out of --tools"
            )
        if "Base_Generator_Tool" in names and not module_engine:
            raise EvaluateError("Base_Generator_Tool needs an engine: pass --module-engine SPEC")
        return names, notes
    names = list(FAMILY_TOOLS[kind])
    if "Search_Tool" in names and corpus is None:
        names.remove("Search_Tool")
        notes.append("Search_Tool left out: no corpus for this data (pass --corpus PATH.jsonl)")
    if module_engine:
        names.append("Base_Generator_Tool")
    if not names:
        notes.append("no tools: the planner answers closed-book")
    return names, notes


def _select(tasks: Sequence[Task], cfg: EvalConfig) -> list[Task]:
    count = len(tasks) if cfg.episodes is None else min(cfg.episodes, len(tasks))
    if cfg.shuffle:
        order = np.random.default_rng(cfg.seed).permutation(len(tasks))[:count]
        return [tasks[int(i)] for i in order]
    return list(tasks[:count])


def _check_spec(flag: str, spec: object) -> None:
    """Reject a malformed engine spec before anything expensive is built."""
    if not isinstance(spec, str):
        return
    if flag == "--planner" and spec.startswith(SCRIPTED_PREFIX):
        from agentflow_env.planners import SCRIPTED_PLANNERS

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


def _validate(cfg: EvalConfig) -> None:
    if cfg.max_turns < 1 or cfg.concurrency < 1:
        raise EvaluateError(
            f"--max-turns and --concurrency must be >= 1, got {cfg.max_turns}, {cfg.concurrency}"
        )
    if cfg.episodes is not None and cfg.episodes < 1:
        raise EvaluateError(f"--episodes must be >= 1, got {cfg.episodes}")
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


@dataclass
class _Setup:
    """Everything built from the config before the env."""

    kind: str
    tasks: list[Task] | None
    notes: list[str]
    module_engine: CountingEngine | None
    judge: Any
    env_kwargs: dict[str, Any]


def _env_overrides(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """``env_kwargs`` validated by :class:`EnvOverrides`; every problem named with its key."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise EvaluateError(f"--env-kwargs must be a JSON object, got {type(raw).__name__}")
    for key in raw:
        if key in _OWN_OPTION:
            raise EvaluateError(
                f"--env-kwargs {key!r} has an option of its own: use {_OWN_OPTION[key]}"
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
    return parsed.model_dump(exclude_unset=True, exclude_none=True)


def _apply_overrides(
    env_kwargs: dict[str, Any], overrides: dict[str, Any], tools: Sequence[str]
) -> None:
    """Merge validated ``env_kwargs`` last: ``tool_kwargs`` per tool, other keys replace."""
    if "tasks" in env_kwargs and {"num_tasks", "task_kwargs"} & overrides.keys():
        raise EvaluateError(
            "--env-kwargs num_tasks / task_kwargs shape the generated task set: "
            "they do not apply with --data"
        )
    per_tool = overrides.get("tool_kwargs", {})
    stray = [name for name in per_tool if name not in tools]
    if stray:
        no_corpus = "tasks" in env_kwargs and "Search_Tool" not in env_kwargs["tool_kwargs"]
        hint = (
            " (Search_Tool needs --corpus with --data)"
            if "Search_Tool" in stray and no_corpus
            else ""
        )
        raise EvaluateError(
            f"--env-kwargs tool_kwargs names {stray[0]!r}, not a tool of this run "
            f"({', '.join(tools) or 'no tools'}){hint}"
        )
    for name, kwargs in per_tool.items():
        env_kwargs["tool_kwargs"][name] = {**env_kwargs["tool_kwargs"].get(name, {}), **kwargs}
    env_kwargs.update({k: v for k, v in overrides.items() if k != "tool_kwargs"})


def _setup(cfg: EvalConfig) -> _Setup:
    overrides = _env_overrides(cfg.env_kwargs)
    family = _env_family(cfg.env)
    tasks = _load_data(cfg.data) if cfg.data is not None else None
    has_module = cfg.module_engine is not None
    tools: list[str] | None
    if tasks is not None:
        kind = infer_kind(tasks)
        tools, notes = choose_tools(kind, cfg.tools, cfg.corpus, has_module)
    else:
        kind, notes = family, []
        tools = list(cfg.tools) if cfg.tools is not None else None
        if tools is None and has_module:
            tools = [*FAMILY_TOOLS[family], "Base_Generator_Tool"]
    # both local search tools index the same JSONL corpus
    tool_kwargs: dict[str, Any] = (
        {n: {"corpus_path": cfg.corpus} for n in _SEARCH_TOOLS} if cfg.corpus else {}
    )
    env_kwargs: dict[str, Any] = {
        "tools": tools,
        "tool_kwargs": tool_kwargs,
        "max_turns": cfg.max_turns,
        "seed": cfg.seed,
        "query_analysis": bool(cfg.query_analysis),
    }
    if tasks is not None:
        env_kwargs["tasks"] = tasks
    elif cfg.episodes is not None:
        env_kwargs["num_tasks"] = cfg.episodes
    _apply_overrides(env_kwargs, overrides, tools if tools is not None else FAMILY_TOOLS[family])
    # engines last: everything cheap to check has been checked
    module = (
        CountingEngine(_engine(cfg.module_engine, "--module-engine")) if cfg.module_engine else None
    )
    if module is not None:
        tool_kwargs["Base_Generator_Tool"] = {  # settings from env_kwargs last
            "engine": module,
            "request_factory": GenerationRequest.model_validate,
            **tool_kwargs.get("Base_Generator_Tool", {}),
        }
    judge = None
    if cfg.judge is not None:
        from agentflow_env.judge import LLMJudge
        from agentflow_env.rewards import score

        try:
            judge = LLMJudge(
                _engine(cfg.judge, "--judge"), fallback=score if cfg.judge_fallback else None
            )
        except EvaluateError:
            if module is not None and isinstance(cfg.module_engine, str):
                module.close()
            raise
    env_kwargs.update(
        executor=cfg.executor,
        verifier=cfg.verifier,
        generator=cfg.generator,
        engine=module,
        scorer=judge,
    )
    return _Setup(kind, tasks, notes, module, judge, env_kwargs)


# ------------------------------------------------------------------------------------- episodes
def _info_at(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info from gymnasium's vector info format (``key`` + ``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, dict):
            out[key] = _info_at(value, i)
        else:
            item = value[i]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def _turn_errors(info: Mapping[str, Any]) -> Counter[str]:
    """Error kinds of one step's info (parse, executor, tool, verifier, generator, score)."""
    kinds: Counter[str] = Counter()
    if info.get("error_kind"):
        kinds[info["error_kind"]] += 1
    for kind in ("verifier", "generator", "score"):
        if info.get(f"{kind}_error"):
            kinds[kind] += 1
    return kinds


@dataclass
class _Running:
    """The episode a sub-env is running."""

    index: int
    builder: TrajectoryBuilder
    errors: Counter[str]

    def started(self, info: Mapping[str, Any]) -> None:
        self.errors["query_analysis"] += bool(info.get("query_analysis_error"))


def _run_episodes(
    envs: Any,
    planner: BatchPlanner,
    tasks: Sequence[Task],
    cfg: EvalConfig,
    on_done: Callable[[EpisodeRecord], None],
) -> None:
    """Drive ``tasks`` through the vector env, refilling sub-envs as episodes end."""
    n = envs.num_envs
    queue = deque(enumerate(tasks))
    slots: list[_Running | None] = [None] * n

    def assign(indices: list[int]) -> dict[int, Task]:
        chosen = {}
        for i in indices:
            k, task = queue.popleft()
            slots[i] = _Running(k, TrajectoryBuilder(f"ep{k}", task, episode_index=k), Counter())
            planner.start(i, task, k)
            chosen[i] = task
        return chosen

    chosen = assign(list(range(n)))
    obs, infos = envs.reset(seed=cfg.seed, options={"tasks": [chosen[i] for i in range(n)]})
    for i in range(n):
        slots[i].started(_info_at(infos, i))  # type: ignore[union-attr]
    while any(s is not None for s in slots):
        live = [i for i in range(n) if slots[i] is not None]
        turns = [len(slots[i].builder.record.turns) + 1 for i in live]  # type: ignore[union-attr]
        acted = planner.act(live, [obs[i] for i in live], [slots[i].index for i in live], turns)  # type: ignore[union-attr]
        actions = [""] * n
        for i, action in zip(live, acted, strict=True):
            actions[i] = action
        obs, rewards, terms, truncs, infos = envs.step(actions)
        finished = []
        for i in live:
            slot, info = slots[i], _info_at(infos, i)
            assert slot is not None
            slot.builder.add(actions[i], float(rewards[i]), bool(terms[i]), bool(truncs[i]), info)
            slot.errors.update(_turn_errors(info))
            if terms[i] or truncs[i]:
                if planner.errors.get(slot.index):
                    slot.errors["planner"] += planner.errors.pop(slot.index)
                record = slot.builder.record
                record.metadata["errors"] = {k: v for k, v in slot.errors.items() if v}
                on_done(record)
                slots[i] = None
                finished.append(i)
        refill = finished[: len(queue)]
        if refill:
            chosen = assign(refill)
            mask = np.zeros(n, dtype=bool)
            mask[refill] = True
            obs, infos = envs.reset(
                options={"tasks": [chosen.get(i) for i in range(n)], "reset_mask": mask}
            )
            for i in refill:
                slots[i].started(_info_at(infos, i))  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ run
def _build_envs(cfg: EvalConfig, setup: _Setup) -> Any:
    import gymnasium as gym

    sizes = [
        n for n in (cfg.episodes, setup.env_kwargs.get("num_tasks")) if n is not None
    ]  # generated
    wanted = (
        len(_select(setup.tasks, cfg))
        if setup.tasks is not None
        else min(sizes, default=cfg.concurrency)
    )
    try:
        return gym.make_vec(
            cfg.env,
            num_envs=min(cfg.concurrency, wanted),
            vectorization_mode="vector_entry_point",
            autoreset_mode=gym.vector.AutoresetMode.DISABLED,
            **setup.env_kwargs,
        )
    except (ValueError, TypeError, OSError) as exc:  # e.g. a corpus that is not JSONL
        raise EvaluateError(f"could not build {cfg.env}: {type(exc).__name__}: {exc}") from exc


def _recorder(
    records: list[EpisodeRecord], stream: TextIO | None
) -> Callable[[EpisodeRecord], None]:
    """Keep each finished episode; stream it to the trajectory file at once (a crash keeps it)."""

    def done(record: EpisodeRecord) -> None:
        records.append(record)
        if stream is not None:
            write_jsonl([record], stream)
            stream.flush()

    return done


def run(cfg: EvalConfig) -> dict[str, Any]:
    """Run an evaluation; returns the report (config, tools, notes, summary, per-episode rows).

    Raises:
        EvaluateError: bad arguments or inputs (unknown env id, missing file, bad planner spec...).
    """
    started = time.perf_counter()
    _validate(cfg)
    setup = _setup(cfg)
    planner: BatchPlanner | None = None
    envs: Any = None
    records: list[EpisodeRecord] = []
    stream: TextIO | None = None
    try:
        planner = _make_planner(cfg)
        envs = _build_envs(cfg, setup)
        tasks = _select(envs.tasks, cfg)
        tools = list(envs.flow.tools)
        if isinstance(planner, ScriptedBatchPlanner):
            planner.bind_tools(tools)
        setup_s = time.perf_counter() - started
        start = time.perf_counter()
        if cfg.trajectories:  # closed in the finally below
            Path(cfg.trajectories).parent.mkdir(parents=True, exist_ok=True)
            stream = open(cfg.trajectories, "w", encoding="utf-8")  # noqa: SIM115
        _run_episodes(envs, planner, tasks, cfg, _recorder(records, stream))
        wall = time.perf_counter() - start
    finally:
        for resource in (stream, envs, planner):
            if resource is not None:
                resource.close()
        for engine, spec in (
            (setup.module_engine, cfg.module_engine),
            (setup.judge.engine if setup.judge else None, cfg.judge),
        ):
            if engine is not None and isinstance(
                spec, str
            ):  # built here from a spec: ours to close
                engine.close()
    records.sort(key=lambda r: r.metadata["episode_index"])
    config = {
        k: v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else repr(v)
        for k, v in asdict(cfg).items()
    }
    report = {
        "config": config,
        "kind": setup.kind,
        "tools": tools,
        "notes": setup.notes,
        "setup_s": setup_s,
        "summary": summarize(records, planner, setup.module_engine, setup.judge, wall),
        "episodes": episode_rows(records),
    }
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(report, indent=2, allow_nan=False, default=str)
        Path(cfg.out).write_text(text + "\n", encoding="utf-8")
    return report


# ------------------------------------------------------------------------------------------ CLI
def _json_object(text: str) -> dict[str, Any]:
    """argparse type of ``--env-kwargs``: a JSON object (argparse reports a failure,
    exit code 2)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from exc
    if isinstance(value, dict):
        return value
    raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}: {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments (each maps to an :class:`EvalConfig` field)."""
    d = EvalConfig()
    p = argparse.ArgumentParser(
        prog="python -m agentflow_env.evaluate",
        description="Benchmark a planner as a policy on an AgentFlow environment.",
    )
    add = p.add_argument
    add("--env", default=d.env, help=f"gymnasium id ({', '.join(ENV_IDS)})")
    add("--data", help="authors' JSON, JSONL, or hf:NAME (default: the env's generated tasks)")
    add(
        "--planner",
        default=d.planner,
        help="scripted:NAME (oracle, random-tool, search-then-answer) or an engine spec",
    )
    add("--executor", default=d.executor, choices=["direct", "llm"])
    add("--verifier", default=d.verifier, choices=["planner", "llm"])
    add("--generator", default=d.generator, choices=["planner", "llm"])
    add("--module-engine", help="engine spec for the LLM modules and Base_Generator_Tool")
    add(
        "--query-analysis",
        action="store_true",
        help="run the query analyzer (needs --module-engine)",
    )
    add("--judge", help="engine spec for an LLM-judge scorer (default: rule scorers)")
    add(
        "--judge-fallback",
        action="store_true",
        help="on judge failure use the rule scorer (counted as judge_fallback errors)",
    )
    add(
        "--tools",
        type=lambda v: [t.strip() for t in v.split(",") if t.strip()],
        help="comma-separated tool names (default: chosen per data file)",
    )
    add("--corpus", help="JSONL corpus (title, text) for the search tools")
    add("--episodes", type=int, help="number of episodes (default: every task)")
    add("--shuffle", action="store_true", help="a seeded random subset instead of the first N")
    add("--max-turns", type=int, default=d.max_turns)
    add("--concurrency", type=int, default=d.concurrency, help="sub-envs stepping together")
    add("--seed", type=int, default=d.seed)
    add("--temperature", type=float, default=d.temperature, help="planner sampling temperature")
    add("--max-tokens", type=int, default=d.max_tokens, help="planner max tokens per step")
    add(
        "--planner-input",
        default=d.planner_input,
        choices=["chat", "prompt"],
        help="send the observation as a chat message or as a raw prompt",
    )
    add(
        "--env-kwargs",
        type=_json_object,
        metavar="JSON",
        help="more env arguments as a JSON object, "
        'merged last, e.g. \'{"prompt_style": "compact"}\'; keys: '
        + ", ".join(EnvOverrides.model_fields),
    )
    add("--out", help="write the report as JSON here")
    add("--trajectories", help="write the episode records as JSONL here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for bad arguments)."""
    cfg = EvalConfig(**vars(build_parser().parse_args(argv)))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run(cfg)
    except EvaluateError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
