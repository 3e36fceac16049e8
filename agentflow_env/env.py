"""``AgentFlowEnv``: one episode answers one query; the planner is the acting policy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym

from agentflow_env.flow import AgentFlow, Episode, Scorer
from agentflow_env.format import PromptStyle
from agentflow_env.llm.base import Engine
from agentflow_env.modules import (
    DirectExecutor,
    Executor,
    Generator,
    LLMExecutor,
    LLMGenerator,
    LLMVerifier,
    PlannerGenerator,
    PlannerVerifier,
    QueryAnalyzer,
    Verifier,
)
from agentflow_env.spaces import text_space
from agentflow_env.tasks.base import Task
from tools.base import Tool

logger = logging.getLogger(__name__)

__all__ = ["AgentFlowEnv", "Family", "build_flow", "FAMILY_TOOLS"]

Family = Literal["search", "math", "agentic", "science"]
FAMILY_TOOLS: dict[str, tuple[str, ...]] = {
    "search": ("Search_Tool",),
    "math": ("Python_Coder_Tool",),
    "agentic": ("Search_Tool", "Python_Coder_Tool"),
    "science": ("Python_Coder_Tool",),
}
TaskSource = Sequence[Task] | Sequence[Mapping[str, Any]] | str | Path


def _resolve_engine(engine: Engine | str | Callable[..., Any] | None, role: str) -> Engine:
    if engine is None:
        raise ValueError(f"{role}='llm' needs an engine: pass engine=... or {role}_engine=...")
    from agentflow_env.llm import make_engine  # lazy: engines pull optional dependencies

    return make_engine(engine)


def _module(kind: str, mode: object, engine: Any) -> Any:
    """Build a module from a mode name (``direct``/``planner``/``llm``) or pass an instance."""
    table: dict[str, dict[str, Callable[[], Any]]] = {
        "executor": {
            "direct": DirectExecutor,
            "llm": lambda: LLMExecutor(_resolve_engine(engine, "executor")),
        },
        "verifier": {
            "planner": PlannerVerifier,
            "llm": lambda: LLMVerifier(_resolve_engine(engine, "verifier")),
        },
        "generator": {
            "planner": PlannerGenerator,
            "llm": lambda: LLMGenerator(_resolve_engine(engine, "generator")),
        },
    }
    base = {"executor": Executor, "verifier": Verifier, "generator": Generator}[kind]
    if isinstance(mode, base):
        return mode
    if isinstance(mode, str) and mode in table[kind]:
        return table[kind][mode]()
    raise ValueError(
        f"{kind} must be one of {sorted(table[kind])} or a {base.__name__} instance, got {mode!r}"
    )


def _load_tasks(
    family: str,
    tasks: TaskSource | None,
    seed: int,
    num_tasks: int | None,
    task_kwargs: Mapping[str, Any] | None,
) -> tuple[list[Task], list[dict[str, Any]]]:
    """Tasks and the corpus a Search_Tool indexes (the generated world's documents, if any)."""
    if tasks is None:
        from agentflow_env.tasks.suite import make_suite

        suite = make_suite(
            family,
            seed=seed,
            num_tasks=num_tasks,  # type: ignore[arg-type]
            **dict(task_kwargs or {}),
        )
        return list(suite.tasks), [dict(d) for d in suite.documents]
    if isinstance(tasks, (str, Path)) or (tasks and not isinstance(tasks[0], Task)):
        from agentflow_env.tasks.loaders import load_tasks

        loaded = load_tasks(tasks if isinstance(tasks, (str, Path)) else list(tasks))  # type: ignore[arg-type]
        return list(loaded), []
    return list(tasks), []  # type: ignore[arg-type]


def _build_tools(
    names: Sequence[str | Tool],
    documents: Sequence[Mapping[str, Any]] | None,
    tool_kwargs: Mapping[str, Mapping[str, Any]],
) -> list[Tool]:
    built: list[Tool] = []
    for spec in names:
        if not isinstance(spec, str):
            built.append(spec)
            continue
        kwargs = dict(tool_kwargs.get(spec, {}))
        if spec == "Search_Tool":
            from tools.search import SearchTool

            if not documents and "index_dir" not in kwargs and "corpus_path" not in kwargs:
                raise ValueError(
                    "Search_Tool needs a corpus: pass documents=[{'title','text'}, ...], "
                    "tool_kwargs={'Search_Tool': {'corpus_path': ...}}, or tools=[...]"
                )
            if documents and "index_dir" not in kwargs and "corpus_path" not in kwargs:
                kwargs["documents"] = list(documents)
            built.append(SearchTool(**kwargs))
        elif spec == "Python_Coder_Tool":
            from tools.python_coder import PythonCoderTool

            built.append(PythonCoderTool(**kwargs))
        elif spec == "Wikipedia_Search_Tool":
            from tools.search import WikipediaSearchTool

            built.append(WikipediaSearchTool(**kwargs))
        elif spec == "Base_Generator_Tool":
            from agentflow_env.llm.base import GenerationRequest
            from tools.generator import BaseGeneratorTool

            # The tool builds plain dicts (tools never import agentflow_env); engines want requests.
            kwargs.setdefault("request_factory", GenerationRequest.model_validate)
            built.append(BaseGeneratorTool(**kwargs))
        else:
            raise ValueError(
                f"unknown tool {spec!r}: use Search_Tool, Python_Coder_Tool, "
                "Wikipedia_Search_Tool, Base_Generator_Tool, or pass a Tool instance"
            )
    return built


def build_flow(
    family: Family = "search",
    *,
    tasks: TaskSource | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[str | Tool] | None = None,
    tool_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    max_turns: int = 10,
    executor: str | Executor = "direct",
    verifier: str | Verifier = "planner",
    generator: str | Generator = "planner",
    engine: Engine | str | None = None,
    executor_engine: Engine | str | None = None,
    verifier_engine: Engine | str | None = None,
    generator_engine: Engine | str | None = None,
    query_analysis: bool | Engine | str = False,
    scorer: Scorer | None = None,
    prompt_style: PromptStyle = "full",
    seed: int = 0,
    num_tasks: int | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    max_observation_chars: int = 200_000,
    max_action_chars: int = 4_000,
    max_result_chars: int = 4_000,
    tool_timeout_s: float = 60.0,
) -> tuple[AgentFlow, list[Task]]:
    """Everything an env needs, from keyword arguments (shared by the single and vector envs)."""
    if family not in FAMILY_TOOLS:
        raise ValueError(f"family must be one of {sorted(FAMILY_TOOLS)}, got {family!r}")
    task_list, generated_docs = _load_tasks(family, tasks, seed, num_tasks, task_kwargs)
    if not task_list:
        raise ValueError("the task set is empty")
    docs = documents if documents is not None else generated_docs
    tool_list = _build_tools(
        tools if tools is not None else FAMILY_TOOLS[family], docs, tool_kwargs or {}
    )
    if scorer is None:
        from agentflow_env.rewards import score as scorer  # noqa: PLW0127 - the rule scorer
    analyzer = None
    if query_analysis:
        qa_engine = engine if query_analysis is True else query_analysis
        analyzer = QueryAnalyzer(_resolve_engine(qa_engine, "query_analysis"))  # type: ignore[arg-type]
    flow = AgentFlow(
        tool_list,
        _module("executor", executor, executor_engine or engine),
        _module("verifier", verifier, verifier_engine or engine),
        _module("generator", generator, generator_engine or engine),
        scorer,  # type: ignore[arg-type]
        max_turns=max_turns,
        prompt_style=prompt_style,
        query_analyzer=analyzer,
        max_action_chars=max_action_chars,
        max_result_chars=max_result_chars,
        max_observation_chars=max_observation_chars,
        tool_timeout_s=tool_timeout_s,
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
    ``**`` bold::

        Justification: <why>
        Context: <facts the tool needs>
        Sub-Goal: <what this step achieves>
        Tool Name: <a tool name | Finish>   (matched ignoring case, spaces, underscores)
        Command: <exact tool input>         (optional; else the Sub-Goal is the input)

    Finish with ``Tool Name: Finish`` and ``<answer>...</answer>``; an ``<answer>`` tag alone
    also finishes. For Python_Coder_Tool the code may be a fenced ```python block. A malformed
    action never raises: the turn is consumed and the next observation shows the error.

    ## Observation Space
    ``Text`` (Basic Multilingual Plane charset). Append-only prompt: the header (query, tools,
    action format; ``prompt_style="compact"`` shows only the query and tool names), then per
    step ``### Step k``, the action as written, ``Result: <tool output or error>``.

    ## Rewards
    0.0 on every non-final step; on the final step the outcome score in [0, 1] (rule scorers in
    ``agentflow_env.rewards``: exact match, F1, math equivalence, multiple choice, Game of 24).

    ## Episode End
    ``terminated`` when the verifier says STOP (offline: the planner finishes); ``truncated`` at
    ``max_turns`` (the generator still answers and the answer is scored).

    ## Info
    Every step: ``turn``, ``tool_name``, ``tool_input``, ``tool_result``, ``error``, ``verifier``,
    ``timings``; final step also ``answer``, ``ground_truth``, ``score``, ``score_error``.

    ## Arguments
    ``family`` ("search", "math", "agentic", "science"), ``tasks`` (list of Task/dicts, or a path
    to the authors' JSON or JSONL), ``documents`` (corpus for Search_Tool), ``tools`` (names or Tool
    objects), ``max_turns`` (10), ``executor`` ("direct"|"llm"), ``verifier`` ("planner"|"llm"),
    ``generator`` ("planner"|"llm"), ``engine``/``<module>_engine`` (engine or spec string),
    ``query_analysis``, ``prompt_style`` ("full"|"compact"), ``seed`` and ``num_tasks`` and
    ``task_kwargs`` for the generated task set (e.g. ``{"hops": (1, 3)}``).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self, family: Family = "search", *, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self.family = family
        self.flow, self.tasks = build_flow(family, **kwargs)
        max_len = self.flow.max_observation_chars
        self.observation_space = text_space(max_len)
        self.action_space = text_space(max(max_len, 100_000))
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
        unknown = set(options) - {"task", "task_index"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; use 'task' or 'task_index'")
        if "task" in options:
            task = options["task"]
            return task if isinstance(task, Task) else Task.model_validate(task)
        if "task_index" in options:
            index = int(options["task_index"])
            if not 0 <= index < len(self.tasks):
                raise IndexError(
                    f"task_index {index} out of range: the task set has {len(self.tasks)} tasks"
                )
            return self.tasks[index]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

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
