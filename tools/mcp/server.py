"""This project's tools served over MCP: :func:`build_server`, :func:`serve`.

Each Tool becomes an MCP tool: its card's name, the rendered card (description, inputs, output,
examples, limitations, best practices) as its description, and an input schema from the card
(:meth:`~tools.base.ToolCard.json_schema`). A call checks the arguments against that schema,
then runs ``execute`` (in a worker thread unless the tool ``runs_inline``) and answers with its
text; an error result is an ``isError`` answer. The tools do what they do in the env: the
Python sandbox keeps every limit it was built with (timeout, memory, no network, no host
environment), because it is the same :class:`~tools.python_coder.PythonCoderTool`.

Over stdio the tools are built inside the transport's context: the SDK then points fd 1 at
stderr, so sandbox workers started by the tools can never write into the protocol stream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio
import mcp_types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from tools.base import Tool, ToolResult
from tools.mcp.schema import ArgumentCheck

__all__ = ["build_server", "serve", "tool_description"]

logger = logging.getLogger(__name__)


def tool_description(tool: Tool) -> str:
    """The card as an MCP description: its description, then the rest of the rendered card
    (inputs, output, examples, limitations, best practices), one item per line."""
    rest = tool.card.model_copy(update={"description": ""}).render().split("\n")[2:]
    return "\n".join([tool.card.description, *rest])  # rest: after "Tool:" and "Description:"


def _answer(result: ToolResult) -> mcp_types.CallToolResult:
    if result.ok:
        text = result.output
    else:  # the error first, then what the tool printed (a traceback, partial output)
        text = (result.error or "the tool failed") + (f"\n{result.output}" if result.output else "")
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=text)], is_error=not result.ok
    )


def build_server(tools: Sequence[Tool], *, name: str = "agentflow-gym") -> Server[Any]:
    """An MCP server (the SDK's low-level ``Server``) listing and calling ``tools``."""
    by_name = {tool.card.name: tool for tool in tools}
    if len(by_name) != len(tools):
        raise ValueError(f"tool names must be unique, got {[t.card.name for t in tools]}")
    listing = [
        mcp_types.Tool(
            name=tool.card.name,
            description=tool_description(tool),
            input_schema=tool.card.json_schema(),
        )
        for tool in tools
    ]
    checks = {
        t.card.name: ArgumentCheck(listing[i].input_schema, t.card.name)
        for i, t in enumerate(tools)
    }

    async def list_tools(ctx: Any, params: Any) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=listing)

    async def call_tool(
        ctx: Any, params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            known = ", ".join(by_name)
            return _answer(
                ToolResult.failure(f"unknown tool {params.name!r}; this server has {known}")
            )
        arguments = dict(params.arguments or {})
        problem = checks[params.name].problem(arguments)
        if problem is not None:
            return _answer(ToolResult.failure(problem))
        call = functools.partial(tool.execute, **arguments)
        if getattr(tool, "runs_inline", False):  # in-process and bounded: no thread handoff
            result = call()
        else:
            result = await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        return _answer(result)

    return Server(name, on_list_tools=list_tools, on_call_tool=call_tool)


def serve(
    make: Callable[[], Sequence[Tool]],
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    path: str = "/mcp",
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Build the tools with ``make`` and serve them until the client leaves (stdio) or the
    process is stopped (HTTP); the tools are closed at the end either way."""
    anyio.run(functools.partial(_serve, make, transport, host, port, path, on_ready))


async def _serve(
    make: Callable[[], Sequence[Tool]],
    transport: str,
    host: str,
    port: int,
    path: str,
    on_ready: Callable[[str], None] | None,
) -> None:
    if transport == "stdio":
        async with stdio_server() as (read, write):
            tools = make()  # after the claim: children see fd 1 = stderr (module docstring)
            try:
                server = build_server(tools)
                if on_ready is not None:
                    on_ready("stdio")
                await server.run(read, write, server.create_initialization_options())
            finally:
                _close(tools)
        return
    import uvicorn

    tools = make()
    try:
        app = build_server(tools).streamable_http_app(streamable_http_path=path, host=host)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve)
            while not server.started and not server.should_exit:
                await anyio.sleep(0.05)
            if server.started and on_ready is not None:
                bound = server.servers[0].sockets[0].getsockname()[1]  # the real one for port 0
                on_ready(f"http://{host}:{bound}{path}")
    finally:
        _close(tools)


def _close(tools: Sequence[Tool]) -> None:
    for tool in tools:
        try:
            tool.close()
        except Exception as exc:  # closing one must not keep the others open
            logger.warning("closing %s failed: %s", tool.card.name, exc)
