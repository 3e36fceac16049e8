"""An MCP server's tools as this project's Tools: :func:`mcp_tools` and :class:`MCPTool`.

Each tool the server lists becomes an :class:`MCPTool` whose card comes from the listing (name,
description, input schema) and whose ``execute`` checks the arguments against the schema, calls
the server over the shared :class:`~tools.mcp.client.MCPConnection` and returns a ToolResult:
the tool's text on success; an error result for a tool error (``isError``), arguments that do
not fit the schema, a timeout, a server that crashed or cannot be reached. ``execute`` never
raises. The tools of one server share one connection, closed with the last of them.

Failures of the server rather than of the caller (timeout, crash, no connection, a malformed
answer) carry ``data["infra"]`` with their kind, so an environment can tell them from the
planner's own mistakes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from tools.base import Tool, ToolCard, ToolResult
from tools.mcp.client import CallFailure, MCPConnection
from tools.mcp.schema import ArgumentCheck, card_from_listing, result_text

__all__ = ["MCPTool", "mcp_tools"]

DEFAULT_MAX_OUTPUT_CHARS = 100_000


class MCPTool:
    """One tool of an MCP server (satisfies :class:`tools.base.Tool`; thread-safe).

    ``card.input_schema`` is the server's input schema; ``remote_name`` the name the server knows
    it by (``card.name`` may carry a prefix).
    """

    def __init__(
        self,
        connection: MCPConnection,
        remote_name: str,
        card: ToolCard,
        *,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    ) -> None:
        self.connection = connection
        self.remote_name = remote_name
        self.card = card
        self.max_output_chars = max_output_chars
        self._check = ArgumentCheck(card.input_schema, card.name)
        self._closed = False
        connection.acquire()

    def execute(self, **inputs: Any) -> ToolResult:
        """Call the tool on the server with ``inputs`` as its arguments. Never raises."""
        if self._closed:
            return ToolResult.failure(f"{self.card.name} is closed")
        problem = self._check.problem(inputs)
        if problem is not None:
            return ToolResult.failure(problem)
        outcome = self.connection.call(self.remote_name, inputs)
        if isinstance(outcome, CallFailure):
            extra = {"server_log": outcome.server_log} if outcome.server_log else {}
            return ToolResult.failure(outcome.message, infra=outcome.kind, **extra)
        text = result_text(outcome.content, outcome.structured_content)
        if len(text) > self.max_output_chars:
            text = text[: self.max_output_chars] + " ...[truncated]"
        data: dict[str, Any] = {"mcp_tool": self.remote_name}
        if outcome.structured_content is not None:
            data["structured"] = outcome.structured_content
        if outcome.is_error:
            return ToolResult(
                ok=False, error=text.strip() or "the tool reported an error", data=data
            )
        return ToolResult(ok=True, output=text, data=data)

    def close(self) -> None:
        """Release this tool's share of the connection (the last one closes it). Idempotent."""
        if not self._closed:
            self._closed = True
            self.connection.release()

    def __repr__(self) -> str:
        return f"MCPTool({self.card.name!r} on {self.connection.target.describe()!r})"


def mcp_tools(
    server: str | Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    name_prefix: str | None = None,
    include: Sequence[str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    headers: Mapping[str, str] | None = None,
    connect_timeout_s: float = 60.0,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> list[Tool]:
    """The tools of an MCP server, connected and listed.

    Args:
        server: a stdio command (``["python", "server.py"]`` or ``"python server.py"``) or a
            streamable-HTTP URL (``"http://127.0.0.1:8765/mcp"``).
        env: extra environment variables of a stdio server; it inherits only the SDK's short
            list (``HOME``, ``PATH``, ...), so pass API keys it needs here.
        timeout_s: per call; a longer call is an error result and is cancelled on the server.
        name_prefix: prepended to every tool name (two servers with the same tool names, or a
            tool named like one of the env's).
        include: keep only these tools (their server names); None keeps every listed tool.
        cwd: working directory of a stdio server.
        headers: HTTP headers of every request to an HTTP server (e.g. ``Authorization``).
        connect_timeout_s: starting or reaching the server and listing its tools.
        max_output_chars: a longer tool output is cut (with a mark).

    Raises:
        MCPConnectionError: the server did not start, answer or list its tools in time.
        ValueError: a bad argument, or ``include`` names a tool the server does not list.
    """
    if max_output_chars < 1:
        raise ValueError(f"max_output_chars must be >= 1, got {max_output_chars}")
    connection = MCPConnection(
        server,
        env=env,
        cwd=cwd,
        headers=headers,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
    )
    try:
        listed = {tool.name: tool for tool in connection.listing}
        if include is not None:
            missing = [name for name in include if name not in listed]
            if missing:
                raise ValueError(
                    f"the MCP server {connection.target.describe()!r} lists no tool "
                    f"{missing[0]!r}; it lists {', '.join(sorted(listed)) or 'none'}"
                )
            listed = {name: listed[name] for name in include}
        if not listed:
            raise ValueError(f"the MCP server {connection.target.describe()!r} lists no tools")
        prefix = name_prefix or ""
        return [
            MCPTool(
                connection,
                name,
                card_from_listing(tool, prefix + name),
                max_output_chars=max_output_chars,
            )
            for name, tool in listed.items()
        ]
    except BaseException:
        connection.close()
        raise
