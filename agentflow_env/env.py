"""``AgentFlowEnv``: one episode answers one query; the planner is the acting policy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym

from agentflow_env.config import FAMILY_TOOLS, EngineLike, EnvConfig, Family, settings_signature
from agentflow_env.flow import AgentFlow, Episode
from agentflow_env.llm.base import Engine
from agentflow_env.modules import (
    DirectExecutor,
    LLMExecutor,
    LLMGenerator,
    LLMVerifier,
    PlannerGenerator,
    PlannerVerifier,
    QueryAnalyzer,
)
from agentflow_env.reset_options import choose_tasks, sample_task
from agentflow_env.spaces import action_space, text_space
from agentflow_env.tasks.base import Task
from agentflow_env.tool_registry import build_tools

logger = logging.getLogger(__name__)

__all__ = ["AgentFlowEnv", "EnvConfig", "Family", "build_flow", "FAMILY_TOOLS"]


class _Engines:
    """Engines by spec, each built once per env and shared by the modules and tools using it."""

    def __init__(self) -> None:
        self._built: dict[object, Engine] = {}

    def get(self, engine: EngineLike | None, role: str, hint: str) -> Engine:
        if engine is None:
            raise ValueError(f"{role} needs an engine: pass {hint}")
        key: object = engine if isinstance(engine, str) else id(engine)
        if key not in self._built:
            from agentflow_env.llm import make_engine  # lazy: engines pull optional dependencies

            self._built[key] = make_engine(engine)
        return self._built[key]


def _module(
    kind: str, mode: object, engine: EngineLike | None, engines: _Engines, constrained: bool
) -> Any:
    """Build a module from a mode name (``direct``/``planner``/``llm``) or pass an instance."""
    table: dict[str, dict[str, Callable[[], Any]]] = {
        "executor": {"direct": DirectExecutor, "llm": LLMExecutor},
        "verifier": {"planner": PlannerVerifier, "llm": LLMVerifier},
        "generator": {"planner": PlannerGenerator, "llm": LLMGenerator},
    }
    if not isinstance(mode, str):
        return mode  # an instance (EnvConfig checked its class)
    if mode == "llm":
        hint = f"engine=... or {kind}_engine=..."
        built = engines.get(engine, f"{kind}='llm'", hint)
        return table[kind][mode](built, constrained=constrained)  # type: ignore[call-arg]
    return table[kind][mode]()


def _load_tasks(family: str, cfg: EnvConfig) -> tuple[list[Task], list[dict[str, Any]]]:
    """Tasks and the corpus a Search_Tool indexes (the generated world's documents, if any)."""
    tasks = cfg.tasks
    if tasks is None:
        from agentflow_env.tasks.suite import make_suite

        suite = make_suite(
            family,  # type: ignore[arg-type]
            seed=cfg.seed,
            num_tasks=cfg.num_tasks,
            **dict(cfg.task_kwargs or {}),
        )
        return list(suite.tasks), [dict(d) for d in suite.documents]
    if isinstance(tasks, (str, Path)) or (tasks and not isinstance(tasks[0], Task)):
        from agentflow_env.tasks.loaders import load_tasks

        loaded = load_tasks(tasks if isinstance(tasks, (str, Path)) else list(tasks))  # type: ignore[arg-type]
        return list(loaded), []
    return list(tasks), []  # type: ignore[arg-type]


@settings_signature
def build_flow(
    family: Family = "search", *, config: EnvConfig | None = None, **settings: Any
) -> tuple[AgentFlow, list[Task]]:
    """Everything an env needs (shared by the single and vector envs).

    ``settings`` are :class:`~agentflow_env.config.EnvConfig` fields (given one by one, or as
    ``config``, or both: keyword arguments win); an unknown or bad one raises
    :class:`~agentflow_env.config.EnvConfigError` naming it.
    """
    if family not in FAMILY_TOOLS:
        raise ValueError(f"family must be one of {sorted(FAMILY_TOOLS)}, got {family!r}")
    cfg = EnvConfig.of(config, settings)
    task_list, generated_docs = _load_tasks(family, cfg)
    if not task_list:
        raise ValueError("the task set is empty")
    engines = _Engines()
    tool_list = build_tools(
        cfg.tools if cfg.tools is not None else FAMILY_TOOLS[family],
        cfg.tool_kwargs,
        documents=cfg.documents if cfg.documents is not None else generated_docs,
        engine=lambda: engines.get(cfg.engine, "", "") if cfg.engine is not None else None,
        timeout_s=cfg.tool_timeout_s,
    )
    scorer = cfg.scorer
    if scorer is None:
        from agentflow_env.rewards import score as scorer  # the rule scorer
    analyzer = None
    if cfg.query_analysis:
        qa_engine = cfg.engine if cfg.query_analysis is True else cfg.query_analysis
        hint = "engine=... or query_analysis=<engine>"
        analyzer = QueryAnalyzer(
            engines.get(qa_engine, "query_analysis", hint), constrained=cfg.constrained_modules
        )
    modules = [
        _module(
            kind,
            getattr(cfg, kind),
            getattr(cfg, f"{kind}_engine") or cfg.engine,
            engines,
            cfg.constrained_modules,
        )
        for kind in ("executor", "verifier", "generator")
    ]
    flow = AgentFlow(
        tool_list,
        *modules,
        scorer,
        max_turns=cfg.max_turns,
        prompt_style=cfg.prompt_style,
        query_analyzer=analyzer,
        max_action_chars=cfg.max_action_chars,
        max_result_chars=cfg.max_result_chars,
        max_observation_chars=cfg.max_observation_chars,
        tool_timeout_s=cfg.tool_timeout_s,
        max_episode_s=cfg.max_episode_s,
    )
    return flow, task_list


class AgentFlowEnv(gym.Env[str, str]):
    """The AgentFlow agent system as a text environment; the planner is the policy.

    ## Description
    One episode answers one query. Each step the policy (the planner) writes the next step; the
    environment runs the executor, the tool, appends the step to memory, asks the verifier whether
    to stop and, when the episode ends, asks the generator for the final answer and scores it.

    ## Action Space
    ``Text`` (any string). The parser accepts, in any order, case-insensitive labels with optional
    ``**`` bold, list numbers or bullets::

        Justification: <why>
        Context: <facts the tool needs>
        Sub-Goal: <what this step achieves>
        Tool Name: <a tool name | Finish>   (matched ignoring case, spaces, underscores, backticks)
        Command: <exact tool input>         (optional; else the Sub-Goal is the input)

    or the same fields as a JSON object; when several Context/Sub-Goal/Tool Name blocks are
    written, the last complete one counts (:mod:`agentflow_env.format.action`). Finish with
    ``Tool Name: Finish`` and ``<answer>...</answer>``; an ``<answer>`` tag alone also finishes.
    For Python_Coder_Tool the code may be a fenced ```python block. A malformed action never
    raises: the turn is consumed and the next observation shows the error.

    ## Observation Space
    ``Text`` (Basic Multilingual Plane charset). ``full``/``compact``: an append-only prompt, the
    header (query, tools, action format; ``compact`` shows only the query and tool names), then
    per step ``### Step k``, the action as written, ``Result: <tool output or error>``.
    ``paper``: the reference's prompt (query, query analysis, tools, tool metadata, previous
    steps, instructions), rebuilt from the memory every turn. An over-long observation drops its
    oldest steps, never the query.

    ## Rewards
    0.0 on every non-final step; on the final step the outcome score in [0, 1] (rule scorers in
    ``agentflow_env.rewards``: exact match, F1, math equivalence, multiple choice, Game of 24).
    An episode whose outcome was lost to infrastructure ends with reward NaN: it has no outcome
    (neither right nor wrong) and must be left out, never counted as 0.

    ## Episode End
    ``terminated`` when the verifier says STOP (offline: the planner finishes); ``truncated`` at
    ``max_turns`` or past the ``max_episode_s`` wall-clock budget (the generator still answers
    and the answer is scored; ``info["truncation_reason"]`` says which). An infrastructure
    failure (:mod:`agentflow_env.infra`: an engine failing after its retries, a tool backend or
    sandbox that could not run, a judge that failed) ends the episode at once, ``truncated``,
    with ``info["infra_error"]``. The policy's own mistakes (unparseable text, an unknown tool,
    bad code) are not infrastructure: they are shown to it and the episode goes on.

    ## Info
    Every step: ``turn``, ``tool_name``, ``tool_input``, ``tool_result``, ``error``, ``verifier``,
    ``timings``; ``tool_calls`` when the executor made several calls, ``tool_backend`` for a tool
    that says what backs it (reset's info: ``tool_backends``); final step also ``answer``,
    ``ground_truth``, ``score``, ``score_error``, ``truncation_reason`` when truncated, and
    ``infra_error`` (``kind``, ``source``, ``message``) when infrastructure failed.
    ``messages`` (on reset and every step): the same episode as chat messages for instruct
    models, append-only: system (role, tools, action format, an example step), user (query,
    analysis, the cue for step 1), then per step assistant (the action as recorded) and user
    (``Result: ...`` and the cue for the next step); render it with a chat template and its
    generation prompt, and the model's next tokens are the step. (``prompt_style="paper"``, whose
    prompt is rebuilt each turn, opens with the first turn's whole prompt as one user message.)

    ## Arguments
    ``family`` ("search", "math", "agentic", "science"), ``tasks`` (list of Task/dicts, or a path
    to the authors' JSON or JSONL), ``documents`` (corpus for Search_Tool), ``tools`` (names or Tool
    objects, or the toolset "paper"), ``max_turns`` (10), ``max_episode_s``, ``executor``
    ("direct"|"llm"), ``verifier`` ("planner"|"llm"), ``generator`` ("planner"|"llm"),
    ``engine``/``<module>_engine`` (engine or spec string),
    ``query_analysis``, ``prompt_style`` ("full"|"compact"|"paper"), ``seed`` and ``num_tasks`` and
    ``task_kwargs`` for the generated task set (e.g. ``{"hops": (1, 3)}``), and more: every field
    of :class:`~agentflow_env.config.EnvConfig` (documented there), given one by one or as
    ``config=EnvConfig(...)``. An unknown or bad one raises ``EnvConfigError`` naming it.

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    @settings_signature
    def __init__(
        self,
        family: Family = "search",
        *,
        render_mode: str | None = None,
        config: EnvConfig | None = None,
        **settings: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.family = family
        self.flow, self.tasks = build_flow(family, config=config, **settings)
        self.observation_space = text_space(self.flow.max_observation_chars)
        self.action_space = action_space(self.flow.max_observation_chars)
        self._episode: Episode | None = None

    @property
    def task(self) -> Task | None:
        """The current episode's task."""
        return self._episode.task if self._episode else None

    @property
    def memory(self):  # noqa: ANN201 - Memory, typed in memory.py
        return self._episode.memory if self._episode else None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        task = self._choose_task(options or {})
        [(self._episode, info)] = self.flow.start([task])
        return self.flow.observation(self._episode), info

    def _choose_task(self, options: Mapping[str, Any]) -> Task:
        [task] = choose_tasks(options, self.tasks)
        return task if task is not None else sample_task(self.tasks, self.np_random)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._episode is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self._episode.done:
            raise gym.error.ResetNeeded("the episode has ended: call reset()")
        [(reward, terminated, truncated, info)] = self.flow.step([self._episode], [action])
        return self.flow.observation(self._episode), reward, terminated, truncated, info

    def render(self) -> str | None:  # type: ignore[override]
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi'")
            return None
        return self.flow.observation(self._episode) if self._episode else ""

    def close(self) -> None:
        self.flow.close()
        super().close()
