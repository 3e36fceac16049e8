"""Building an evaluation run from its config: tasks, tools, engines, the planner, the vector env.

Tools for ``--data`` (unless ``--tools`` is given) follow the kind of the file's tasks
(:func:`infer_kind`, :func:`choose_tools`); engines are built last, after every cheap check, and
:func:`preflight` sends each remote one a short request before the first episode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentflow_env.env import FAMILY_TOOLS
from agentflow_env.eval.config import (
    SEARCH_TOOLS,
    EvalConfig,
    EvaluateError,
    RunStopped,
    validate_env_overrides,
)
from agentflow_env.llm.base import Engine, GenerationRequest, SamplingParams
from agentflow_env.llm.common import EngineConfigError
from agentflow_env.llm.spec import parse_spec
from agentflow_env.planners.batch import BatchPlanner, CountingEngine, make_batch_planner
from agentflow_env.registration import ENV_IDS
from agentflow_env.tasks.base import Task
from agentflow_env.tool_registry import TOOLSETS

__all__ = [
    "Plan",
    "Setup",
    "build_envs",
    "build_setup",
    "choose_tools",
    "infer_kind",
    "make_judge",
    "make_planner",
    "own_sources",
    "paper_tools",
    "plan",
    "preflight",
    "select_tasks",
    "task_seed",
]


_HF_MIN_BATCH = 16
"""HFEngine's own default batch; a higher ``--concurrency`` raises it"""


def engine_kwargs(cfg: EvalConfig, spec: object) -> dict[str, Any]:
    """Constructor options the CLI's flags imply for an engine spec: ``--request-timeout`` /
    ``--max-retries`` for an OpenAI-compatible server; for a local ``hf:`` model, batches as
    large as the sub-envs stepping together (``--concurrency``), so one turn of every episode is
    one ``generate`` call (each decoding step reads the weights once for the whole batch)."""
    if not isinstance(spec, str):
        return {}
    try:
        kind = parse_spec(spec).kind
    except EngineConfigError:  # not an engine spec (a scripted planner), or a bad one that
        return {}  # make_engine then reports
    if kind == "hf":
        return {"max_batch_size": max(_HF_MIN_BATCH, cfg.concurrency)}
    if kind != "openai":
        return {}
    kwargs: dict[str, Any] = {}
    if cfg.request_timeout is not None:
        kwargs["timeout_s"] = cfg.request_timeout
    if cfg.max_retries is not None:
        kwargs["max_retries"] = cfg.max_retries
    return kwargs


def _engine(spec: str | Engine, flag: str, cfg: EvalConfig) -> Engine:
    if not isinstance(spec, str):
        return spec
    from agentflow_env.llm import make_engine

    try:
        return make_engine(spec, **engine_kwargs(cfg, spec))
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
            engine_kwargs=engine_kwargs(cfg, cfg.planner),
            constrained=cfg.planner_constrained,
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


PAPER_SEARCH_TOOLS = ("Ground_Google_Search_Tool", "Web_Search_Tool", "Wikipedia_RAG_Search_Tool")
"""the paper toolset's search tools: a local corpus offline, unless given a web backend"""
LOCAL_SEARCH_TOOLS = (*SEARCH_TOOLS, *PAPER_SEARCH_TOOLS)


def own_sources(overrides: dict[str, Any]) -> set[str]:
    """Tools that ``env_kwargs`` gives a source of their own (a web backend or a corpus)."""
    per_tool = overrides.get("tool_kwargs", {})
    keys = {"documents", "corpus_path", "index_dir"}
    return {
        name
        for name, kwargs in per_tool.items()
        if kwargs.get("backend") == "web" or keys & kwargs.keys()
    }


def paper_tools(has_corpus: bool, own_source: Collection[str] = ()) -> tuple[list[str], list[str]]:
    """The paper protocol's tools (the reference enabled its four on every benchmark) and notes:
    without a corpus, the search tools with no source of their own are left out."""
    names, notes = list(TOOLSETS["paper"]), []
    for name in [n for n in names if n in LOCAL_SEARCH_TOOLS and n not in own_source]:
        if not has_corpus:
            names.remove(name)
            source = "corpus_path" if "Wikipedia" in name else 'corpus_path or "backend": "web"'
            notes.append(
                f"{name} left out: no corpus for this data (pass --corpus PATH.jsonl, or give it "
                f"{source} in --env-kwargs tool_kwargs)"
            )
    return names, notes


def choose_tools(
    kind: str,
    requested: Sequence[str] | None,
    corpus: str | None,
    module_engine: bool,
    protocol: str = "rules",
    own_source: Collection[str] = (),
) -> tuple[list[str], list[str]]:
    """Tool names for external data, and notes for the table (see the module docstring).

    ``own_source``: tools that need no ``corpus`` (``env_kwargs`` gave them a web backend or a
    corpus of their own, :func:`own_sources`)."""
    notes: list[str] = []
    if requested is not None:
        names = list(requested)
        expanded = [n for name in names for n in TOOLSETS.get(name, (name,))]
        missing = [n for n in expanded if n in LOCAL_SEARCH_TOOLS and n not in own_source]
        if corpus is None and missing:
            raise EvaluateError(
                f"{missing[0]} needs a corpus for external data: pass --corpus PATH.jsonl "
                f"(JSONL lines with 'title' and 'text'), or leave it out of --tools"
            )
        if "Base_Generator_Tool" in names and not module_engine:
            raise EvaluateError("Base_Generator_Tool needs an engine: pass --module-engine SPEC")
        return names, notes
    if protocol == "paper":
        return paper_tools(corpus is not None, own_source)
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
class Plan:
    """What a run would build, decided without building an engine (also the dry run's view)."""

    kind: str
    tasks: list[Task] | None
    tools: list[str] | None
    notes: list[str]
    env_kwargs: dict[str, Any]


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
        no_corpus = "tasks" in env_kwargs and not env_kwargs["tool_kwargs"]
        search = [name for name in stray if name in LOCAL_SEARCH_TOOLS]
        hint = f" ({search[0]} needs --corpus with --data)" if search and no_corpus else ""
        raise EvaluateError(
            f"--env-kwargs tool_kwargs names {stray[0]!r}, not a tool of this run "
            f"({', '.join(tools) or 'no tools'}){hint}"
        )
    for name, kwargs in per_tool.items():
        env_kwargs["tool_kwargs"][name] = {**env_kwargs["tool_kwargs"].get(name, {}), **kwargs}
    env_kwargs.update({k: v for k, v in overrides.items() if k != "tool_kwargs"})


def plan(cfg: EvalConfig) -> Plan:
    """Tasks, tools and env settings of a resolved config (:func:`~agentflow_env.eval.protocol.
    resolve`); builds no engine."""
    overrides = validate_env_overrides(cfg.env_kwargs)
    family = _env_family(cfg.env)
    tasks = _load_data(cfg.data) if cfg.data is not None else None
    has_module = cfg.module_engine is not None
    tools: list[str] | None
    if tasks is not None:
        kind = infer_kind(tasks)
        tools, notes = choose_tools(
            kind, cfg.tools, cfg.corpus, has_module, cfg.protocol, own_sources(overrides)
        )
    else:
        kind, notes = family, []
        tools = list(cfg.tools) if cfg.tools is not None else None
        if tools is None and cfg.protocol == "paper":  # generated search tasks bring a corpus
            has_corpus = cfg.corpus is not None or "Search_Tool" in FAMILY_TOOLS[family]
            tools, notes = paper_tools(has_corpus, own_sources(overrides))
        elif tools is None and has_module:
            tools = [*FAMILY_TOOLS[family], "Base_Generator_Tool"]
    if cfg.samples > 1 and not cfg.temperature and not str(cfg.planner).startswith("scripted:"):
        notes.append(
            f"--samples {cfg.samples} with --temperature 0: a greedy planner plays every sample "
            "alike, so pass@k equals pass@1"
        )
    # the local search tools index the same JSONL corpus (a web backend takes none)
    tool_kwargs: dict[str, Any] = {}
    if cfg.corpus:
        tool_kwargs = {n: {"corpus_path": cfg.corpus} for n in SEARCH_TOOLS}
        web = {n for n, kw in overrides.get("tool_kwargs", {}).items() if kw.get("backend")}
        tool_kwargs.update(
            (n, {"corpus_path": cfg.corpus})
            for n in PAPER_SEARCH_TOOLS
            if n in (tools or ()) and n not in web
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
    return Plan(kind, tasks, tools, notes, env_kwargs)


def make_judge(cfg: EvalConfig, module: CountingEngine | None) -> Any:
    """The LLM judge of a resolved config, or None (rule scorers). A judge spec equal to the
    module engine's shares that engine (one model loaded, its tokens counted as the judge's)."""
    if cfg.judge is None:
        return None
    from agentflow_env.judge import LLMJudge
    from agentflow_env.rewards import score

    shared = module is not None and isinstance(cfg.judge, str) and cfg.judge == cfg.module_engine
    engine = module.engine if shared else _engine(cfg.judge, "--judge", cfg)  # type: ignore[union-attr]
    sampling = None
    if cfg.judge_max_tokens is not None:
        sampling = SamplingParams(temperature=0.0, max_tokens=cfg.judge_max_tokens)
    return LLMJudge(
        engine,
        sampling,
        fallback=score if cfg.judge_fallback else None,
        verdict=cfg.judge_verdict or "line",
        two_stage=bool(cfg.judge_two_stage),
    )


def build_setup(cfg: EvalConfig) -> Setup:
    """The run's plan with its engines built (a resolved config)."""
    planned = plan(cfg)
    env_kwargs = planned.env_kwargs
    # engines last: everything cheap to check has been checked. The env shares `engine` (the
    # counted module engine) with its LLM modules and Base_Generator_Tool.
    module = (
        CountingEngine(_engine(cfg.module_engine, "--module-engine", cfg))
        if cfg.module_engine
        else None
    )
    try:
        judge = make_judge(cfg, module)
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
    return Setup(planned.kind, planned.tasks, planned.notes, module, judge, env_kwargs)


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


def _inner(engine: Any) -> Any:
    """The engine under a :class:`CountingEngine` (a preflight request is not the run's usage)."""
    return engine.engine if isinstance(engine, CountingEngine) else engine


def preflight(planner: BatchPlanner, setup: Setup) -> None:
    """One short request to every remote engine (one with a ``base_url``) before any episode.

    Raises:
        RunStopped: an engine failed after its retries (the server is down, hangs, answers
            errors or no completion); the reason names the engine, its URL and the failure.
        EvaluateError: wrong credentials or an unknown model (bad arguments).
    """
    from agentflow_env.llm.common import EngineAuthError, ModelNotFoundError

    engines = {
        "planner": _inner(getattr(planner, "engine", None)),
        "module": _inner(setup.module_engine),
        "judge": setup.judge.engine if setup.judge is not None else None,
    }
    ping = GenerationRequest.chat("Reply with OK.", max_tokens=1)
    for role, engine in engines.items():
        url = getattr(engine, "base_url", None)
        if engine is None or url is None:
            continue
        try:
            [result] = engine.generate([ping])
        except (EngineAuthError, ModelNotFoundError) as exc:
            raise EvaluateError(f"preflight: the {role} engine: {exc}") from exc
        if result.error:
            raise RunStopped(
                f"preflight: the {role} engine at {url} failed ({result.error_kind}): "
                f"{result.error}"
            )
