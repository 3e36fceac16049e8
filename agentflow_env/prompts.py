"""Prompts of the paper's LLM modules: executor, verifier, generator and query analyzer.

Written fresh; they ask for the same fields as the paper's modules. The planner's own text (its
observation layout and its action format) is owned by :mod:`agentflow_env.format`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agentflow_env.format.labels import ANSWER_CLOSE, ANSWER_OPEN
from agentflow_env.format.modules import QUERY_ANALYSIS_LABELS
from tools.base import ToolCard, execute_call

__all__ = [
    "EXECUTOR_TASK",
    "GENERATOR_TASK",
    "VERIFIER_TASK",
    "executor_prompt",
    "generator_prompt",
    "query_analysis_prompt",
    "verifier_prompt",
]

EXECUTOR_TASK = "You are the executor of a tool-using agent."
"""opens the executor's prompt (its tool's card follows)"""
VERIFIER_TASK = "Your task: you are the verifier."
"""opens the verifier's own part, after the opening it shares with the generator"""
GENERATOR_TASK = "Your task: you are the answer generator."
"""opens the generator's own part, after the opening it shares with the verifier"""


def _analysis_line(query_analysis: str | None) -> str:
    return f"Query analysis: {query_analysis.strip()}\n" if query_analysis else ""


def executor_prompt(
    question: str,
    action: object,
    card: ToolCard,
    memory_text: str,
    query_analysis: str | None = None,
) -> str:
    """The executor turns the planner's sub-goal into concrete calls of ``card``'s tool: one or
    more ``execution = tool.execute(...)`` lines in a fenced block, literal values only (read by
    :mod:`agentflow_env.format.command`, never executed)."""
    sub_goal = getattr(action, "sub_goal", "")
    context = getattr(action, "context", "")
    command = getattr(action, "command", None)
    example = execute_call({card.primary_input: "..."})
    demos = "".join(f"\n  {card.demo_call(d)}" for d in card.demo_commands)
    # The tool's card, its demo calls and the instructions come first and this step's own text
    # last: a small model copies the most recent concrete text it saw, which must be the
    # planner's command, not a demo. The opening is the same for every call of the tool, and an
    # episode's later prompts extend its earlier ones up to the sub-goal, so an engine's prefix
    # cache skips most of the prefill (agentflow_env.llm.prefix_cache).
    # The planner's command as a call of the tool's main input: the shape the reply must take,
    # so a small model copying the nearest call copies this one (not a demo's query). The
    # executor may still change it.
    hint = (
        f"Planner's suggested call: {execute_call({card.primary_input: command})}\n"
        if command
        else ""
    )
    return (
        f"{EXECUTOR_TASK} Write the tool call(s) that achieve the sub-goal.\n\n"
        f"{card.render()}\n"
        f"Inputs as JSON Schema: {json.dumps(card.json_schema(), ensure_ascii=False)}"
        + (f"\nExample calls (other queries):{demos}" if demos else "")
        + "\n\nAnswer with a short analysis, then 'Generated Command:' and a ```python block "
        f"holding one line per call, each exactly of the form {example} with the tool's input "
        "names as keyword arguments. Write the exact values (strings, numbers, lists); you may "
        "assign literal values to variables first. Nothing else in the block is run: no "
        "imports, loops or other functions.\n\n"
        f"Query: {question}\n"
        f"{_analysis_line(query_analysis)}"
        f"\nEarlier steps:\n{memory_text}\n\n"
        f"Sub-Goal: {sub_goal}\n"
        f"Context: {context or 'None'}\n"
        f"{hint}"
    )


def _episode_context(
    question: str, memory_text: str, cards: Sequence[ToolCard], query_analysis: str | None
) -> str:
    """The opening the verifier's and the generator's prompts share: the tools (the same in every
    episode), then the query and the steps (an episode's later steps extend its earlier ones).
    Shared, it is prefilled once: the generator's prompt reuses the last verifier prompt's whole
    opening, and a verifier prompt its episode's previous one (an engine's prefix cache,
    :mod:`agentflow_env.llm.prefix_cache`). The module's own task comes after it."""
    tools = ""
    if cards:
        metadata = json.dumps(
            {c.name: c.metadata() for c in cards}, ensure_ascii=False, default=str
        )
        tools = (
            f"Available tools: {', '.join(c.name for c in cards)}\nTool metadata: {metadata}\n\n"
        )
    return (
        "You are one module of a tool-using agent. Its tools, the query and the steps taken so "
        "far follow; your task comes after them.\n\n"
        f"{tools}"
        f"Query: {question}\n"
        f"{_analysis_line(query_analysis)}"
        f"\nSteps so far:\n{memory_text}\n\n"
    )


def verifier_prompt(
    question: str,
    memory_text: str,
    cards: Sequence[ToolCard] = (),
    query_analysis: str | None = None,
) -> str:
    """The verifier decides whether the memory already answers the query; like the reference's,
    it reads the available tools, their metadata and the query analysis."""
    return _episode_context(question, memory_text, cards, query_analysis) + (
        f"{VERIFIER_TASK} Decide whether the steps so far contain enough verified information to "
        "answer the query completely. Check: does the memory answer every part of the query? "
        "Are there contradictions, ambiguities or facts a tool's limitations make doubtful? "
        "Could an unused tool supply what is missing? Write a short analysis, then the last "
        "line exactly 'Conclusion: STOP' if the query can be answered now, or 'Conclusion: "
        "CONTINUE' if more steps are needed."
    )


def generator_prompt(
    question: str,
    memory_text: str,
    cards: Sequence[ToolCard] = (),
    query_analysis: str | None = None,
) -> str:
    """The generator writes the final answer from query + memory (the paper's 'direct' output).
    It opens as the verifier's prompt does (the tools it is given only make that opening
    shared)."""
    return _episode_context(question, memory_text, cards, query_analysis) + (
        f"{GENERATOR_TASK} Using the steps above, answer the query concisely. Reason briefly, "
        f"then end with the final answer alone inside {ANSWER_OPEN}...{ANSWER_CLOSE}."
    )


def query_analysis_prompt(question: str, cards: Sequence[ToolCard]) -> str:
    """The optional query analyzer: what is asked, which skills and tools matter (it reads the
    tools' metadata, as the reference's does)."""
    tools = ", ".join(c.name for c in cards)
    metadata = json.dumps({c.name: c.metadata() for c in cards}, ensure_ascii=False, default=str)
    lines = "\n".join(f"{label}: ..." for label in QUERY_ANALYSIS_LABELS)
    return (
        "Analyze the query before any tool is used: state what is being asked, the key "
        f"information needed, and which of these tools are relevant ({tools}) and why. Be brief: "
        f"one line each, in this form:\n{lines}"
        f"\n\nQuery: {question}\nTool metadata: {metadata}"
    )
