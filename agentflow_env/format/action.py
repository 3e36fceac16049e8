"""The planner's action format: every writer and every reader of it.

What the planner writes each turn: the paper's fields, in any order, with case-insensitive labels
and optional markdown bold, list markers or heading marks::

    Justification: why this step
    Context: facts from earlier steps the tool needs
    Sub-Goal: what this step achieves
    Tool Name: Search_Tool
    Command: the exact tool input (optional; may span lines or be a fenced code block)

It finishes with ``Tool Name: Finish`` and the answer in ``<answer>...</answer>``; an
``<answer>`` tag alone also finishes. Lines inside a fenced code block or an ``<answer>`` tag are
never labels.

The readers also take every shape the reference planner's prompts ask for or its models write:

- numbered or bulleted field lists (``1. **Justification:** ...``, ``2) Context: ...``,
  ``- Sub-Goal: ...``), labels bold or plain, under a heading or not;
- a JSON object with the NextStep fields (``{"justification", "context", "sub_goal",
  "tool_name"}``, plus ``command`` and ``answer``; keys matched like labels), as the whole action
  (optionally in a fenced block), or embedded in prose when no labelled tool name is present;
- several Context/Sub-Goal/Tool Name blocks: a label that repeats starts a new block, and the
  **last complete block** (one with Context, Sub-Goal and Tool Name) wins, as in the reference;
  without a complete block, the last block with a tool name wins (a single block, as every writer
  produces, is read whole). A Justification written only before the winning block is kept.

Tool names are matched ignoring case, spaces, underscores, dashes, quotes and backticks; a close
match, or a known name followed by prose (``Tool Name: `X` (to search)``), also matches.

Readers, in two layers (a new syntax is a new reader in the first layer):

- :func:`read_action`: the fields as written (:class:`ActionFields`), nothing judged;
- :func:`parse_action`: the fields plus the canonical tool name and what is wrong, as a
  :class:`PlannerAction`. It never raises on model output: ``error`` says what was wrong, so the
  environment can show the error to the policy and consume the turn.

The grammar, for constrained planners: :func:`action_grammar` is a Lark grammar (llguidance's
dialect, :class:`~agentflow_env.llm.constraints.Constraint` ``.lark``) of the actions written in
the usual order with every prose field, ``Tool Name`` one of the episode's tools or ``Finish``,
each value within a character bound; every text it admits reads back without error.

Writers: :func:`write_action` (any fields), :func:`tool_action` and :func:`finish_action`. What
they write reads back to the same fields, normalized as the readers normalize: values lose
surrounding whitespace and ``*`` (one-line commands: whitespace, a leading ``*`` and, without a
code fence, surrounding backticks), a prose field (justification, context, sub-goal) is one line,
so its line breaks are written as spaces, a blank field reads as ``None``, and a multi-line
command is written as a fenced code block (read back without its first and last newlines). They
raise ``ValueError`` for what could not be read back: no tool name and no answer, a tool name that
is not one non-blank line, an ``<answer>`` tag outside the answer or ``</answer>`` inside it, a NUL
character, a code fence anywhere but at the end (in a one-line command, or in an answer without a
command), and any of the :data:`~agentflow_env.format.labels.PLANNER_STOP` sequences (so written
actions sit in an observation unchanged).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches

from pydantic import BaseModel

from agentflow_env.format.labels import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    FIELD_LABELS,
    FINISH,
    PLANNER_STOP,
)
from agentflow_env.llm.constraints import lark_literal, regex_escape
from tools.base import normalize_tool_name

__all__ = [
    "FINISH",
    "ActionFields",
    "PlannerAction",
    "action_grammar",
    "finish_action",
    "last_answer",
    "parse_action",
    "read_action",
    "strip_code_fence",
    "tool_action",
    "write_action",
]

MAX_ACTION_CHARS = 20_000
"""readers judge an action by its first this many characters"""
_ALIASES = {"tool": "tool_name"}
"""extra label spellings (normalized) the readers accept"""
_LABEL_JUNK = re.compile(r"[ \t_\-]")


def _label_regex(label: str) -> str:
    """``Sub-Goal`` -> ``sub[ \\t_\\-]?goal``: separators between words are optional and free."""
    return r"[ \t_\-]?".join(re.escape(word) for word in re.split(r"[ _\-]", label.lower()))


_FIELDS = {_LABEL_JUNK.sub("", label.lower()): key for key, label in FIELD_LABELS.items()}
_FIELDS.update(_ALIASES)
# A label at the start of a line: optional heading / quote / bullet / bold marks and an optional
# list number ("1.", "2)"), then the label, then ':'. Aliases come last: "tool" must not win over
# "tool name".
_LABEL = re.compile(
    r"^[ \t>#*\-+]*(?:\d{1,3}[.)][ \t]*)?[ \t*]*\**[ \t]*("
    + "|".join([*(_label_regex(label) for label in FIELD_LABELS.values()), *_ALIASES])
    + r")[ \t]*\**[ \t]*:[ \t]*\**",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER = re.compile(
    re.escape(ANSWER_OPEN) + "(.*?)" + re.escape(ANSWER_CLOSE), re.IGNORECASE | re.DOTALL
)
_FENCE = re.compile(r"```[ \t]*(?:python|py|json)?[ \t]*\n(.*?)```", re.IGNORECASE | re.DOTALL)
_FENCED = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_PROSE = ("justification", "context", "sub_goal")


@dataclass(frozen=True)
class ActionFields:
    """One planner step's fields as written; ``None`` where a field is absent or blank."""

    tool_name: str | None = None
    """the first line after ``Tool Name:``, as written (not matched to a tool)"""
    command: str | None = None
    answer: str | None = None
    """content of the last ``<answer>`` tag (``""`` for an empty tag)"""
    sub_goal: str | None = None
    justification: str | None = None
    context: str | None = None


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


# ----------------------------------------------------------------------------------- readers
def strip_code_fence(text: str) -> str:
    """Return the body of the first fenced code block, or ``text`` stripped."""
    match = _FENCE.search(text)
    return match.group(1).strip("\n") if match else text.strip()


def last_answer(text: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` in ``text``, stripped; None without one."""
    answers = _ANSWER.findall(text)
    return answers[-1].strip() if answers else None


def _clean(value: str) -> str:
    return value.strip().strip("*").strip()


@functools.lru_cache(maxsize=256)
def _field_key(label: str) -> str:
    """Field name for a label as written (``Sub-Goal``, ``tool name``, ...); few distinct
    spellings occur."""
    return _FIELDS[_LABEL_JUNK.sub("", label.lower())]


_COMPLETE = frozenset({"context", "sub_goal", "tool_name"})
"""a block with these fields is complete (the reference's Context/Sub-Goal/Tool Name block)"""


def _winning_block(blocks: list[dict[str, str]]) -> dict[str, str]:
    """The last complete block, else the last block with a tool name, else the last block; a
    Justification written only in an earlier block is kept."""
    chosen = next((b for b in reversed(blocks) if _COMPLETE <= b.keys()), None)
    chosen = chosen or next((b for b in reversed(blocks) if "tool_name" in b), blocks[-1])
    if "justification" not in chosen:
        at = next(i for i, b in enumerate(blocks) if b is chosen)
        earlier = [b["justification"] for b in blocks[:at] if "justification" in b]
        if earlier:
            chosen = {**chosen, "justification": earlier[-1]}
    return chosen


def _split_fields(text: str, answer_spans: list[tuple[int, int]]) -> dict[str, str]:
    """Map field -> value. A value runs until the next label; a label that repeats starts a new
    block, and :func:`_winning_block` picks the block that counts."""
    # Lines inside fenced code (e.g. `tool: str = "x"` in a Python command) or inside an
    # <answer> tag are not labels.
    skip = list(answer_spans)
    if "```" in text:
        skip += [m.span() for m in _FENCED.finditer(text)]
    if skip:
        matches = [m for m in _LABEL.finditer(text) if not any(a < m.start() < b for a, b in skip)]
        ends = [m.start() for m in matches[1:]] + [len(text)] if matches else []
        pairs = [(m.group(1), text[m.end() : end]) for m, end in zip(matches, ends, strict=True)]
    else:  # every label counts: one C-level split gives [before, label, value, label, ...]
        parts = _LABEL.split(text)
        pairs = list(zip(parts[1::2], parts[2::2], strict=True))
    blocks: list[dict[str, str]] = [{}]
    for label, value in pairs:
        key = _field_key(label)
        if key in blocks[-1]:
            blocks.append({})
        # An <answer> tag is its own thing, not part of a field (code in a fence is left alone).
        if "<" in value and key != "tool_name" and not (key == "command" and "```" in value):
            value = _ANSWER.sub("", value)
        blocks[-1][key] = value
    return _winning_block(blocks) if len(blocks) > 1 else blocks[0]


def _json_value(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _from_json(obj: object) -> dict[str, str] | None:
    """The fields of a NextStep-like JSON object (keys matched like labels), or None when it
    names no tool and gives no answer."""
    if not isinstance(obj, dict):
        return None
    fields: dict[str, str] = {}
    for key, value in obj.items():
        name = _LABEL_JUNK.sub("", str(key).lower())
        field = "answer" if name == "answer" else _FIELDS.get(name)
        text = _json_value(value)
        if field is not None and text is not None and field not in fields:
            fields[field] = text
    return fields if "tool_name" in fields or "answer" in fields else None


_JSON_FENCE = re.compile(r"^```[ \t]*(?:json)?[ \t]*\n(.*?)\n?```$", re.IGNORECASE | re.DOTALL)
_MAX_JSON_STARTS = 32
"""embedded JSON: at most this many ``{`` positions are tried (bounded work on long outputs)"""


def _whole_json(text: str) -> dict[str, str] | None:
    """The action is one JSON object (optionally fenced): the reference parses that first."""
    body = text.strip()
    fenced = _JSON_FENCE.match(body)
    body = fenced.group(1).strip() if fenced else body
    if not (body.startswith("{") and body.endswith("}")):
        return None
    try:
        return _from_json(json.loads(body))
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None


def _embedded_json(text: str) -> dict[str, str] | None:
    """The last NextStep-like JSON object inside prose."""
    decoder = json.JSONDecoder()
    found, pos, tried = None, text.find("{"), 0
    while pos >= 0 and tried < _MAX_JSON_STARTS:
        tried += 1
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            pos = text.find("{", pos + 1)
            continue
        found = _from_json(obj) or found
        pos = text.find("{", end)
    return found


def _fields_to_action(fields: dict[str, str], answer: str | None) -> dict[str, str | None]:
    """The :class:`ActionFields` values (as a dict: the parser builds its model from it)."""
    tool_lines = fields.get("tool_name", "").strip().splitlines()
    command = None
    if "command" in fields:
        command = fields["command"].strip()
        command = strip_code_fence(command) if "```" in command else command.strip("`").strip()
    return {
        "tool_name": (_clean(tool_lines[0]) or None) if tool_lines else None,
        "command": command or None,
        "answer": answer,
        **{key: _clean(fields[key]) or None if key in fields else None for key in _PROSE},
    }


def _read(text: str) -> dict[str, str | None]:
    """A JSON step, else labelled lines (the paper's prompt asks for both), else JSON in prose."""
    if "{" in text:
        whole = _whole_json(text)
        if whole is not None:
            answer = whole.pop("answer", None)
            return _fields_to_action(whole, answer.strip() if answer is not None else None)
    answers = list(_ANSWER.finditer(text)) if "<" in text else []
    fields = _split_fields(text, [m.span() for m in answers])
    if "tool_name" not in fields and not answers and "{" in text:
        embedded = _embedded_json(text)
        if embedded is not None:
            answer = embedded.pop("answer", None)
            return _fields_to_action(embedded, answer.strip() if answer is not None else None)
    return _fields_to_action(fields, answers[-1].group(1).strip() if answers else None)


def _as_text(text: object, max_chars: int) -> tuple[str, str]:
    """(the text as given, the part the readers look at)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    # Junk control characters carry no meaning; long outputs are judged by their head.
    return text, text[:max_chars].replace("\x00", "")


def read_action(text: object, max_chars: int = MAX_ACTION_CHARS) -> ActionFields:
    """The fields of an action as written: no tool-name matching, no judgement. Never raises."""
    return ActionFields(**_read(_as_text(text, max_chars)[1]))


@functools.lru_cache(maxsize=64)
def _tool_table(tool_names: tuple[str, ...]) -> dict[str, str]:
    """Normalized name -> canonical name (cached: the same tool list comes with every step)."""
    return {normalize_tool_name(n): n for n in (*tool_names, FINISH)}


_WORD_SPLIT = re.compile(r"[\s(\[{,;]+")


@functools.lru_cache(maxsize=1024)
def _match_tool(written: str, tool_names: tuple[str, ...]) -> str | None:
    """Canonical tool name for what the planner wrote, ignoring case, spaces, underscores,
    dashes, quotes and backticks.

    An exact key match wins; otherwise a close match (e.g. ``Search Tools``), so small typos do
    not waste a turn; then the longest run of leading words that is exactly a name (a name
    followed by prose). Cached: planners write the same few tool names over and over.
    """
    key = normalize_tool_name(written)
    if not key:
        return None
    table = _tool_table(tool_names)
    exact = _exact_tool(key, table)
    if exact is not None:
        return exact
    close = get_close_matches(key, list(table), n=1, cutoff=0.85)
    if close:
        return table[close[0]]
    # A name followed by prose ("`X` (to search the web)", "x tool, for facts"): the longest
    # run of leading words that is exactly a name.
    words = _WORD_SPLIT.split(written.strip())
    for n in range(len(words) - 1, 0, -1):
        exact = _exact_tool(normalize_tool_name(" ".join(words[:n]).rstrip(".,;:!")), table)
        if exact is not None:
            return exact
    return None


def _exact_tool(key: str, table: dict[str, str]) -> str | None:
    """The tool whose key is ``key``, with or without a trailing ``tool``."""
    if not key:
        return None
    if key in table:
        return table[key]
    if key.endswith("tool") and key[:-4] in table:
        return table[key[:-4]]
    return table.get(key + "tool")


def parse_action(
    text: object, tool_names: Sequence[str], max_chars: int = MAX_ACTION_CHARS
) -> PlannerAction:
    """Parse planner output. Never raises; problems are reported in ``PlannerAction.error``."""
    raw, text = _as_text(text, max_chars)
    fields = _read(text)
    written = fields["tool_name"] or ""
    sub_goal = fields["sub_goal"] or ""
    tool, command, error = _judge(text, written, fields, sub_goal, tool_names)
    return PlannerAction(  # built once: assigning a pydantic model's fields costs per field
        raw=raw,
        justification=fields["justification"] or "",
        context=fields["context"] or "",
        sub_goal=sub_goal,
        written_tool_name=written[:200],
        command=command,
        answer=fields["answer"],
        tool_name=tool,
        error=error,
    )


def _judge(
    text: str, written: str, fields: dict[str, str | None], sub_goal: str, tool_names: Sequence[str]
) -> tuple[str | None, str | None, str | None]:
    """(canonical tool name, command, error) of a read action."""
    command, answer = fields["command"], fields["answer"]
    if not written:
        if answer is not None:
            return FINISH, command, None
        if not text.strip():
            return None, command, "empty action: write the fields Sub-Goal, Tool Name and Command"
        return None, command, "missing field 'Tool Name:' (or finish with <answer>...</answer>)"
    tool = _match_tool(written, tuple(tool_names))
    if tool is None:
        valid = ", ".join([*tool_names, FINISH])
        return None, command, f"unknown tool {written[:80]!r}; valid tool names: {valid}"
    if tool == FINISH:
        if answer is None:
            return tool, command, "Tool Name is Finish but no <answer>...</answer> was given"
        return tool, command, None
    if command is None and _FENCE.search(text):
        command = strip_code_fence(text) or None
    if not (command or sub_goal):  # PlannerAction.tool_input: the command, else the sub-goal
        return tool, command, f"no input for {tool}: write 'Command: ...' (or a Sub-Goal)"
    return tool, command, None


# ----------------------------------------------------------------------------------- writers
def _refuse(key: str, value: str, why: str) -> ValueError:
    return ValueError(f"cannot write {key}={value[:80]!r} as an action field: {why}")


def _check(key: str, value: str, last: bool) -> None:
    # A fence hides the labels after it, and a multi-line command is fenced by the writer.
    fence_ok = last and not (key == "command" and "\n" in value)
    if "```" in value and not fence_ok:
        raise _refuse(
            key,
            value,
            "a code fence (```) can only end an action: in a one-line command, or in "
            "an answer without a command",
        )
    if "\x00" in value:
        raise _refuse(key, value, "it contains a NUL character (the readers drop them)")
    lowered = value.lower()
    if key != "answer" and ANSWER_OPEN in lowered:
        raise _refuse(key, value, f"only the answer goes in {ANSWER_OPEN} tags")
    if key == "answer" and ANSWER_CLOSE in lowered:
        raise _refuse(key, value, f"it contains {ANSWER_CLOSE}")


def _field_text(key: str, value: str, last: bool) -> str:
    _check(key, value, last)
    if key in _PROSE:
        return " ".join(value.splitlines())
    if key == "tool_name" and (len(value.splitlines()) != 1 or not _clean(value)):
        raise _refuse(key, value, "a tool name is one non-blank line")
    if key == "command" and "\n" in value:
        return f"\n```\n{value}\n```"
    return value


def write_action(fields: ActionFields) -> str:
    """The action text for ``fields``: labelled lines in the usual order, then the answer tag.

    Raises:
        ValueError: a value that would not read back (the rules are in the module docstring).
    """
    if fields.tool_name is None and fields.answer is None:
        raise ValueError("an action needs a tool name or an answer")
    written = [(k, v) for k in (*FIELD_LABELS, "answer") if (v := getattr(fields, k)) is not None]
    lines = []
    for i, (key, value) in enumerate(written):
        last = i == len(written) - 1
        if key == "answer":  # a command's value runs on into the answer's line
            _check(key, value, last and fields.command is None)
            lines.append(f"{ANSWER_OPEN}{value}{ANSWER_CLOSE}")
        else:
            lines.append(f"{FIELD_LABELS[key]}: {_field_text(key, value, last)}".rstrip(" "))
    text = "\n".join(lines)
    for stop in PLANNER_STOP:
        if stop in text:
            raise ValueError(
                f"cannot write this action: it contains {stop!r}, where a planner's step ends"
            )
    return text


def tool_action(
    tool_name: str,
    command: str | None,
    *,
    sub_goal: str | None = None,
    justification: str | None = None,
    context: str | None = None,
) -> str:
    """A step that calls ``tool_name`` with ``command`` (fields left ``None`` are not written)."""
    return write_action(
        ActionFields(
            tool_name=tool_name,
            command=command,
            sub_goal=sub_goal,
            justification=justification,
            context=context,
        )
    )


def finish_action(
    answer: str,
    *,
    sub_goal: str | None = None,
    justification: str | None = None,
    context: str | None = None,
) -> str:
    """The finishing step: ``Tool Name: Finish`` and ``answer`` in ``<answer>`` tags."""
    return write_action(
        ActionFields(
            tool_name=FINISH,
            answer=answer,
            sub_goal=sub_goal,
            justification=justification,
            context=context,
        )
    )


# ----------------------------------------------------------------------------------- grammar
def action_grammar(
    tool_names: Sequence[str],
    *,
    max_line_chars: int = 300,
    max_command_chars: int = 600,
    max_code_chars: int = 2000,
    max_answer_chars: int = 200,
    max_tokens: int | None = None,
) -> str:
    """A Lark grammar (llguidance's dialect) of one step in the order the writers use::

        Justification: <one line>
        Context: <one line>
        Sub-Goal: <one line>
        Tool Name: <one of tool_names>
        Command: <one line, or a fenced code block on the lines below>

    or, to finish, ``Tool Name: Finish`` followed by ``<answer>...</answer>`` on the next line.
    Values are bounded in characters (a constraint fixes the format, not the length: a small model
    can write one field until ``max_tokens`` runs out); a command's first character and the
    answer's are not blank, an answer has no ``<`` or line break, a code block no backtick and
    none of the :data:`~agentflow_env.format.labels.PLANNER_STOP` sequences. Every
    text it admits passes :func:`parse_action` with these ``tool_names`` (tested).

    ``max_tokens`` (the planner's budget) also bounds the free fields in tokens, so that a
    step ends inside its budget instead of being cut mid-field (an unparseable turn): each of
    the three prose lines gets an eighth of it, a one-line command or the answer three eighths,
    the labels and tool name the last quarter (a few tokens each in any subword vocabulary).
    The bound ends a field early (the grammar then writes the next label), never mid-format. A
    code block keeps its character bound only: it must reach its closing fence.

    Raises:
        ValueError: no tool names, a name that is blank, spans lines or is ``Finish``, or a bound
            below 1.
    """
    names = list(dict.fromkeys(tool_names))
    if not names:
        raise ValueError("action_grammar needs at least one tool name")
    for name in names:
        if not name.strip() or len(name.splitlines()) != 1 or name.strip() != name:
            raise ValueError(f"tool name {name!r} must be one line without surrounding spaces")
        if normalize_tool_name(name) == normalize_tool_name(FINISH):
            raise ValueError(f"{FINISH!r} ends an episode; it is not a tool name")
    bounds = (max_line_chars, max_command_chars, max_code_chars, max_answer_chars)
    if min(bounds) < 1:
        raise ValueError(f"every character bound must be >= 1, got {bounds}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")

    def capped(name: str, share: int) -> str:  # a rule of ``share`` eighths of the budget
        return f"{name}[max_tokens={max(1, max_tokens * share // 8)}]" if max_tokens else name

    prose = " ".join(f'{lark_literal(FIELD_LABELS[key] + ": ")} line "\\n"' for key in _PROSE)
    tools = " | ".join(lark_literal(n) for n in names)
    # a code block must not contain the env's stop sequences (generation would end inside it)
    stops = "|".join(regex_escape(stop) for stop in PLANNER_STOP)
    return "\n".join(
        [
            f"start: {prose} {lark_literal(FIELD_LABELS['tool_name'] + ': ')} (call | finish)",
            f'call: TOOL "\\n" {lark_literal(FIELD_LABELS["command"] + ": ")} (command | CODE)',
            f'finish: {lark_literal(FINISH)} "\\n" {lark_literal(ANSWER_OPEN)} answer '
            f"{lark_literal(ANSWER_CLOSE)}",
            f"{capped('line', 1)}: LINE",
            f"{capped('command', 3)}: COMMAND",
            f"{capped('answer', 3)}: ANSWER",
            f"TOOL: {tools}",
            f"LINE: /[^\\n]{{1,{max_line_chars}}}/",
            f"COMMAND: /[^\\s`][^\\n]{{0,{max_command_chars - 1}}}/",
            f"CODE: /\\n```\\n[^`]{{1,{max_code_chars}}}\\n```/ & ~/(?s:.*({stops}).*)/",
            f"ANSWER: /[^<\\s][^<\\n]{{0,{max_answer_chars - 1}}}/",
        ]
    )
