"""The ``paper`` planner layout: the reference's prompt, rebuilt from memory every turn.

The reference planner (and the released ``agentflow-planner-7b``, trained on it) reads one
prompt per turn laid out as below; the tool list, tool metadata and previous steps are Python
literals (``repr``), each on one line, as the reference put its Python objects in its prompt::

    Task: <what to decide>

    Context:
    - **Query:** <question>
    - **Query Analysis:** <analysis, or None>
    - **Available Tools:** ['Tool_A', 'Tool_B']
    - **Toolbox Metadata:** {'Tool_A': {'tool_name': ..., 'demo_commands': [...], ...}, ...}
    - **Previous Steps:** {'Action Step 1': {'tool_name': ..., 'sub_goal': ..., 'command': ...,
      'result': ...}, ...}

    Instructions: ...
    Response Format: the numbered fields Justification, Context, Sub-Goal, Tool Name
    Rules: ...

The wording is this project's; the sections, their order, the field names and the literal
encodings are the reference's. The prompt is **not append-only**: each turn's prompt is a new
text (a learner trains on per-turn samples there). An over-long prompt replaces its oldest
previous steps with :data:`~agentflow_env.format.labels.OMITTED`, never the query.

Writer: :func:`paper_prompt`; reader: :func:`read_paper_prompt`. What the writer writes reads back
(question and analysis stripped, an analysis of ``None`` read as absent), except when the question
contains a line starting with ``- **Query Analysis:** ``.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentflow_env.format.labels import ANSWER_CLOSE, ANSWER_OPEN, FIELD_LABELS, FINISH
from tools.base import ToolCard

__all__ = [
    "PAPER_TASK",
    "PaperView",
    "paper_prompt",
    "read_paper_prompt",
    "toolbox_metadata",
    "tools_lines",
]

PAPER_TASK = (
    "Task: Decide the single most useful next step toward answering the query, given the "
    "available tools and the steps already taken."
)
"""the first line of every paper-layout prompt (readers recognise the layout by it)"""
_QUERY = "\n- **Query:** "
_ANALYSIS = "\n- **Query Analysis:** "
_TOOLS = "\n- **Available Tools:** "
_METADATA = "\n- **Toolbox Metadata:** "
_STEPS = "\n- **Previous Steps:** "
_NO_ANALYSIS = "None"
_F = FIELD_LABELS
_INSTRUCTIONS = (
    "Instructions:\n"
    "1. Read the query, its analysis, the previous steps and what each tool can do.\n"
    "2. Pick the **one tool** whose next call makes the most progress.\n"
    "3. Give that tool a concrete **sub-goal** it can reach in one call.\n"
    "4. Put every fact the tool needs (values, names, results of earlier steps) in the "
    "**context**.\n\n"
    "Response Format:\n"
    f"1.  **{_F['justification']}:** why this tool and this sub-goal.\n"
    f"2.  **{_F['context']}:** everything the tool needs to know.\n"
    f"3.  **{_F['sub_goal']}:** the precise objective for the tool.\n"
    f"4.  **{_F['tool_name']}:** the exact name of one available tool.\n\n"
    "Rules:\n"
    "- Choose exactly ONE tool.\n"
    "- The sub-goal must be something the chosen tool can do in one call.\n"
    "- The context must hold all the information the tool needs.\n"
)
_FINISH_RULE = (
    f"- When the previous steps already answer the query, write {_F['tool_name']}: {FINISH} "
    f"and the answer as {ANSWER_OPEN}...{ANSWER_CLOSE}.\n"
)
_LAST_RULE = (
    f"- End with the {_F['context']}, {_F['sub_goal']} and {_F['tool_name']} fields, in that "
    "order, and write nothing after them."
)


def toolbox_metadata(cards: Sequence[ToolCard]) -> dict[str, dict[str, Any]]:
    """Tool name -> the card's reference-style metadata (:meth:`ToolCard.metadata`)."""
    return {card.name: card.metadata() for card in cards}


def paper_prompt(
    question: str,
    cards: Sequence[ToolCard],
    steps: Mapping[str, Any],
    query_analysis: str | None = None,
    *,
    finish_rule: bool = False,
    tools_text: tuple[str, str] | None = None,
) -> str:
    """One turn's planner prompt.

    Args:
        steps: the previous steps, as :meth:`agentflow_env.memory.Memory.actions` gives them.
        finish_rule: add the rule that a planner finishes itself (``Tool Name: Finish`` and an
            ``<answer>``): for envs whose verifier stops on the planner's finish; the reference's
            planner never finishes (its verifier decides).
        tools_text: the ``(tool list, metadata)`` lines precomputed by :func:`tools_lines`
            (they are the same every turn of an env).
    """
    names, metadata = tools_text if tools_text is not None else tools_lines(cards)
    analysis = query_analysis.strip() if query_analysis and query_analysis.strip() else None
    context = (
        f"Context:{_QUERY}{question}{_ANALYSIS}{analysis or _NO_ANALYSIS}"
        f"{_TOOLS}{names}{_METADATA}{metadata}{_STEPS}{dict(steps)!r}"
    )
    rules = _INSTRUCTIONS + (_FINISH_RULE if finish_rule else "") + _LAST_RULE
    return f"{PAPER_TASK}\n\n{context}\n\n{rules}\n"


def tools_lines(cards: Sequence[ToolCard]) -> tuple[str, str]:
    """The Available Tools and Toolbox Metadata values (Python literals on one line each)."""
    return repr([c.name for c in cards]), repr(toolbox_metadata(cards))


@dataclass
class PaperView:
    """The parts of a paper-layout prompt."""

    question: str
    query_analysis: str | None
    tool_names: list[str]
    steps: dict[str, Any] = field(default_factory=dict)
    """``{"Action Step k": {...} or OMITTED}``, oldest first"""

    @property
    def step_numbers(self) -> list[int]:
        numbers = []
        for key in self.steps:
            tail = str(key).rsplit(" ", 1)[-1]
            if tail.isdigit():
                numbers.append(int(tail))
        return numbers


def _literal_line(text: str, start: int) -> Any:
    end = text.find("\n", start)
    try:
        return ast.literal_eval(text[start : len(text) if end < 0 else end])
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None


def read_paper_prompt(text: str) -> PaperView | None:
    """Read a paper-layout prompt; None when ``text`` is not one. Never raises."""
    if not text.startswith(PAPER_TASK):
        return None
    query_at = text.find(_QUERY)
    steps_at = text.rfind(_STEPS)
    metadata_at = text.rfind(_METADATA, 0, max(steps_at, 0))
    tools_at = text.rfind(_TOOLS, 0, max(metadata_at, 0))
    if min(query_at, steps_at, metadata_at, tools_at) < 0:
        return None
    start = query_at + len(_QUERY)
    analysis_at = text.find(_ANALYSIS, start, tools_at)
    if analysis_at < 0:
        return None
    analysis = text[analysis_at + len(_ANALYSIS) : tools_at].strip()
    names = _literal_line(text, tools_at + len(_TOOLS))
    steps = _literal_line(text, steps_at + len(_STEPS))
    return PaperView(
        question=text[start:analysis_at].strip(),
        query_analysis=None if analysis in ("", _NO_ANALYSIS) else analysis,
        tool_names=[str(n) for n in names] if isinstance(names, list) else [],
        steps=steps if isinstance(steps, dict) else {},
    )
