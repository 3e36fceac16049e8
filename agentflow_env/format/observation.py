"""The planner's observation layout: every writer and every reader of it.

The observation is **append-only**: turn k+1's observation is turn k's observation followed by
the action exactly as written (truncated at ``max_action_chars``), the tool result and the next
step header. A learner can therefore score every turn of a trajectory with one forward pass over
the last observation plus the last action. Layout::

    <header>
    ### Step 1
    <action 1 as written>
    Result: <result 1>

    ### Step 2
    ...
    ### Step n                           (the open slot the planner writes into)

The header has two styles. ``compact`` (for tiny models, ~20 tokens of overhead)::

    Query: <question>
    Tools: <tool names>, Finish

``full``: an introduction, ``Query: <question>``, optionally ``Query analysis: <analysis>``,
``Available tools:`` and the tool cards, optionally ``You have at most N steps.``, then the
action-format instructions (:data:`ACTION_FORMAT`), parts separated by blank lines.

Writers: :func:`planner_header`, :func:`step_header`, :func:`step_block`. Readers:
:func:`split_observation` (question, query analysis, step limit, tool names, finished steps),
:func:`current_step` and :func:`last_result`. What the writers write reads back to what they were
given (the question and the analysis stripped), whatever the question, actions and results
contain, with two exceptions the layout cannot tell apart from its own text:

- an action is read up to its first ``\\nResult: ``: written actions
  (:mod:`~agentflow_env.format.action`) never contain it, model output may;
- step headers are found from the last one backwards, each the last header of its number that
  comes before a ``Result:`` line of its step, so a result may quote ``### Step k`` lines and
  ``Result:`` lines, but not a header of its own step's number followed by a ``Result:`` line
  (a quoted observation). In the full style a question must not contain a blank line followed by
  ``Query analysis:``.

An over-long observation (the env's ``max_observation_chars``) replaces the action and result of
its oldest steps with :data:`~agentflow_env.format.labels.OMITTED` (:func:`step_block` of it),
never the header: the readers read those steps as that text.

The third style, ``paper``, is the reference's layout, rebuilt each turn (not append-only); it is
owned by :mod:`agentflow_env.format.paper`, and :func:`split_observation`, :func:`current_step` and
:func:`last_result` read it too (its steps come back with their tool name, sub-goal and command
and an empty ``action``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

from agentflow_env.format.action import tool_action
from agentflow_env.format.labels import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    FIELD_LABELS,
    FINISH,
    OMITTED,
    PLANNER_STOP,
    RESULT_LABEL,
    STEP_LABEL,
)
from agentflow_env.format.paper import PaperView, read_paper_prompt
from tools.base import ToolCard

__all__ = [
    "ACTION_FORMAT",
    "CHAT_INTRO",
    "PLANNER_STOP",
    "ChatMessage",
    "ObservationView",
    "PromptStyle",
    "StepView",
    "action_message",
    "current_step",
    "example_step",
    "last_result",
    "omitted_step",
    "planner_header",
    "planner_messages",
    "prompt_message",
    "result_message",
    "split_observation",
    "step_block",
    "step_header",
]

PromptStyle = Literal["full", "compact", "paper"]
"""``full`` and ``compact``: append-only (this module); ``paper``: the reference's layout, rebuilt
each turn (:mod:`agentflow_env.format.paper`)"""

ROLE = "You are the planner of an agent that answers a query by calling tools, one step at a time."
INTRO = f"{ROLE} Each step's result is shown below it."
"""the full header's first part"""
QUERY_LABEL = "Query:"
QUERY_ANALYSIS_LABEL = "Query analysis:"
TOOLS_LABEL = "Tools:"
"""the compact header's tool list"""
AVAILABLE_TOOLS_LABEL = "Available tools:"
"""the full header's tool cards"""
_STEP_LIMIT = "You have at most {max_turns} steps."
_TOOL_LIST = "<one of: {tool_list}>"
ACTION_FORMAT = (
    "Write exactly one step in this format:\n"
    f"{FIELD_LABELS['justification']}: <why this step is the best next move>\n"
    f"{FIELD_LABELS['context']}: <facts from earlier steps that the tool needs, or None>\n"
    f"{FIELD_LABELS['sub_goal']}: <what this step must achieve>\n"
    f"{FIELD_LABELS['tool_name']}: {_TOOL_LIST}\n"
    f"{FIELD_LABELS['command']}: <the exact tool input>\n"
    f'When the answer is known, write "{FIELD_LABELS["tool_name"]}: {FINISH}" and the answer as '
    f"{ANSWER_OPEN}...{ANSWER_CLOSE}."
)
"""the full header's instructions; ``{tool_list}`` is filled with the tool names and Finish"""
_EXAMPLE = "For example, one step:\n{step}"
"""follows :data:`ACTION_FORMAT`: a step written by the action writers, from a tool's demo"""
_EXAMPLE_WHY = "The query needs this fact and no earlier step has found it."
CHAT_INTRO = f"{ROLE} After each step you receive its result."
"""the chat rendering's first system part (the text layout's is :data:`INTRO`)"""
_STEP_FIELDS = ("justification", "context", "sub_goal", "tool_name", "command")
_NEXT_STEP = "Write step {turn}: the lines {fields}."
"""ends every user message of an episode that goes on: the model's reply is that step. Naming
the fields here, right before the reply, is what made SmolLM2-135M-Instruct write them (first
steps of 8 generated search queries: 0/8 unparseable, against 6/8 with "Write step 1.")"""

ChatMessage = dict[str, str]
"""``{"role": "system" | "user" | "assistant", "content": ...}``, as chat templates take them"""

_PART = "\n\n"
"""separates the full header's parts, and ends every header and every step block"""
_RESULT_SEP = f"\n{RESULT_LABEL} "
_HEADER = re.compile(rf"^{re.escape(STEP_LABEL)} (\d{{1,9}})\n", re.MULTILINE)
_QUERY = re.compile(rf"^{re.escape(QUERY_LABEL)} ", re.MULTILINE)
_TOOLS_COMPACT = re.compile(rf"^{re.escape(TOOLS_LABEL)} (.*)$", re.MULTILINE)
_TOOLS_FULL = re.compile(
    re.escape(f"{FIELD_LABELS['tool_name']}: {_TOOL_LIST}").replace(
        re.escape("{tool_list}"), "([^>\n]*)"
    )
)
_MAX_TURNS = re.compile(
    re.escape(_PART + _STEP_LIMIT + _PART).replace(re.escape("{max_turns}"), r"(\d{1,9})")
)


# ----------------------------------------------------------------------------------- writers
def _tool_list(cards: Sequence[ToolCard]) -> str:
    for card in cards:
        name = card.name
        if not name.strip() or len(name.splitlines()) != 1 or "," in name or ">" in name:
            raise ValueError(
                f"tool name {name!r} cannot be listed in the observation: it must be one "
                "non-blank line without ',' or '>'"
            )
    return ", ".join([c.name for c in cards] + [FINISH])


def planner_header(
    question: str,
    cards: Sequence[ToolCard],
    style: PromptStyle = "full",
    query_analysis: str | None = None,
    max_turns: int | None = None,
) -> str:
    """The fixed part of every planner observation of one episode.

    Raises:
        ValueError: an unknown ``style``, or a tool name that cannot be listed (a line break,
            ``,`` or ``>`` in it).
    """
    tool_list = _tool_list(cards)
    if _check_style(style) == "compact":
        return f"{QUERY_LABEL} {question}\n{TOOLS_LABEL} {tool_list}{_PART}"
    parts = [INTRO, *_query_parts(question, query_analysis)]
    parts += _instructions(cards, tool_list, max_turns)
    return _PART.join(parts) + _PART


def _check_style(style: str) -> str:
    if style == "paper":
        raise ValueError(
            "the 'paper' style has no fixed header: its prompt is rebuilt each turn by "
            "agentflow_env.format.paper.paper_prompt"
        )
    if style not in ("full", "compact"):
        raise ValueError(
            f"unknown prompt style {style!r}; valid styles: 'full', 'compact', 'paper'"
        )
    return style


def _query_parts(question: str, query_analysis: str | None) -> list[str]:
    parts = [f"{QUERY_LABEL} {question}"]
    if query_analysis:
        parts.append(f"{QUERY_ANALYSIS_LABEL} {query_analysis}")
    return parts


def _instructions(cards: Sequence[ToolCard], tool_list: str, max_turns: int | None) -> list[str]:
    """The full style's tool cards, step limit, action format and example step."""
    parts = [f"{AVAILABLE_TOOLS_LABEL}\n" + "\n".join(card.render() for card in cards)]
    if max_turns is not None:
        parts.append(_STEP_LIMIT.format(max_turns=max_turns))
    parts.append(ACTION_FORMAT.format(tool_list=tool_list))
    example = example_step(cards)
    if example is not None:
        parts.append(_EXAMPLE.format(step=example))
    return parts


def example_step(cards: Sequence[ToolCard]) -> str | None:
    """One step calling the first tool that has a writable demo command (its description is the
    sub-goal), written by :func:`~agentflow_env.format.action.tool_action`; None without one.

    Instruct models copy a shown step's shape far more reliably than a described one.
    """
    for card in cards:
        for demo in card.demo_commands:
            goal = demo.description.strip() or f"run {card.name}"
            try:
                return tool_action(
                    card.name,
                    demo.command,
                    justification=_EXAMPLE_WHY,
                    context="None",
                    sub_goal=goal[:1].upper() + goal[1:],
                )
            except ValueError:  # a demo the action format cannot hold (e.g. a code fence)
                continue
    return None


def step_header(turn: int) -> str:
    """Opens the slot where the planner writes step ``turn`` (1-based)."""
    return f"{STEP_LABEL} {turn}\n"


def step_block(action_text: str, result: str) -> str:
    """What one executed step appends after its header (and before the next header)."""
    return f"{action_text}{_RESULT_SEP}{result}{_PART}"


def omitted_step(turn: int) -> str:
    """Step ``turn`` (header and block) with its action and result dropped, for an over-long
    observation."""
    return step_header(turn) + step_block(OMITTED, OMITTED)


# ------------------------------------------------------------------------------ chat writers
def planner_messages(
    question: str,
    cards: Sequence[ToolCard],
    style: PromptStyle = "full",
    query_analysis: str | None = None,
    max_turns: int | None = None,
) -> list[ChatMessage]:
    """The chat rendering's first two messages: system (role, tools, action format) and user
    (the query, its analysis, the cue for step 1). Same arguments and errors as
    :func:`planner_header`; the compact style's system message is its tool list only."""
    tool_list = _tool_list(cards)
    if _check_style(style) == "compact":
        system, query = f"{TOOLS_LABEL} {tool_list}", [f"{QUERY_LABEL} {question}"]
    else:
        system = _PART.join([CHAT_INTRO, *_instructions(cards, tool_list, max_turns)])
        query = _query_parts(question, query_analysis)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": _PART.join([*query, _next_step(1)])},
    ]


def _next_step(turn: int) -> str:
    labels = [FIELD_LABELS[key] for key in _STEP_FIELDS]
    return _NEXT_STEP.format(turn=turn, fields=", ".join(labels[:-1]) + " and " + labels[-1])


def action_message(action_text: str) -> ChatMessage:
    """The assistant message of one step: the action exactly as the env recorded it."""
    return {"role": "assistant", "content": action_text}


def prompt_message(prompt: str) -> ChatMessage:
    """A whole prompt as one user message (the paper style, whose prompt has no fixed header)."""
    return {"role": "user", "content": prompt}


def result_message(result: str, next_turn: int | None) -> ChatMessage:
    """The user message after a step: its result (or error), then the cue for step
    ``next_turn`` (None: the episode has ended)."""
    text = f"{RESULT_LABEL} {result}"
    if next_turn is not None:
        text += _PART + _next_step(next_turn)
    return {"role": "user", "content": text}


# ----------------------------------------------------------------------------------- readers
@dataclass
class StepView:
    """One finished step as it appears in the observation."""

    action: str
    result: str
    tool_name: str | None = None
    """the paper layout's steps only (its prompt shows fields, not the action as written)"""
    sub_goal: str | None = None
    command: str | None = None


@dataclass
class ObservationView:
    """The parts of a planner observation (see the module docstring for the layout)."""

    question: str
    tool_names: list[str]
    """tool names offered to the planner, without ``Finish``"""
    steps: list[StepView] = field(default_factory=list)
    """finished steps, oldest first"""
    query_analysis: str | None = None
    """the full header's query analysis, when it has one"""
    max_turns: int | None = None
    """the full header's step limit, when it states one"""
    first_turn: int = 1
    """the number of ``steps[0]`` (the paper layout may start later)"""

    @property
    def turn(self) -> int:
        """1-based index of the step the planner writes next."""
        return self.first_turn + len(self.steps)

    @property
    def last_result(self) -> str:
        return self.steps[-1].result if self.steps else ""


def _from_start(found: list[re.Match[str]]) -> list[re.Match[str]]:
    """Headers numbered 1, 2, 3, ... in order of appearance (for text that is not a layout)."""
    chain, expected = [], 1
    for match in found:
        if int(match.group(1)) == expected:
            chain.append(match)
            expected += 1
    return chain


def _from_end(text: str, found: list[re.Match[str]]) -> list[re.Match[str]] | None:
    """The last header, then for each smaller number the last header of that number that ends
    before the last ``Result:`` line preceding the header already chosen; None if that fails."""
    top = found[-1]
    number = int(top.group(1))
    if number < 1:
        return None
    seps = [m.start() for m in re.finditer(re.escape(_RESULT_SEP), text)]
    by_number: dict[int, list[re.Match[str]]] = {}
    for match in found[:-1]:
        by_number.setdefault(int(match.group(1)), []).append(match)
    chain = [top]
    for n in range(number - 1, 0, -1):
        i = bisect_right(seps, chain[-1].start() - len(_RESULT_SEP)) - 1
        candidates = by_number.get(n, [])
        k = bisect_right([m.end() for m in candidates], seps[i]) - 1 if i >= 0 else -1
        if k < 0:
            return None
        chain.append(candidates[k])
    return chain[::-1]


def _step_headers(text: str) -> list[re.Match[str]]:
    found = list(_HEADER.finditer(text))
    if not found:
        return []
    chain = _from_end(text, found)
    return chain if chain is not None else _from_start(found)


def _step(body: str) -> StepView:
    action, sep, result = body.partition(_RESULT_SEP)
    if result.endswith(_PART):
        result = result[: -len(_PART)]
    elif result.endswith("\n"):
        result = result[:-1]
    return StepView(action=action, result=result if sep else "")


def _names(tool_list: str) -> list[str]:
    names = [t.strip() for t in tool_list.split(",")]
    return [n for n in names if n and n.lower() != FINISH.lower()]


def _read_compact(head: str) -> ObservationView:
    start = len(QUERY_LABEL) + 1
    tools_at = head.rfind(f"\n{TOOLS_LABEL} ")  # the last one: a question may contain the label
    if tools_at < 0:  # not the full layout: the question is the rest of the line
        return ObservationView(question=head[start:].split("\n", 1)[0].strip(), tool_names=[])
    tools = head[tools_at + len(TOOLS_LABEL) + 2 :].split("\n", 1)[0]
    return ObservationView(question=head[start:tools_at].strip(), tool_names=_names(tools))


def _read_full(head: str) -> ObservationView:
    tools = list(_TOOLS_FULL.finditer(head)) or list(_TOOLS_COMPACT.finditer(head))
    tool_names = _names(tools[-1].group(1)) if tools else []
    query = _QUERY.search(head)
    if query is None:
        return ObservationView(question="", tool_names=tool_names)
    start = query.end()
    cards = head.rfind(f"{_PART}{AVAILABLE_TOOLS_LABEL}\n", start)
    analysis_at = head.find(f"{_PART}{QUERY_ANALYSIS_LABEL} ", start, None if cards < 0 else cards)
    end = analysis_at if analysis_at >= 0 else cards
    if end < 0:  # not the full layout: the question is the rest of the line
        end = head.find("\n", start)
        end = len(head) if end < 0 else end
    analysis = None
    if analysis_at >= 0:
        first = analysis_at + len(_PART) + len(QUERY_ANALYSIS_LABEL) + 1
        analysis = head[first : len(head) if cards < 0 else cards].strip()
    limits = list(_MAX_TURNS.finditer(head, max(cards, start)))
    return ObservationView(
        question=head[start:end].strip(),
        tool_names=tool_names,
        query_analysis=analysis,
        max_turns=int(limits[-1].group(1)) if limits else None,
    )


def split_observation(observation: str) -> ObservationView:
    """Split an observation into its header's parts and its finished steps.

    Never raises: a text that does not follow the layout yields what can be found (an empty
    question, no steps).
    """
    paper = read_paper_prompt(observation)
    if paper is not None:
        return _paper_view(paper)
    headers = _step_headers(observation)
    head = observation[: headers[0].start()] if headers else observation
    reader = _read_compact if head.startswith(f"{QUERY_LABEL} ") else _read_full
    view = reader(head)
    view.steps = [_step(observation[a.end() : b.start()]) for a, b in pairwise(headers)]
    return view


def _paper_view(paper: PaperView) -> ObservationView:
    steps = []
    for value in paper.steps.values():
        if not isinstance(value, dict):
            steps.append(StepView(action=str(value), result=str(value)))
            continue
        command = value.get("command")
        steps.append(
            StepView(
                action="",
                result=str(value.get("result", "")),
                tool_name=value.get("tool_name"),
                sub_goal=value.get("sub_goal"),
                command=None if command is None else str(command),
            )
        )
    numbers = paper.step_numbers
    return ObservationView(
        question=paper.question,
        tool_names=list(paper.tool_names),
        steps=steps,
        query_analysis=paper.query_analysis,
        first_turn=numbers[0] if numbers else 1,
    )


def current_step(observation: str) -> int | None:
    """The number of the step the observation asks for (its last step header, or the paper
    layout's next step), or None."""
    paper = read_paper_prompt(observation or "")
    if paper is not None:
        return _paper_view(paper).turn
    headers = _step_headers(observation or "")
    return len(headers) if headers else None


def last_result(observation: str) -> str | None:
    """The result of the last finished step, or None before the first."""
    steps = split_observation(observation or "").steps
    return steps[-1].result if steps else None
