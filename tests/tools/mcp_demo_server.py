"""A small real MCP server for the tests, written with the SDK's FastMCP (``MCPServer`` in mcp 2).

    python tests/tools/mcp_demo_server.py                  # stdio
    python tests/tools/mcp_demo_server.py --http PORT      # streamable HTTP on 127.0.0.1:PORT

Its tools cover what the client must handle: typed inputs (``add``), one string input
(``lookup``), a tool error (``fail``), a tool slower than any test's timeout (``nap``), a server
that exits mid-call (``exit_now``), and what the process is and sees (``pid``, ``env_value``).
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

TABLE = {f"item {i}": f"code-{i}" for i in range(8)}

server = MCPServer("agentflow-test-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def lookup(query: str) -> str:
    """Look a key up in a table of item codes."""
    if query not in TABLE:
        raise ToolError(f"no entry for {query!r}")
    return TABLE[query]


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given."""
    raise ToolError(f"failed on purpose: {reason}")


@server.tool()
async def nap(seconds: float) -> str:
    """Sleep for a while, then say so."""
    await anyio.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool()
def exit_now() -> str:
    """Exit the server process at once (a crash, as the client sees it)."""
    sys.stderr.write("demo server: exiting on request\n")
    sys.stderr.flush()
    os._exit(3)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def env_value(name: str) -> str:
    """The value of an environment variable in the server, or '(unset)'."""
    return os.environ.get(name, "(unset)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
