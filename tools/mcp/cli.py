"""The ``python -m tools.mcp`` command line: serve this project's tools, or list a server's.

::

    python -m tools.mcp serve --tools Python_Coder_Tool,Search_Tool --corpus corpus.jsonl
    python -m tools.mcp serve --tools Python_Coder_Tool --http 127.0.0.1:8765   # streamable HTTP
    python -m tools.mcp list python my_server.py        # the cards a planner would read
    python -m tools.mcp list http://127.0.0.1:8765/mcp

``serve`` speaks MCP on stdout (stdio) or at ``http://HOST:PORT/mcp``; logs go to stderr. Bad
arguments are one line on stderr and exit code 2, before anything starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError('must be {"Tool_Name": {"setting": value}, ...}')
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8765)")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.mcp", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve this project's tools over MCP")
    serve.add_argument(
        "--tools",
        type=_names,
        required=True,
        help="comma-separated: Python_Coder_Tool, Search_Tool, Wikipedia_Search_Tool",
    )
    serve.add_argument("--corpus", help="JSONL corpus (title, text) the search tools index")
    serve.add_argument("--index-dir", help="an index from `python -m tools.search index`")
    serve.add_argument(
        "--tool-kwargs",
        type=_json_object,
        metavar="JSON",
        help='constructor arguments per tool, e.g. \'{"Python_Coder_Tool": {"timeout_s": 5}}\'',
    )
    serve.add_argument(
        "--http",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve streamable HTTP there (port 0: any free port) instead of stdio",
    )
    serve.add_argument("--path", default="/mcp", help="the HTTP endpoint's path (default /mcp)")
    listing = commands.add_parser("list", help="connect to an MCP server and print its tool cards")
    listing.add_argument("server", nargs="+", help="a stdio command, or an http(s):// URL")
    listing.add_argument("--timeout-s", type=float, default=60.0, help="connect timeout")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from tools.mcp.served import check_tool_names, make_tools

    try:
        check_tool_names(args.tools, args.corpus, args.index_dir, args.tool_kwargs)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    from tools.mcp.server import serve  # the SDK: imported once the arguments are good

    transport = "http" if args.http else "stdio"
    host, port = args.http or ("127.0.0.1", 0)

    def ready(where: str) -> None:  # stderr: on stdio, stdout is the protocol's
        place = "on stdio" if where == "stdio" else f"at {where}"
        sys.stderr.write(f"serving {', '.join(args.tools)} over MCP {place}\n")
        sys.stderr.flush()

    def make() -> Any:
        return make_tools(
            args.tools, corpus=args.corpus, index_dir=args.index_dir, tool_kwargs=args.tool_kwargs
        )

    try:
        serve(make, transport=transport, host=host, port=port, path=args.path, on_ready=ready)
    except KeyboardInterrupt:
        return 0
    return 0


def _list(args: argparse.Namespace) -> int:
    from tools.mcp.client import MCPConnectionError
    from tools.mcp.tool import mcp_tools

    server = args.server[0] if len(args.server) == 1 else args.server
    try:
        tools = mcp_tools(server, connect_timeout_s=args.timeout_s)
    except (MCPConnectionError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        sys.stdout.write("\n\n".join(tool.card.render() for tool in tools) + "\n")
    finally:
        for tool in tools:
            tool.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            return _serve(args)
        return _list(args)
    except ModuleNotFoundError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
