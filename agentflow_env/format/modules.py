"""The shapes of the LLM modules' replies, as grammars a constrained engine enforces.

Each grammar is a Lark grammar in llguidance's dialect
(:class:`~agentflow_env.llm.constraints.Constraint` ``.lark``) of the form the module's prompt
asks for and its reader accepts, with every free-text part bounded in characters (a constraint
fixes the form, not the length: unbounded, a small model can write one field until
``max_tokens`` runs out and the reply is cut):

- :func:`executor_grammar`: an optional one-line analysis, then ``Generated Command:`` and a
  ```` ```python ```` block of one ``execution = tool.execute(...)`` call of the chosen tool,
  built from its card's inputs (:meth:`tools.base.ToolCard.json_schema`): required inputs
  first, then optional ones, in the schema's order; strings are Python string literals
  (escapes allowed), integers, numbers and booleans Python literals. Read by
  :mod:`agentflow_env.format.command`;
- :func:`verifier_grammar`: an optional one-line analysis, then ``Conclusion: STOP`` or
  ``Conclusion: CONTINUE``;
- :func:`generator_grammar`: optional reasoning, then ``<answer>...</answer>`` (one line);
- :func:`query_analysis_grammar`: the four labelled lines of :data:`QUERY_ANALYSIS_LABELS`, the
  tools line naming only the episode's tools.

Every text a grammar admits is read back by the module's reader without error (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentflow_env.format.labels import ANSWER_CLOSE, ANSWER_OPEN
from agentflow_env.llm.constraints import lark_literal

__all__ = [
    "GENERATED_COMMAND",
    "QUERY_ANALYSIS_LABELS",
    "executor_grammar",
    "generator_grammar",
    "query_analysis_grammar",
    "verifier_grammar",
]

GENERATED_COMMAND = "Generated Command:"
"""the label before the executor's command block (the reference's)"""
QUERY_ANALYSIS_LABELS = ("Summary", "Skills", "Relevant tools", "Considerations")
"""the query analysis's lines, in order (the reference asked for these four points)"""

# Python literals the executor may write for an input of each JSON Schema type.
# a string starts with a visible character: an empty or blank input is never a useful call
_STRING = r'"([^"\\\s]|\\["\\nt])([^"\\\n]|\\["\\nt]){0,%d}"'
_VALUES = {
    "integer": r"-?[0-9]{1,12}",
    "number": r"-?[0-9]{1,12}(\.[0-9]{1,8})?",
    "boolean": r"True|False",
}


def _check_bounds(**bounds: int) -> None:
    bad = {name: value for name, value in bounds.items() if value < 1}
    if bad:
        raise ValueError(f"every character bound must be >= 1, got {bad}")


def _input_terminal(prop: dict[str, Any], max_string_chars: int) -> str | None:
    """The regex of one input's literal, or None for a type a call cannot be built for."""
    kind = prop.get("type", "string")
    if kind == "string":
        return _STRING % (max_string_chars - 1)
    return _VALUES.get(kind) if isinstance(kind, str) else None


def executor_grammar(
    schema: dict[str, Any], *, max_analysis_chars: int = 160, max_string_chars: int = 240
) -> str | None:
    """The executor's reply for a tool whose inputs are the JSON Schema ``schema`` (a card's
    :meth:`~tools.base.ToolCard.json_schema`), or None when a call cannot be written from it
    (a required input of an array, object or unknown type: such a call stays unconstrained).

    Optional inputs of those types are left out of the grammar; inputs whose names are not
    Python identifiers are too (``tool.execute`` takes keyword arguments).

    Raises:
        ValueError: a bound below 1.
    """
    _check_bounds(max_analysis_chars=max_analysis_chars, max_string_chars=max_string_chars)
    properties: dict[str, Any] = dict(schema.get("properties") or {})
    required = [k for k in schema.get("required") or [] if k in properties]
    terminals: dict[str, str] = {}
    for key, prop in properties.items():
        regex = _input_terminal(prop if isinstance(prop, dict) else {}, max_string_chars)
        usable = regex is not None and key.isidentifier()
        if not usable and key in required:
            return None
        if usable:
            terminals[key] = regex  # type: ignore[assignment]
    if not terminals:
        return None
    order = [k for k in required if k in terminals] + [k for k in terminals if k not in required]
    lines, parts = [], []
    for n, key in enumerate(order):
        name = f"V{n}"
        lines.append(f"{name}: /{terminals[key]}/")
        first = not parts
        piece = f"{'' if first else lark_literal(', ') + ' '}{lark_literal(key + '=')} {name}"
        parts.append(piece if key in required or first else f"({piece})?")
    if order[0] not in required:  # no required input: the call may have no arguments at all
        parts[0] = f"({parts[0]})?"
    head = lark_literal(f"{GENERATED_COMMAND}\n```python\nexecution = tool.execute(")
    return "\n".join(
        [
            f'start: (ANALYSIS "\\n")? {head} {" ".join(parts)} ")\\n```"',
            f"ANALYSIS: /[^\\n`]{{1,{max_analysis_chars}}}/",
            *lines,
        ]
    )


def verifier_grammar(*, max_analysis_chars: int = 240) -> str:
    """The verifier's reply: an optional one-line analysis, then the conclusion line.

    Raises:
        ValueError: a bound below 1.
    """
    _check_bounds(max_analysis_chars=max_analysis_chars)
    # one terminal: as two, the analysis's regex would also take a line "Conclusion: STOP"
    return "\n".join(
        [
            "start: REPLY",
            f"REPLY: /([^\\n]{{1,{max_analysis_chars}}}\\n)?Conclusion: (STOP|CONTINUE)/",
        ]
    )


def generator_grammar(*, max_reasoning_chars: int = 200, max_answer_chars: int = 80) -> str:
    """The generator's reply: optional reasoning (no ``<``), then the answer tag on one line.

    Raises:
        ValueError: a bound below 1.
    """
    _check_bounds(max_reasoning_chars=max_reasoning_chars, max_answer_chars=max_answer_chars)
    return "\n".join(
        [
            f"start: REASONING? {lark_literal(ANSWER_OPEN)} ANSWER {lark_literal(ANSWER_CLOSE)}",
            f"REASONING: /[^<]{{1,{max_reasoning_chars}}}/",
            f"ANSWER: /[^<\\s][^<\\n]{{0,{max_answer_chars - 1}}}/",
        ]
    )


def query_analysis_grammar(tool_names: Sequence[str], *, max_line_chars: int = 110) -> str:
    """The query analysis: ``Summary:``, ``Skills:``, ``Relevant tools:`` (a comma-separated
    list of ``tool_names``, or ``None``) and ``Considerations:``, one line each.

    Raises:
        ValueError: a bound below 1, or a tool name that is blank or spans lines.
    """
    _check_bounds(max_line_chars=max_line_chars)
    names = list(dict.fromkeys(tool_names))
    for name in names:
        if not name.strip() or "\n" in name:
            raise ValueError(f"tool name {name!r} must be one non-blank line")
    tool = " | ".join(lark_literal(n) for n in names) if names else '"None"'
    summary, skills, tools, considerations = (lark_literal(f"{x}: ") for x in QUERY_ANALYSIS_LABELS)
    return "\n".join(
        [
            f'start: {summary} LINE "\\n" {skills} LINE "\\n" {tools} tools "\\n" '
            f"{considerations} LINE",
            'tools: "None" | TOOL (", " TOOL)*',
            f"TOOL: {tool}",
            f"LINE: /[^\\n]{{1,{max_line_chars}}}/",
        ]
    )
