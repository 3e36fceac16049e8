"""Prompts of the paper's LLM modules: executor, verifier, generator and query analyzer.

Written fresh; they ask for the same fields as the paper's modules. The planner's own text (its
observation layout and its action format) is owned by :mod:`agentflow_env.format`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentflow_env.format.labels import ANSWER_CLOSE, ANSWER_OPEN
from tools.base import ToolCard

__all__ = ["executor_prompt", "generator_prompt", "query_analysis_prompt", "verifier_prompt"]


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
        "Reason briefly, then end with the final answer alone inside "
        f"{ANSWER_OPEN}...{ANSWER_CLOSE}."
    )


def query_analysis_prompt(question: str, cards: Sequence[ToolCard]) -> str:
    """The optional query analyzer: what is asked, which skills and tools matter."""
    tools = ", ".join(c.name for c in cards)
    return (
        "Analyze the query before any tool is used: state what is being asked, the key "
        f"information needed, and which of these tools are relevant ({tools}) and why. Be brief."
        f"\n\nQuery: {question}"
    )
