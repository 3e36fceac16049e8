"""Model Context Protocol, both directions (needs the extra: ``pip install 'agentflow-gym[mcp]'``).

- **Client:** ``mcp_tools(server)`` connects to any MCP server (a stdio command or a
  streamable-HTTP URL) and returns its tools as this project's Tools, for ``gym.make(...,
  tools=...)`` or any caller of ``execute``.
- **Server:** ``python -m tools.mcp serve --tools Python_Coder_Tool,Search_Tool --corpus FILE``
  serves this project's tools to any MCP client, over stdio or streamable HTTP.

The package's rooms, bottom to top (each imports only the ones above it)::

    schema.py   listing <-> ToolCard, argument checks (jsonschema), call result -> text
    client.py   MCPConnection: one server, its session on a background event loop, reconnects
    tool.py     MCPTool, mcp_tools
    served.py   the tools ``serve`` can build (no SDK import: the CLI checks arguments first)
    server.py   this project's tools as an MCP server (the SDK's low-level Server)
    cli.py      ``python -m tools.mcp serve | list``

Names are imported on first use, so ``import tools.mcp`` costs nothing and works without the SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "MCPConnection",
    "MCPConnectionError",
    "MCPTool",
    "build_server",
    "mcp_tools",
    "parse_server",
    "serve",
]

_HOMES = {
    "MCPConnection": "tools.mcp.client",
    "MCPConnectionError": "tools.mcp.client",
    "parse_server": "tools.mcp.client",
    "MCPTool": "tools.mcp.tool",
    "mcp_tools": "tools.mcp.tool",
    "build_server": "tools.mcp.server",
    "serve": "tools.mcp.server",
}

INSTALL_HINT = "the MCP SDK is not installed: pip install 'agentflow-gym[mcp]'"


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tools.mcp' has no attribute {name!r}")
    try:
        module = importlib.import_module(home)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] in ("mcp", "mcp_types", "jsonschema"):
            raise ModuleNotFoundError(INSTALL_HINT, name=exc.name) from exc
        raise
    return getattr(module, name)
