"""The executor's command format: ``execution = tool.execute(...)`` blocks, read without running
model text.

The paper's executor answers with a Python block holding one or more tool calls::

    Generated Command:
    ```python
    topic = "Rhine"
    execution = tool.execute(query=f"length of the {topic}")
    execution = tool.execute(query="source of the Rhine", top_k=2)
    ```

The reference ran such blocks with ``exec``. Here they are **evaluated, never executed**:
:func:`read_calls` walks the syntax tree and accepts only

- assignments of literal values to plain names (strings, numbers, booleans, ``None``, lists,
  tuples, sets and dicts of those, names assigned earlier in the block, f-strings of those,
  ``+`` of strings/lists/tuples and ``+ - * /`` of numbers);
- calls ``tool.execute(key=value, ...)`` (or one positional value: the tool's primary input),
  assigned to any name or standing alone; each becomes one call, in order;
- ``print(...)`` of anything, ``pass`` and bare string expressions, which are ignored.

Anything else (imports, loops, other calls, using a call's result) is a :class:`CommandError`
naming the line. Variables carry over from one call to the next inside one block (the reference
ran each call's lines in a fresh namespace, so a block reusing an earlier variable failed there).

:func:`extract_command` finds the block in an executor's reply; the reader's counterpart, the
writer of one call, is :func:`tools.base.execute_call`. :func:`merge_results` turns the results
of a block's calls into the step's one result.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tools.base import ToolResult

__all__ = [
    "MAX_CALLS",
    "CommandError",
    "ToolCall",
    "extract_command",
    "merge_results",
    "read_calls",
]

MAX_CALLS = 8
"""at most this many tool calls in one command"""
_MAX_LITERAL_CHARS = 100_000
"""a string, list or tuple built by ``+`` may not grow past this many characters/items"""
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_GENERATED = re.compile(r"generated[ \t]+command\**[ \t]*:", re.IGNORECASE)
_CODE_LANGS = frozenset({"", "python", "python3", "py"})


class CommandError(ValueError):
    """A command block that cannot be read as literal assignments and tool calls."""


@dataclass(frozen=True)
class ToolCall:
    """One ``tool.execute(...)`` call of a command block."""

    inputs: dict[str, Any]
    source: str
    """the statement as written"""


# ------------------------------------------------------------------------------ finding it
def _json_command(text: str) -> str | None:
    body = text.strip()
    fenced = re.fullmatch(r"```[ \t]*(?:json)?[ \t]*\n(.*?)\n?```", body, re.DOTALL | re.I)
    body = fenced.group(1).strip() if fenced else body
    if not (body.startswith("{") and body.endswith("}")):
        return None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    command = obj.get("command") if isinstance(obj, dict) else None
    return command if isinstance(command, str) and command.strip() else None


def _strip_fence(text: str) -> str:
    match = _FENCE.search(text)
    return match.group(2) if match else text


def extract_command(text: str) -> str | None:
    """The command block of an executor's reply, or None when it has none of these forms (in
    order): a JSON object with a ``command`` string (the reference's structured output); the
    fenced block after ``Generated Command:``; the longest fenced code block that calls
    ``tool.execute`` (the reference also took the longest)."""
    if "{" in text:
        command = _json_command(text)
        if command is not None:
            return _strip_fence(command).strip("\n")
    label = _GENERATED.search(text)
    if label is not None:
        block = _FENCE.search(text, label.end())
        if block is not None and block.group(1).lower() in _CODE_LANGS:
            return block.group(2).strip("\n")
    blocks = [
        m.group(2)
        for m in _FENCE.finditer(text)
        if m.group(1).lower() in _CODE_LANGS and "tool.execute" in m.group(2)
    ]
    return max(blocks, key=len).strip("\n") if blocks else None


# ------------------------------------------------------------------------------ reading it
_NUMBER_OPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _binop(node: ast.BinOp, left: Any, right: Any) -> Any:
    op = type(node.op)
    if _is_number(left) and _is_number(right) and op in _NUMBER_OPS:
        if op is ast.Div and right == 0:
            raise CommandError(f"line {node.lineno}: division by zero")
        if max(abs(left), abs(right)) > 1e300:
            raise CommandError(f"line {node.lineno}: number too large")
        return _NUMBER_OPS[op](left, right)
    same = type(left) is type(right) and isinstance(left, (str, list, tuple))
    if op is ast.Add and same:
        if len(left) + len(right) > _MAX_LITERAL_CHARS:
            raise CommandError(f"line {node.lineno}: value too long")
        return left + right
    raise CommandError(
        f"line {node.lineno}: only + of strings/lists/tuples and + - * / of numbers are "
        f"evaluated, not {type(left).__name__} {type(node.op).__name__} {type(right).__name__}"
    )


def _literal(node: ast.expr, names: dict[str, Any]) -> Any:
    """The value of a literal expression; names are the block's earlier assignments."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise CommandError(f"line {node.lineno}: name {node.id!r} is not assigned before use")
        value = names[node.id]
        if isinstance(value, _CallResult):
            raise CommandError(
                f"line {node.lineno}: {node.id!r} holds a tool call's result, which is only "
                "known after the command ran; write the value itself"
            )
        return value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(x, names) for x in node.elts]
        kind = {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)]
        try:
            return kind(items)
        except TypeError as exc:  # an unhashable set member
            raise CommandError(f"line {node.lineno}: {exc}") from exc
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise CommandError(f"line {node.lineno}: ** unpacking is not evaluated")
        try:
            pairs = zip(node.keys, node.values, strict=True)
            return {_literal(k, names): _literal(v, names) for k, v in pairs}  # type: ignore[arg-type]
        except TypeError as exc:
            raise CommandError(f"line {node.lineno}: {exc}") from exc
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, names)
        if _is_number(value):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return _binop(node, _literal(node.left, names), _literal(node.right, names))
    if isinstance(node, ast.JoinedStr):
        return _fstring(node, names)
    raise CommandError(
        f"line {getattr(node, 'lineno', '?')}: {type(node).__name__} is not a literal value "
        "(only literals, earlier names, f-strings and simple + - * / are evaluated)"
    )


def _fstring(node: ast.JoinedStr, names: dict[str, Any]) -> str:
    parts = []
    for part in node.values:
        if isinstance(part, ast.Constant):
            parts.append(str(part.value))
            continue
        assert isinstance(part, ast.FormattedValue)
        if part.format_spec is not None:
            raise CommandError(f"line {node.lineno}: format specs in f-strings are not evaluated")
        value = _literal(part.value, names)
        parts.append(repr(value) if part.conversion == ord("r") else str(value))
    return "".join(parts)


class _CallResult:
    """What a name holds after ``name = tool.execute(...)``: not a value the block can use."""


def _is_execute(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "execute"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "tool"
    )


def _is_print(node: ast.expr) -> bool:
    func = getattr(node, "func", None)
    return isinstance(node, ast.Call) and isinstance(func, ast.Name) and func.id == "print"


def _call_inputs(node: ast.Call, primary_input: str, names: dict[str, Any]) -> dict[str, Any]:
    if len(node.args) > 1 or any(isinstance(a, ast.Starred) for a in node.args):
        raise CommandError(
            f"line {node.lineno}: tool.execute takes keyword inputs (or one positional value "
            f"for {primary_input!r})"
        )
    inputs: dict[str, Any] = {}
    if node.args:
        inputs[primary_input] = _literal(node.args[0], names)
    for keyword in node.keywords:
        if keyword.arg is None:
            raise CommandError(f"line {node.lineno}: ** unpacking is not evaluated")
        if keyword.arg in inputs:
            raise CommandError(f"line {node.lineno}: input {keyword.arg!r} given twice")
        inputs[keyword.arg] = _literal(keyword.value, names)
    return inputs


def _targets(stmt: ast.Assign | ast.AnnAssign) -> list[str]:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    names = []
    for target in targets:
        if not isinstance(target, ast.Name):
            raise CommandError(f"line {stmt.lineno}: assign to plain names only")
        names.append(target.id)
    return names


def read_calls(command: str, primary_input: str, max_calls: int = MAX_CALLS) -> list[ToolCall]:
    """The tool calls of a command block, in order, with their inputs evaluated.

    Raises:
        CommandError: not Python, a statement other than those the module docstring lists, a
            value that is not a literal, no call at all, or more than ``max_calls`` calls.
    """
    try:
        tree = ast.parse(command, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        raise CommandError(f"the command is not valid Python: {exc}{where}") from None
    names: dict[str, Any] = {}
    calls: list[ToolCall] = []
    for stmt in tree.body:
        value = getattr(stmt, "value", None)
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and value is not None:
            targets = _targets(stmt)
            if _is_execute(value):
                calls.append(_one_call(command, stmt, value, primary_input, names))  # type: ignore[arg-type]
                names.update(dict.fromkeys(targets, _CallResult()))
            else:
                names.update(dict.fromkeys(targets, _literal(value, names)))
        elif isinstance(stmt, ast.Expr) and _is_execute(stmt.value):
            calls.append(_one_call(command, stmt, stmt.value, primary_input, names))  # type: ignore[arg-type]
        elif isinstance(stmt, ast.Pass) or (
            isinstance(stmt, ast.Expr)
            and (_is_print(stmt.value) or isinstance(stmt.value, ast.Constant))
        ):
            continue
        else:
            raise CommandError(
                f"line {stmt.lineno}: only literal assignments and tool.execute(...) calls can "
                f"run, not {type(stmt).__name__}"
            )
        if len(calls) > max_calls:
            raise CommandError(f"more than {max_calls} tool.execute calls in one command")
    if not calls:
        raise CommandError("the command has no tool.execute(...) call")
    return calls


def _one_call(
    command: str, stmt: ast.stmt, call: ast.Call, primary_input: str, names: dict[str, Any]
) -> ToolCall:
    source = ast.get_source_segment(command, stmt) or ""
    return ToolCall(inputs=_call_inputs(call, primary_input, names), source=source)


# ------------------------------------------------------------------------------ its results
def merge_results(sources: Sequence[str], results: Sequence[ToolResult]) -> ToolResult:
    """One step's result from its calls' results: a single call's result unchanged; several as
    ``Call k: <source>`` sections, in order, ``ok`` only if every call succeeded (the first
    failure is the error), each call's result kept in ``data["calls"]``; ``infra`` when any
    call's tool could not run."""
    if len(results) != len(sources):
        raise ValueError(f"{len(results)} results for {len(sources)} calls")
    if len(results) == 1:
        return results[0]
    sections = [
        f"Call {k}: {source}\n{result.as_text()}"
        for k, (source, result) in enumerate(zip(sources, results, strict=True), start=1)
    ]
    failed = [(k, r) for k, r in enumerate(results, start=1) if not r.ok]
    error = None
    if failed:
        k, first = failed[0]
        error = f"call {k} of {len(results)} failed: {first.error}"
    # A call whose tool could not run (infrastructure) makes the whole step's result one.
    infra = next((r.infra for r in results if r.infra is not None), None)
    return ToolResult(
        ok=not failed,
        output="\n\n".join(sections),
        error=error,
        data={"calls": [r.model_dump() for r in results]},
        infra=infra,
    )
