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

__all__ = ["executor_prompt", "generator_prompt", "query_analysis_prompt", "verifier_prompt"]


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
    hint = f"Planner's suggested command: {command}\n" if command else ""
    return (
        "You are the executor of a tool-using agent. Write the tool call(s) that achieve the "
        "sub-goal.\n\n"
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


def verifier_prompt(
    question: str,
    memory_text: str,
    cards: Sequence[ToolCard] = (),
    query_analysis: str | None = None,
) -> str:
    """The verifier decides whether the memory already answers the query; like the reference's,
    it reads the available tools, their metadata and the query analysis."""
    tools = ""
    if cards:
        metadata = json.dumps(
            {c.name: c.metadata() for c in cards}, ensure_ascii=False, default=str
        )
        tools = f"Available tools: {', '.join(c.name for c in cards)}\nTool metadata: {metadata}\n"
    # the tools first, then the query and the steps: every verifier prompt opens the same way
    # and an episode's later ones extend its earlier ones (an engine's prefix cache reuses both)
    return (
        "You are the verifier of a tool-using agent. Decide whether the steps so far contain "
        "enough verified information to answer the query completely.\n\n"
        f"{tools}\n"
        f"Query: {question}\n"
        f"{_analysis_line(query_analysis)}"
        f"\nSteps so far:\n{memory_text}\n\n"
        "Check: does the memory answer every part of the query? Are there contradictions, "
        "ambiguities or facts a tool's limitations make doubtful? Could an unused tool supply "
        "what is missing? Write a short analysis, then the last line exactly 'Conclusion: STOP' "
        "if the query can be answered now, or 'Conclusion: CONTINUE' if more steps are needed."
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
