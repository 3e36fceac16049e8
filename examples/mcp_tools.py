"""MCP both ways: any MCP server's tools in the env, and this project's tools served over MCP.

1. An MCP server (here a small FastMCP one in this very file, run with ``--serve``) joins an env
   through a spec string, ``tools=["mcp:python examples/mcp_tools.py --serve"]``; the planner
   calls its tools by name. A tool with one text input takes the ``Command:`` text; others take
   a JSON object of their inputs, checked against the tool's input schema.
2. ``python -m tools.mcp serve --tools Python_Coder_Tool`` serves the project's sandboxed Python
   to any MCP client; here the official SDK's client calls it, as another agent would.

Needs ``pip install 'agentflow-gym[mcp]'``.

    python examples/mcp_tools.py
"""

from __future__ import annotations

import argparse
import sys

FACTORS = {("km", "mi"): 0.621371, ("mi", "km"): 1.609344, ("kg", "lb"): 2.204623}
GLOSSARY = {"furlong": "an eighth of a mile, 201.168 m"}


def serve_demo() -> None:
    """The MCP server of part 1 (stdio): two tools, written with the SDK's FastMCP."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer("units")

    @server.tool()
    def convert(value: float, unit_from: str, unit_to: str) -> str:
        """Convert a quantity between km/mi and kg/lb."""
        if (unit_from, unit_to) not in FACTORS:
            raise ToolError(f"cannot convert {unit_from} to {unit_to}")
        return f"{value * FACTORS[(unit_from, unit_to)]:.3f} {unit_to}"

    @server.tool()
    def define(word: str) -> str:
        """Define a unit of measurement."""
        return GLOSSARY.get(word.strip().lower(), f"no definition of {word!r}")

    server.run()


def step(tool: str, command: str) -> str:
    return f"Justification: needed\nSub-Goal: use {tool}\nTool Name: {tool}\nCommand: {command}"


def use_an_mcp_server_in_the_env() -> None:
    import gymnasium as gym

    import agentflow_env  # noqa: F401 - registers the ids
    from agentflow_env import Task

    spec = f"mcp:{sys.executable} {__file__} --serve"
    task = Task(id="km", question="How many miles are 42 km?", answer="26.098 mi")
    env = gym.make("AgentFlow-Search-v0", tasks=[task], tools=[spec], max_turns=5)
    obs, _ = env.reset(seed=0)
    print("the planner sees:", [line for line in obs.splitlines() if "JSON object" in line])
    for action in (
        step("define", "furlong"),  # one text input: the command is the text
        step("convert", '{"value": "forty-two", "unit_from": "km", "unit_to": "mi"}'),
        step("convert", '{"value": 42, "unit_from": "km", "unit_to": "mi"}'),
        "Justification: converted\nTool Name: Finish\n<answer>26.098 mi</answer>",
    ):
        obs, reward, terminated, truncated, info = env.step(action)
        shown = info.get("tool_result") or info.get("error")
        print(f"{info.get('tool_name') or 'Finish'}: {shown}")
    print(f"reward {reward}")
    env.close()  # closes the tools: the server process is stopped and reaped


def call_the_projects_server_with_the_sdk() -> None:
    import anyio
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable, args=["-m", "tools.mcp", "serve", "--tools", "Python_Coder_Tool"]
    )

    async def session() -> None:
        async with Client(params, read_timeout_seconds=120) as client:
            [tool] = (await client.list_tools()).tools
            print(f"served: {tool.name} ({tool.description.splitlines()[0][:60]}...)")
            result = await client.call_tool(tool.name, {"code": "print(2 ** 10)"})
            print("sandbox said:", " ".join(block.text for block in result.content))
            result = await client.call_tool(tool.name, {"code": "import socket; socket.socket()"})
            print("no network:", result.is_error)

    anyio.run(session)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="run part 1's MCP server (stdio)")
    args = parser.parse_args()
    if args.serve:
        serve_demo()
        return
    use_an_mcp_server_in_the_env()
    call_the_projects_server_with_the_sdk()


if __name__ == "__main__":
    main()
