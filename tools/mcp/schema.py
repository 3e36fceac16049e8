"""Between MCP's JSON shapes and this project's tool types, both directions.

- an MCP tool listing (name, description, ``inputSchema``) -> a :class:`~tools.base.ToolCard`
  (:func:`card_from_listing`; the other way is :meth:`ToolCard.json_schema`);
- arguments checked against an input schema (:class:`ArgumentCheck`, jsonschema), so a planner's
  wrong argument types become a clear error result before anything is sent;
- a ``tools/call`` result's content blocks -> the text the planner reads (:func:`result_text`).

Nothing here talks to a server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import mcp_types

from tools.base import ToolCard

__all__ = ["ArgumentCheck", "card_from_listing", "result_text"]

logger = logging.getLogger(__name__)

_DESCRIPTION_CHARS = 2_000
"""a longer server description is cut in the card (every planner prompt carries it)"""


# ------------------------------------------------------------------------ listing -> card
def _input_line(name: str, schema: Mapping[str, Any], required: bool) -> str:
    kind = schema.get("type", "value")
    kind = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if "enum" in schema:
        kind += " (one of " + ", ".join(json.dumps(v) for v in schema["enum"]) + ")"
    text = f"{kind}, {'required' if required else 'optional'}"
    description = str(schema.get("description") or schema.get("title") or "").strip()
    return f"{text} - {description}" if description else text


def card_from_listing(tool: mcp_types.Tool, name: str) -> ToolCard:
    """The card the planner reads for a listed MCP tool, called ``name`` here.

    Inputs and their types come from the input schema; a tool that takes a JSON object (not one
    required string, see :meth:`ToolCard.text_input`) says so in a best practice with its
    :meth:`~ToolCard.input_template`.
    """
    schema = dict(tool.input_schema or {"type": "object"})
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    description = (tool.description or tool.title or f"The MCP tool {tool.name}.").strip()
    if len(description) > _DESCRIPTION_CHARS:
        description = description[: _DESCRIPTION_CHARS - 15] + " ...[truncated]"
    input_types = {
        key: _input_line(key, value if isinstance(value, Mapping) else {}, key in required)
        for key, value in properties.items()
    }
    card = ToolCard(
        name=name,
        description=description,
        input_types=input_types,
        output_type="str - the tool's text content",
        input_schema=schema,
    )
    text_input = card.text_input()
    first = text_input or next(iter(sorted(required)), next(iter(properties), "input"))
    practices: tuple[str, ...] = ()
    if text_input is None:
        practices = (f"Give the inputs as one JSON object: {card.input_template()}",)
    return card.model_copy(update={"primary_input": first, "best_practices": practices})


# ------------------------------------------------------------------------ argument checks
class ArgumentCheck:
    """Arguments validated against one input schema (JSON Schema, 2020-12 unless it says).

    A schema that is itself invalid is not enforced here (the server still checks): the tool
    stays usable and a warning names the problem.
    """

    def __init__(self, schema: Mapping[str, Any] | None, tool_name: str) -> None:
        self.tool_name = tool_name
        self._validator: Any = None
        if schema is None:
            return
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            logger.warning("%s: its input schema is invalid (%s); not checked", tool_name, exc)
            return
        self._validator = cls(schema)

    def problem(self, arguments: Mapping[str, Any]) -> str | None:
        """None when ``arguments`` fit the schema, else one line naming what is wrong and where."""
        if self._validator is None:
            return None
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(dict(arguments)))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        place = f" (at {where})" if where else ""
        return f"arguments do not fit the input schema of {self.tool_name}: {error.message}{place}"


# ------------------------------------------------------------------------ result -> text
def _block_text(block: Any) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, mcp_types.TextResourceContents):
            return resource.text
        return f"[binary resource {resource.uri} ({resource.mime_type or 'unknown type'})]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource link {block.uri}: {block.name}]"
    kind = getattr(block, "type", type(block).__name__)
    mime = getattr(block, "mime_type", None)
    return f"[{kind} content{f' ({mime})' if mime else ''}: not shown as text]"


def result_text(content: Sequence[Any], structured: Mapping[str, Any] | None) -> str:
    """The text of a call result: its content blocks one after another; the structured content
    as JSON when there is no text at all."""
    text = "\n".join(_block_text(block) for block in content)
    if not text.strip() and structured is not None:
        return json.dumps(structured, ensure_ascii=False, sort_keys=True)
    return text
