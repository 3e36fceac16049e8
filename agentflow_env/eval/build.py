"""Building an evaluation run from its config: tasks, tools, engines, the planner, the vector env.

Tools for ``--data`` (unless ``--tools`` is given) follow the kind of the file's tasks
(:func:`infer_kind`, :func:`choose_tools`); engines are built last, after every cheap check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentflow_env.env import FAMILY_TOOLS
from agentflow_env.eval.config import (
    SEARCH_TOOLS,
    EvalConfig,
    EvaluateError,
    validate_env_overrides,
)
from agentflow_env.llm.base import Engine
from agentflow_env.planners.batch import BatchPlanner, CountingEngine, make_batch_planner
from agentflow_env.registration import ENV_IDS
from agentflow_env.tasks.base import Task

__all__ = [
    "Setup",
    "build_envs",
    "build_setup",
    "choose_tools",
    "infer_kind",
    "make_planner",
    "select_tasks",
    "task_seed",
]


def _engine(spec: str | Engine, flag: str) -> Engine:
    if not isinstance(spec, str):
        return spec
    from agentflow_env.llm import make_engine

    try:
        return make_engine(spec)
    except Exception as exc:  # any construction failure is a bad argument, shown plainly
        raise EvaluateError(f"{flag} {spec!r}: {type(exc).__name__}: {exc}") from exc


def make_planner(cfg: EvalConfig) -> BatchPlanner:
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
        missing = sorted(set(names) & set(SEARCH_TOOLS)) if corpus is None else []
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


def task_seed(cfg: EvalConfig) -> int:
    """Seed of the generated task set and the ``--shuffle`` subset."""
    return cfg.seed if cfg.task_seed is None else cfg.task_seed


def select_tasks(tasks: Sequence[Task], cfg: EvalConfig) -> list[Task]:
    """The episodes to play: ``--episodes`` tasks, each ``--samples`` times in a row (episode
    ``j`` is sample ``j % samples`` of task ``j // samples``)."""
    count = len(tasks) if cfg.episodes is None else min(cfg.episodes, len(tasks))
    if cfg.shuffle:
        order = np.random.default_rng(task_seed(cfg)).permutation(len(tasks))[:count]
        chosen = [tasks[int(i)] for i in order]
    else:
        chosen = list(tasks[:count])
    return [task for task in chosen for _ in range(cfg.samples)]


@dataclass
class Setup:
    """Everything built from the config before the env."""

    kind: str
    tasks: list[Task] | None
    notes: list[str]
    module_engine: CountingEngine | None
    judge: Any
    env_kwargs: dict[str, Any]


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


def build_setup(cfg: EvalConfig) -> Setup:
    overrides = validate_env_overrides(cfg.env_kwargs)
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
    if cfg.samples > 1 and cfg.temperature == 0 and not str(cfg.planner).startswith("scripted:"):
        notes.append(
            f"--samples {cfg.samples} with --temperature 0: a greedy planner plays every sample "
            "alike, so pass@k equals pass@1"
        )
    # both local search tools index the same JSONL corpus
    tool_kwargs: dict[str, Any] = (
        {n: {"corpus_path": cfg.corpus} for n in SEARCH_TOOLS} if cfg.corpus else {}
    )
    env_kwargs: dict[str, Any] = {
        "tools": tools,
        "tool_kwargs": tool_kwargs,
        "max_turns": cfg.max_turns,
        "seed": task_seed(cfg),
        "query_analysis": bool(cfg.query_analysis),
    }
    if tasks is not None:
        env_kwargs["tasks"] = tasks
    elif cfg.episodes is not None:
        env_kwargs["num_tasks"] = cfg.episodes
    _apply_overrides(env_kwargs, overrides, tools if tools is not None else FAMILY_TOOLS[family])
    # engines last: everything cheap to check has been checked. The env shares `engine` (the
    # counted module engine) with its LLM modules and Base_Generator_Tool.
    module = (
        CountingEngine(_engine(cfg.module_engine, "--module-engine")) if cfg.module_engine else None
    )
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
    return Setup(kind, tasks, notes, module, judge, env_kwargs)


def build_envs(cfg: EvalConfig, setup: Setup) -> Any:
    import gymnasium as gym

    sizes = [
        n for n in (cfg.episodes, setup.env_kwargs.get("num_tasks")) if n is not None
    ]  # generated
    wanted = (
        len(select_tasks(setup.tasks, cfg))
        if setup.tasks is not None
        else min(sizes, default=cfg.concurrency) * cfg.samples
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
