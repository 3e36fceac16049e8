"""Scripted planners: policies without a model, for tests, baselines and SFT demonstrations.

They write actions with the writers of :mod:`agentflow_env.format.action`::

    Justification: <why this step>          (omitted when verbose=False)
    Context: <facts the tool needs, or None> (omitted when verbose=False)
    Sub-Goal: <what this step achieves>
    Tool Name: <Search_Tool | Python_Coder_Tool | Finish>
    Command: <exact tool input>

and finish with ``Tool Name: Finish`` followed by ``<answer>...</answer>``. They read the step to
write and the last result with the readers of :mod:`agentflow_env.format.observation`, and search
hits with :mod:`tools.search.format`.

- :class:`OraclePlanner` follows the solution stored in ``Task.metadata`` (one search per hop,
  one Python call where the task needs computation, then the answer).
- :class:`RandomToolPlanner` calls random tools with the question, then guesses.
- :class:`SearchThenAnswerPlanner` searches the question and answers the first hit's title.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from agentflow_env.format import current_step, finish_action, last_result, tool_action
from agentflow_env.tasks.base import Task
from tools.search.format import first_hit_title

__all__ = [
    "ScriptedPlanner",
    "OraclePlanner",
    "RandomToolPlanner",
    "SearchThenAnswerPlanner",
    "get_scripted_planner",
    "SCRIPTED_PLANNERS",
]

SEARCH_TOOL = "Search_Tool"
PYTHON_TOOL = "Python_Coder_Tool"
_FINAL_GOAL = "Give the final answer."


@runtime_checkable
class ScriptedPlanner(Protocol):
    """A policy over the env's text interface: ``reset`` with the task, then ``act`` per turn."""

    name: str

    def reset(self, task: Task) -> None:
        """Start an episode of ``task`` (forget the previous one)."""

    def act(self, observation: str) -> str:
        """The next action text for the current observation."""


def _act(
    tool_name: str,
    command: str,
    sub_goal: str,
    *,
    justification: str = "",
    context: str = "",
    verbose: bool = True,
) -> str:
    """A tool call; ``verbose`` adds the justification (default: the sub-goal) and context."""
    if not verbose:
        return tool_action(tool_name, command, sub_goal=sub_goal)
    return tool_action(
        tool_name,
        command,
        sub_goal=sub_goal,
        justification=justification or sub_goal,
        context=context or "None",
    )


def _finish(
    answer: str, *, justification: str = "", context: str = "", verbose: bool = True
) -> str:
    """The final answer; ``verbose`` adds the justification and context."""
    if not verbose:
        return finish_action(answer, sub_goal=_FINAL_GOAL)
    return finish_action(
        answer,
        sub_goal=_FINAL_GOAL,
        justification=justification or "The steps so far determine the answer.",
        context=context or "None",
    )


def _one_line(question: str) -> str:
    """The question as a command: its line breaks become spaces (a multi-line command would be
    fenced, and a fenced command cannot hold the code fences some questions quote)."""
    return " ".join(question.splitlines())


def _python_command(code: str) -> str:
    return f"print({code})"


def _oracle_plan(task: Task, verbose: bool) -> list[str]:
    """All actions of the oracle for ``task``: searches, an optional computation, the answer."""
    meta = task.metadata
    path = meta.get("path") or []
    actions: list[str] = []
    known: list[str] = []
    for hop in path:
        goal = hop.get("goal") or f"Search for {hop['query']}."
        actions.append(
            _act(
                SEARCH_TOOL,
                hop["query"],
                goal,
                verbose=verbose,
                justification=f"The document about {hop['entity']} states this fact.",
                context="; ".join(known),
            )
        )
        known.append(f"{hop['query']}: {hop['answer']}")
    code = meta.get("expression")
    if code is None and task.scorer == "game24":
        code = str(meta.get("solution") or task.answer).replace("×", "*").replace("÷", "/")
    if code is not None:
        actions.append(
            _act(
                PYTHON_TOOL,
                _python_command(code),
                "Compute the answer exactly.",
                verbose=verbose,
                justification="The answer needs an exact computation over the known numbers.",
                context="; ".join(known),
            )
        )
    answer = (
        meta.get("solution") if task.scorer == "game24" and meta.get("solution") else task.answer
    )
    actions.append(
        _finish(
            str(answer),
            verbose=verbose,
            context="; ".join(known),
            justification="The previous steps give the answer.",
        )
    )
    return actions


class OraclePlanner:
    """Follows the task's stored solution; solves every generated task of the four families.

    Search hops come from ``metadata["path"]`` (``{"query", "entity", "answer"}`` each), the
    computation from ``metadata["expression"]`` (or the Game of 24 ``solution``), run as
    ``print(...)`` with ``Python_Coder_Tool``. Tasks without a stored solution (e.g. loaded
    benchmarks) are answered directly with ``task.answer``. The step to write is read from the
    observation's last ``### Step k`` header (an internal counter when there is none), and once
    the plan is used up the oracle keeps finishing.
    """

    name = "oracle"

    def __init__(self, verbose: bool = True) -> None:
        self.verbose = verbose
        self._plan: list[str] = []
        self._turn = 0

    def reset(self, task: Task) -> None:
        """Plan the whole episode from ``task.metadata``."""
        self._plan = _oracle_plan(task, self.verbose)
        self._turn = 0

    def act(self, observation: str) -> str:
        """The planned action for the step the observation asks for."""
        if not self._plan:
            raise RuntimeError("call reset(task) before act()")
        self._turn += 1
        step = current_step(observation) or self._turn
        return self._plan[min(step, len(self._plan)) - 1]


class RandomToolPlanner:
    """Baseline: ``0..max_steps`` random tool calls with the question as the command, then a
    random guess (a letter for multiple choice, a number for math, a capitalized phrase from
    the latest result otherwise). One ``random.Random(seed)`` drives all episodes, so a planner
    built with the same seed replays the same actions for the same sequence of episodes;
    :meth:`reseed` restarts the stream. The step is read from the observation's last
    ``### Step k`` header (an internal counter when there is none)."""

    name = "random-tool"

    def __init__(
        self,
        tool_names: Sequence[str] = (SEARCH_TOOL, PYTHON_TOOL),
        seed: int = 0,
        max_steps: int = 3,
        verbose: bool = True,
    ) -> None:
        if isinstance(tool_names, str) or not tool_names:
            raise ValueError("tool_names must be a non-empty sequence of tool names")
        if max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {max_steps}")
        self.tool_names = list(tool_names)
        self.rng = random.Random(seed)
        self.max_steps = max_steps
        self.verbose = verbose
        self._task: Task | None = None
        self._steps = 0
        self._done = 0

    def reset(self, task: Task) -> None:
        """Start an episode: draw how many tool calls come before the guess."""
        self._task = task
        self._steps = self.rng.randint(0, self.max_steps)
        self._done = 0

    def reseed(self, seed: int) -> None:
        """Restart the random stream from ``seed`` (the episode's tool-call count is kept)."""
        self.rng = random.Random(seed)

    def _guess(self, observation: str) -> str:
        task = self._task
        if task is None:
            raise RuntimeError("call reset(task) before act()")
        if task.choices:
            return "ABCDEFGHIJ"[self.rng.randrange(min(len(task.choices), 10))]
        if task.scorer in ("math", "game24"):
            return str(self.rng.randint(0, 100))
        # Prefer names from the latest tool result over words of the prompt header.
        source = last_result(observation) or observation[-4000:]
        phrases = re.findall(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*", source[:4000]) or ["unknown"]
        return self.rng.choice(phrases)

    def act(self, observation: str) -> str:
        """A random tool call with the question as the command, or the final guess."""
        if self._task is None:
            raise RuntimeError("call reset(task) before act()")
        self._done += 1
        # The step comes from the observation when it shows one, so asking several times for
        # the same observation (e.g. to sample candidate actions) does not advance the episode.
        if (current_step(observation) or self._done) > self._steps:
            return _finish(
                self._guess(observation), verbose=self.verbose, justification="Guessing an answer."
            )
        tool = self.rng.choice(self.tool_names)
        return _act(
            tool,
            _one_line(self._task.question),
            f"Try {tool} on the question.",
            verbose=self.verbose,
            justification="A random tool might help.",
        )


class SearchThenAnswerPlanner:
    """Baseline: search the question once, then answer the title of the first hit.

    Works with any search tool output that lists titled passages (``Doc 1 (Title: X) ...``,
    ``[1] X: ...``, ``Article 1: X``); answers ``unknown`` when no title can be read.
    """

    name = "search-then-answer"

    def __init__(self, tool_name: str = SEARCH_TOOL, verbose: bool = True) -> None:
        self.tool_name = tool_name
        self.verbose = verbose
        self._task: Task | None = None
        self._turn = 0

    def reset(self, task: Task) -> None:
        """Start an episode of ``task``."""
        self._task = task
        self._turn = 0

    def act(self, observation: str) -> str:
        """Step 1: search the question; later: answer the first hit's title."""
        if self._task is None:
            raise RuntimeError("call reset(task) before act()")
        self._turn += 1
        step = current_step(observation) or self._turn
        if step <= 1:
            return _act(
                self.tool_name,
                _one_line(self._task.question),
                "Find passages about the question.",
                verbose=self.verbose,
                justification="The answer is probably in the top search result.",
            )
        title = first_hit_title(last_result(observation) or "")
        return _finish(
            title or "unknown",
            verbose=self.verbose,
            justification="Answering with the title of the first search hit.",
        )


SCRIPTED_PLANNERS: dict[str, type[Any]] = {
    "oracle": OraclePlanner,
    "random-tool": RandomToolPlanner,
    "search-then-answer": SearchThenAnswerPlanner,
}
"""name -> planner class"""


def get_scripted_planner(name: str, **kwargs: Any) -> ScriptedPlanner:
    """Build a scripted planner by name (``oracle``, ``random-tool``, ``search-then-answer``).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    cls = SCRIPTED_PLANNERS.get(name)
    if cls is None:
        raise ValueError(
            f"unknown scripted planner {name!r}; valid names: {sorted(SCRIPTED_PLANNERS)}"
        )
    return cls(**kwargs)
