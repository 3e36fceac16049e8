"""Planner-action parser.

The planner writes the paper's four fields, in any order, with case-insensitive labels and
optional markdown bold::

    Justification: why this step
    Context: facts from earlier steps the tool needs
    Sub-Goal: what this step achieves
    Tool Name: Search_Tool
    Command: the exact tool input (optional; may span lines or be a fenced code block)

It finishes with ``Tool Name: Finish`` and the answer in ``<answer>...</answer>``; an
``<answer>`` tag alone also finishes. Parsing never raises on model output: it returns a
:class:`PlannerAction` whose ``error`` says what was wrong, so the environment can show the error
to the policy and consume the turn.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from difflib import get_close_matches

from pydantic import BaseModel

from tools.base import normalize_tool_name

__all__ = ["PlannerAction", "parse_action", "FINISH", "strip_code_fence"]

FINISH = "Finish"
_FIELDS = {
    "justification": "justification",
    "context": "context",
    "subgoal": "sub_goal",
    "toolname": "tool_name",
    "tool": "tool_name",
    "command": "command",
}
# A label at the start of a line: optional list marker / bold / heading, then the label, then ':'.
_LABEL = re.compile(
    r"^[ \t>#*\-]*\**[ \t]*(justification|context|sub[ \t_\-]?goal|tool[ \t_\-]?name|tool|command)"
    r"[ \t]*\**[ \t]*:[ \t]*\**",
    re.IGNORECASE | re.MULTILINE,
)
_LABEL_JUNK = re.compile(r"[ \t_\-]")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)```", re.IGNORECASE | re.DOTALL)
_FENCED = re.compile(r"```.*?(?:```|$)", re.DOTALL)


class PlannerAction(BaseModel):
    """One parsed planner step. ``error`` is ``None`` when the step can be executed."""

    raw: str
    justification: str = ""
    context: str = ""
    sub_goal: str = ""
    tool_name: str | None = None
    """canonical tool name (as on the tool's card), or ``"Finish"``"""
    written_tool_name: str = ""
    """what the planner wrote after ``Tool Name:``"""
    command: str | None = None
    answer: str | None = None
    """content of the last ``<answer>`` tag, when present"""
    error: str | None = None

    @property
    def is_finish(self) -> bool:
        return self.error is None and self.tool_name == FINISH

    @property
    def tool_input(self) -> str:
        """Direct-mode tool input: the explicit command, else the sub-goal."""
        return self.command if self.command else self.sub_goal


def strip_code_fence(text: str) -> str:
    """Return the body of the first fenced code block, or ``text`` stripped."""
    match = _FENCE.search(text)
    return match.group(1).strip("\n") if match else text.strip()


def _clean(value: str) -> str:
    return value.strip().strip("*").strip()


@functools.lru_cache(maxsize=256)
def _field_key(label: str) -> str:
    """Field name for a label as written (``Sub-Goal``, ``tool name``, ...); few distinct
    spellings occur."""
    return _FIELDS[_LABEL_JUNK.sub("", label.lower())]


def _split_fields(text: str) -> dict[str, str]:
    """Map field -> value. A value runs until the next label; the first occurrence wins."""
    fields: dict[str, str] = {}
    matches = list(_LABEL.finditer(text))
    if (
        "```" in text
    ):  # lines inside fenced code (e.g. `tool: str = "x"` in a Python command) are not labels
        fences = [m.span() for m in _FENCED.finditer(text)]
        matches = [m for m in matches if not any(a < m.start() < b for a, b in fences)]
    for i, match in enumerate(matches):
        key = _field_key(match.group(1))
        if key in fields:
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[match.end() : end]
        # An <answer> tag is its own thing, not part of a field (code in a fence is left alone).
        if "<" in value and key != "tool_name" and not (key == "command" and "```" in value):
            value = _ANSWER.sub("", value)
        fields[key] = value
    return fields


@functools.lru_cache(maxsize=64)
def _tool_table(tool_names: tuple[str, ...]) -> dict[str, str]:
    """Normalized name -> canonical name (cached: the same tool list comes with every step)."""
    return {normalize_tool_name(n): n for n in (*tool_names, FINISH)}


def _match_tool(written: str, tool_names: Sequence[str]) -> str | None:
    """Canonical tool name for what the planner wrote, ignoring case, spaces and underscores.

    Only the first line counts (planners often continue with prose). An exact key match wins;
    otherwise a close match (e.g. ``Search Tools``), so small typos do not waste a turn.
    """
    first = written.strip().splitlines()[0] if written.strip() else ""
    return _match_first_line(first, tuple(tool_names))


@functools.lru_cache(maxsize=1024)
def _match_first_line(first: str, tool_names: tuple[str, ...]) -> str | None:
    """Cached: planners write the same few tool names over and over."""
    key = normalize_tool_name(first)
    if not key:
        return None
    table = _tool_table(tool_names)
    if key in table:
        return table[key]
    if key.endswith("tool") and key[:-4] in table:
        return table[key[:-4]]
    if key + "tool" in table:
        return table[key + "tool"]
    close = get_close_matches(key, list(table), n=1, cutoff=0.85)
    return table[close[0]] if close else None


def parse_action(text: object, tool_names: Sequence[str], max_chars: int = 20_000) -> PlannerAction:
    """Parse planner output. Never raises; problems are reported in ``PlannerAction.error``."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    raw = text
    # Junk control characters carry no meaning for the parser; long outputs are judged by their
    # head.
    text = text[:max_chars].replace("\x00", "")
    answers = _ANSWER.findall(text)
    answer = answers[-1].strip() if answers else None
    fields = _split_fields(text)
    written_lines = fields.get("tool_name", "").strip().splitlines()
    written = _clean(written_lines[0]) if written_lines else ""
    action = PlannerAction(
        raw=raw,
        justification=_clean(fields.get("justification", "")),
        context=_clean(fields.get("context", "")),
        sub_goal=_clean(fields.get("sub_goal", "")),
        written_tool_name=written[:200],
        answer=answer,
    )
    if "command" in fields:
        command = fields["command"].strip()
        command = strip_code_fence(command) if "```" in command else command.strip("`").strip()
        action.command = command or None
    if not written:
        if answer is not None:
            action.tool_name = FINISH
            return action
        if not text.strip():
            action.error = "empty action: write the fields Sub-Goal, Tool Name and Command"
        else:
            action.error = "missing field 'Tool Name:' (or finish with <answer>...</answer>)"
        return action
    tool = _match_tool(written, tool_names)
    if tool is None:
        valid = ", ".join([*tool_names, FINISH])
        action.error = f"unknown tool {written.splitlines()[0][:80]!r}; valid tool names: {valid}"
        return action
    action.tool_name = tool
    if tool == FINISH:
        if answer is None:
            action.error = "Tool Name is Finish but no <answer>...</answer> was given"
        return action
    if action.command is None and _FENCE.search(text):
        action.command = strip_code_fence(text)
    if not action.tool_input:
        action.error = f"no input for {tool}: write 'Command: ...' (or a Sub-Goal)"
    return action
