"""Prompt templates: the planner's observation and the LLM modules' prompts.

The planner's observation is **append-only**: turn k+1's observation is turn k's observation
followed by the action exactly as written (truncated at ``max_action_chars``), the tool result
and the next step header. A learner can therefore score every turn of a trajectory with one
forward pass over the last observation plus the last action.

Layout::

    <header: query, (query analysis), tools, action format>
    ### Step 1
    <action 1>
    Result: <result 1>

    ### Step 2
    ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tools.base import ToolCard

__all__ = ["PromptStyle", "planner_header", "step_header", "step_block", "ACTION_FORMAT"]

PromptStyle = Literal["full", "compact"]

ACTION_FORMAT = """\
Write exactly one step in this format:
Justification: <why this step is the best next move>
Context: <facts from earlier steps that the tool needs, or None>
Sub-Goal: <what this step must achieve>
Tool Name: <one of: {tool_list}>
Command: <the exact tool input>
When the answer is known, write "Tool Name: Finish" and the answer as <answer>...</answer>."""


def _tool_list(cards: Sequence[ToolCard]) -> str:
    return ", ".join([c.name for c in cards] + ["Finish"])


def planner_header(
    question: str,
    cards: Sequence[ToolCard],
    style: PromptStyle = "full",
    query_analysis: str | None = None,
    max_turns: int | None = None,
) -> str:
    """The fixed part of every planner observation of one episode."""
    if style == "compact":
        # For tiny models: the question and the tool names only (~20 tokens of overhead).
        return f"Query: {question}\nTools: {_tool_list(cards)}\n\n"
    parts = [
        "You are the planner of an agent that answers a query by calling tools, one step at a "
        "time. Each step's result is shown below it.",
        f"Query: {question}",
    ]
    if query_analysis:
        parts.append(f"Query analysis: {query_analysis}")
    parts.append("Available tools:\n" + "\n".join(card.render() for card in cards))
    if max_turns is not None:
        parts.append(f"You have at most {max_turns} steps.")
    parts.append(ACTION_FORMAT.format(tool_list=_tool_list(cards)))
    return "\n\n".join(parts) + "\n\n"


def step_header(turn: int) -> str:
    """Opens the slot where the planner writes step ``turn`` (1-based)."""
    return f"### Step {turn}\n"


def step_block(action_text: str, result: str) -> str:
    """What one executed step appends after its header (and before the next header)."""
    return f"{action_text}\nResult: {result}\n\n"


# ------------------------------------------------------------------ LLM module prompts (paper mode)
# Written fresh; they ask for the same fields as the paper's modules.


def executor_prompt(question: str, action: object, card: ToolCard, memory_text: str) -> str:
    """The executor turns the planner's sub-goal into one concrete call of ``card``'s tool."""
    sub_goal = getattr(action, "sub_goal", "")
    context = getattr(action, "context", "")
    command = getattr(action, "command", None)
    hint = f"\nPlanner's suggested command: {command}" if command else ""
    return (
        "You are the executor of a tool-using agent. Write the single tool call that achieves "
        "the sub-goal.\n\n"
        f"Query: {question}\n"
        f"Sub-Goal: {sub_goal}\n"
        f"Context: {context or 'None'}{hint}\n\n"
        f"{card.render()}\n\n"
        f"Earlier steps:\n{memory_text}\n\n"
        "Answer with a short analysis, then one line of Python in exactly this form, using the "
        "tool's input names as keyword arguments:\n"
        "Command: execution = tool.execute(" + f'{card.primary_input}="...")'
    )


def verifier_prompt(question: str, memory_text: str) -> str:
    """The verifier decides whether the memory already answers the query."""
    return (
        "You are the verifier of a tool-using agent. Decide whether the steps so far contain "
        "enough verified information to answer the query completely.\n\n"
        f"Query: {question}\n\n"
        f"Steps so far:\n{memory_text}\n\n"
        "Write a short analysis (what is known, what is missing, any contradictions), then the "
        "last line exactly 'Conclusion: STOP' if the query can be answered now, or "
        "'Conclusion: CONTINUE' if more steps are needed."
    )


def generator_prompt(question: str, memory_text: str) -> str:
    """The generator writes the final answer from query + memory (the paper's 'direct' output)."""
    return (
        "You are the answer generator of a tool-using agent. Using the steps below, answer the "
        "query concisely.\n\n"
        f"Query: {question}\n\n"
        f"Steps:\n{memory_text}\n\n"
        "Reason briefly, then end with the final answer alone inside <answer>...</answer>."
    )


def query_analysis_prompt(question: str, cards: Sequence[ToolCard]) -> str:
    """The optional query analyzer: what is asked, which skills and tools matter."""
    tools = ", ".join(c.name for c in cards)
    return (
        "Analyze the query before any tool is used: state what is being asked, the key "
        f"information needed, and which of these tools are relevant ({tools}) and why. Be brief."
        f"\n\nQuery: {question}"
    )
