"""Tool protocol, tool cards and tool results.

Every tool the planner can call is an object with a :class:`ToolCard` (what the planner reads about
it) and an ``execute(**inputs) -> ToolResult`` method. ``execute`` never raises for bad input: it
returns ``ToolResult(ok=False, error=...)`` so an episode can show the error to the policy.

This module is the bottom of the import graph: ``tools`` never imports ``agentflow_env`` or
``learners``. LLM-backed tools take any object satisfying :class:`TextGenerator`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ToolCard",
    "ToolDemo",
    "ToolResult",
    "Tool",
    "TextGenerator",
    "execute_call",
    "normalize_tool_name",
]


_JSON_TYPES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}
"""the Python type names a card's ``input_types`` start with -> JSON Schema types"""


class ToolDemo(BaseModel):
    """One example call shown to the planner."""

    model_config = ConfigDict(frozen=True)

    command: str
    """the literal tool input, e.g. ``"capital of France"`` or a Python snippet"""
    description: str = ""
    """what the example does"""
    inputs: dict[str, Any] = Field(default_factory=dict)
    """further inputs of the example call besides the primary one (``{"add_citations": False}``)"""


def execute_call(inputs: dict[str, Any]) -> str:
    """``execution = tool.execute(key=value, ...)``: how the paper's executor writes a call.

    Values are written as Python literals (``repr``), so the executor's reader
    (:mod:`agentflow_env.format.command`, which evaluates literals only) reads them back.
    """
    args = ", ".join(f"{key}={value!r}" for key, value in inputs.items())
    return f"execution = tool.execute({args})"


class ToolCard(BaseModel):
    """What the planner (and the executor) read about a tool.

    Mirrors the metadata of the paper's tools: name, description, input and output types,
    demo commands, limitations and best practices.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    """the name the planner writes after ``Tool Name:`` (e.g. ``Search_Tool``)"""
    description: str
    input_types: dict[str, str] = Field(default_factory=dict)
    """input name -> type and meaning, e.g. ``{"query": "str - the search query"}``"""
    output_type: str = "str"
    primary_input: str = "query"
    """the input that a direct-mode command (the planner's ``Command:`` or sub-goal) fills"""
    input_schema: dict[str, Any] | None = None
    """JSON Schema of the inputs (an MCP tool's ``inputSchema``); None: the inputs are what
    ``input_types`` describes. Executors read it through :meth:`text_input` and
    :meth:`input_template`; :meth:`json_schema` gives a schema for every card (what a
    constrained executor call can be built from)."""
    demo_commands: tuple[ToolDemo, ...] = ()
    limitations: tuple[str, ...] = ()
    best_practices: tuple[str, ...] = ()

    def text_input(self) -> str | None:
        """The input a plain-text command fills, or None when the command is a JSON object.

        Without ``input_schema``: ``primary_input``. With one: its only required input when that
        is a string; any other shape (several required inputs, a number, none) takes a JSON
        object of the inputs.
        """
        if self.input_schema is None:
            return self.primary_input
        required = self.input_schema.get("required") or []
        properties = self.input_schema.get("properties") or {}
        if len(required) == 1 and (properties.get(required[0]) or {}).get("type") == "string":
            return str(required[0])
        return None

    def json_schema(self) -> dict[str, Any]:
        """The inputs as JSON Schema: ``input_schema`` when set, else one property per
        ``input_types`` entry (typed by its ``"str - ..."`` prefix), the primary input required.
        What a constrained executor call or an MCP listing is built from."""
        if self.input_schema is not None:
            return dict(self.input_schema)
        properties: dict[str, Any] = {}
        for key, text in self.input_types.items():
            prefix, _, meaning = text.partition(" - ")
            prop: dict[str, Any] = {"description": (meaning or text).strip()}
            if prefix.strip() in _JSON_TYPES:
                prop["type"] = _JSON_TYPES[prefix.strip()]
            properties[key] = prop
        properties.setdefault(self.primary_input, {"type": "string"})
        return {
            "type": "object",
            "properties": properties,
            "required": [self.primary_input],
            "additionalProperties": False,
        }

    def input_template(self) -> str:
        """The inputs as a JSON object with a type placeholder per value, required ones first:
        ``{"a": <integer>, "b": <integer>, "note": <string, optional>}``."""
        schema = self.json_schema()
        properties = schema.get("properties") or {}
        required = [name for name in schema.get("required") or [] if name in properties]
        parts = []
        for name in required + [n for n in properties if n not in required]:
            kind = (properties[name] or {}).get("type", "value")
            kind = "|".join(kind) if isinstance(kind, list) else str(kind)
            optional = "" if name in required else ", optional"
            parts.append(f"{json.dumps(name)}: <{kind}{optional}>")
        return "{" + ", ".join(parts) + "}"

    def demo_call(self, demo: ToolDemo) -> str:
        """A demo as the executor writes it: ``execution = tool.execute(<primary>=..., ...)``."""
        return execute_call({self.primary_input: demo.command, **demo.inputs})

    def metadata(self) -> dict[str, Any]:
        """The card as the reference's tools describe themselves (its metadata keys: tool_name,
        tool_description, input_types, output_type, demo_commands as ``execution =
        tool.execute(...)`` calls, user_metadata with limitations and best practices), for
        prompts laid out as the reference's (``prompt_style="paper"``, the LLM modules)."""
        meta: dict[str, Any] = {
            "tool_name": self.name,
            "tool_description": self.description,
            "input_types": dict(self.input_types) or self._schema_types(),
            "output_type": self.output_type,
            "demo_commands": [
                {"command": self.demo_call(d), "description": d.description}
                for d in self.demo_commands
            ],
        }
        user = {}
        if self.limitations:
            user["limitations"] = "\n".join(f"{i}. {x}" for i, x in enumerate(self.limitations, 1))
        if self.best_practices:
            user["best_practices"] = "\n".join(
                f"{i}. {x}" for i, x in enumerate(self.best_practices, 1)
            )
        if user:
            meta["user_metadata"] = user
        return meta

    def _schema_types(self) -> dict[str, str]:
        properties = self.json_schema().get("properties") or {}
        return {
            key: " - ".join(x for x in (str(p.get("type", "value")), p.get("description")) if x)
            for key, p in properties.items()
        }

    def render(self) -> str:
        """The card as prompt text (stable across runs: observations must be deterministic)."""
        lines = [f"Tool: {self.name}", f"  Description: {self.description}"]
        if self.input_types:
            inputs = "; ".join(f"{k}: {v}" for k, v in self.input_types.items())
            lines.append(f"  Inputs: {inputs}")
        lines.append(f"  Output: {self.output_type}")
        for demo in self.demo_commands:
            suffix = f"  ({demo.description})" if demo.description else ""
            lines.append(f"  Example command: {demo.command}{suffix}")
        for item in self.limitations:
            lines.append(f"  Limitation: {item}")
        for item in self.best_practices:
            lines.append(f"  Best practice: {item}")
        return "\n".join(lines)


class ToolResult(BaseModel):
    """Outcome of one tool call. ``ok=False`` carries a human-readable ``error``.

    Two kinds of failure are told apart: the caller's (bad input, code that raises or runs past
    its limits: part of the episode's outcome) and the tool's own, when it could not run at all
    (``infra`` set: its backend failed after its retries, or its sandbox broke). An environment
    ends an episode that meets the second kind without scoring it.
    """

    ok: bool
    output: str = ""
    """the text the planner sees (already truncated by the tool where it has a limit)"""
    error: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    """structured extras (search hits, sandbox stdout/stderr/variables, timings)"""
    infra: Literal["backend", "sandbox"] | None = None
    """why the tool could not run, when that is no fault of its input: ``"backend"`` (a service,
    index or engine it relies on failed) or ``"sandbox"`` (the code sandbox itself failed)"""

    @classmethod
    def failure(cls, error: str, **data: Any) -> ToolResult:
        """The caller's failure: bad input, or code that failed."""
        return cls(ok=False, output="", error=error, data=data)

    @classmethod
    def backend_failure(
        cls, error: str, infra: Literal["backend", "sandbox"] = "backend", **data: Any
    ) -> ToolResult:
        """The tool's own failure: it could not run (see :attr:`infra`)."""
        return cls(ok=False, output="", error=error, data=data, infra=infra)

    def as_text(self) -> str:
        """What goes into memory and the next observation."""
        if self.ok:
            return self.output
        return f"Error: {self.error}" + (f"\n{self.output}" if self.output else "")


@runtime_checkable
class Tool(Protocol):
    """A callable tool. Implementations must not raise from ``execute`` for bad input.

    Optional attributes the environment reads with a default:

    - ``runs_inline: bool = False``: the tool is in-process, makes no external call and its cost
      is bounded by its input limits (e.g. BM25 over a local index with a capped query length).
      The environment then runs it on the stepping thread instead of its tool pool: no thread
      handoff, which is most of a step's cost when the tool itself takes ~0.1 ms. Such a call
      cannot be timed out, so never set it on anything that waits on a process or the network.
    - ``batch_execute(list) -> list[ToolResult]``: one call for several episodes' primary inputs.
    """

    card: ToolCard

    def execute(self, **inputs: Any) -> ToolResult: ...

    def close(self) -> None: ...


@runtime_checkable
class TextGenerator(Protocol):
    """Anything that turns a batch of requests into a batch of results with a ``.text``.

    ``agentflow_env.llm`` engines satisfy it; tools only rely on this shape so that ``tools``
    never imports the engines.
    """

    def generate(self, requests: Sequence[Any]) -> Sequence[Any]: ...


_NAME_JUNK = re.compile(r"[\s_\-`*\"']+")


def normalize_tool_name(name: str) -> str:
    """Key used to match tool names: case, spaces, underscores, dashes and quotes ignored."""
    return _NAME_JUNK.sub("", name).lower()
