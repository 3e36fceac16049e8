"""tools.mcp's client against a real MCP server (tests/tools/mcp_demo_server.py, the SDK's
FastMCP) over stdio and streamable HTTP: cards from the listing, calls, argument checks, tool
errors, timeouts, a server that exits mid-call, reconnecting, and no process left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the MCP SDK is not installed: pip install 'agentflow-gym[mcp]'")

from tools.base import Tool  # noqa: E402
from tools.mcp import MCPConnectionError, mcp_tools, parse_server  # noqa: E402
from tools.mcp.tool import MCPTool  # noqa: E402

DEMO = str(Path(__file__).with_name("mcp_demo_server.py"))
DEMO_COMMAND = [sys.executable, DEMO]


def process_gone(pid: int, within_s: float = 10.0) -> bool:
    """True once ``pid`` no longer exists (reaped: a zombie still answers signal 0)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def by_name(tools: list[Tool]) -> dict[str, MCPTool]:
    return {tool.card.name: tool for tool in tools}  # type: ignore[misc]


@pytest.fixture(scope="module")
def demo() -> Iterator[dict[str, MCPTool]]:
    tools = mcp_tools(DEMO_COMMAND, timeout_s=20)
    yield by_name(tools)
    for tool in tools:
        tool.close()


def test_server_specs_are_read_or_refused() -> None:
    assert parse_server("python my_server.py --flag 'a b'").command == (
        "python",
        "my_server.py",
        "--flag",
        "a b",
    )
    assert parse_server(["python", "s.py"]).command == ("python", "s.py")
    assert parse_server(" http://127.0.0.1:8765/mcp").url == "http://127.0.0.1:8765/mcp"
    with pytest.raises(ValueError, match="the MCP server command is empty"):
        parse_server("  ")
    with pytest.raises(ValueError, match="cannot read the MCP server command"):
        parse_server("python 'unclosed")
    with pytest.raises(ValueError, match="must be a command"):
        parse_server(42)  # type: ignore[arg-type]


def test_cards_come_from_the_listing(demo: dict[str, MCPTool]) -> None:
    assert set(demo) == {"add", "lookup", "fail", "nap", "exit_now", "pid", "env_value"}
    add = demo["add"].card
    assert add.description == "Add two integers."
    assert add.input_schema is not None and add.input_schema["required"] == ["a", "b"]
    assert add.input_types == {"a": "integer, required - A", "b": "integer, required - B"}
    # several inputs: the command is a JSON object, and the card says so
    assert add.text_input() is None
    assert 'one JSON object: {"a": <integer>, "b": <integer>}' in add.render()
    # one required string input: the command is the text
    assert demo["lookup"].card.text_input() == "query"
    assert "JSON" not in demo["lookup"].card.render()
    assert isinstance(demo["add"], Tool)


def test_calls_return_the_tools_text(demo: dict[str, MCPTool]) -> None:
    result = demo["add"].execute(a=2, b=40)
    assert result.ok and result.output == "42" and result.data["structured"] == {"result": 42}
    assert demo["lookup"].execute(query="item 3").output == "code-3"


def test_bad_arguments_are_error_results_before_any_call(demo: dict[str, MCPTool]) -> None:
    wrong_type = demo["add"].execute(a="two", b=40)
    assert not wrong_type.ok
    assert wrong_type.error == (
        "arguments do not fit the input schema of add: 'two' is not of type 'integer' (at a)"
    )
    missing = demo["add"].execute(a=1)
    assert not missing.ok and "'b' is a required property" in (missing.error or "")
    # not the server's fault: no infrastructure mark
    assert "infra" not in wrong_type.data and "infra" not in missing.data


def test_tool_errors_are_error_results(demo: dict[str, MCPTool]) -> None:
    failed = demo["fail"].execute(reason="testing")
    assert not failed.ok and failed.error == "Error executing tool fail: failed on purpose: testing"
    assert "infra" not in failed.data  # the tool answered: a tool error, not a broken server
    missing = demo["lookup"].execute(query="item 99")
    assert not missing.ok and "no entry for 'item 99'" in (missing.error or "")


def test_concurrent_calls_share_the_session(demo: dict[str, MCPTool]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    start = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: demo["nap"].execute(seconds=s), [1.0] * 4))
    took = time.monotonic() - start
    assert [r.output for r in results] == ["slept 1 s"] * 4
    assert took < 3.0, f"4 one-second calls took {took:.1f} s: not concurrent"


def test_a_call_past_the_timeout_is_an_error_and_the_server_stays_usable() -> None:
    tools = by_name(mcp_tools(DEMO_COMMAND, timeout_s=1.0, include=["nap", "add"]))
    try:
        start = time.monotonic()
        result = tools["nap"].execute(seconds=60)
        took = time.monotonic() - start
        assert not result.ok and result.data["infra"] == "timeout"
        assert result.error == "the MCP tool call timed out after 1 s (it was cancelled)"
        assert took < 5.0
        assert tools["add"].execute(a=1, b=1).output == "2"  # same session, still answering
    finally:
        for tool in tools.values():
            tool.close()


def test_a_server_that_exits_mid_call_is_restarted_and_reaped() -> None:
    tools = by_name(mcp_tools(DEMO_COMMAND, timeout_s=20))
    try:
        first = int(tools["pid"].execute().output)
        crash = tools["exit_now"].execute()
        assert not crash.ok and crash.data["infra"] == "crash"
        assert "closed the connection during the call" in (crash.error or "")
        assert "restarted on the next call" in (crash.error or "")
        assert "demo server: exiting on request" in crash.data["server_log"]
        assert process_gone(first)
        second = int(tools["pid"].execute().output)  # a new server answers
        assert second != first
        assert tools["add"].execute(a=3, b=4).output == "7"
    finally:
        for tool in tools.values():
            tool.close()
    assert process_gone(second)


def test_a_server_killed_between_calls_is_restarted_before_the_next_one() -> None:
    tools = by_name(mcp_tools(DEMO_COMMAND, include=["pid", "add"]))
    try:
        first = int(tools["pid"].execute().output)
        os.kill(first, signal.SIGKILL)
        assert process_gone(first)
        connection = tools["add"].connection
        deadline = time.monotonic() + 10
        while connection.connected and time.monotonic() < deadline:
            time.sleep(0.02)  # the client reads the end of the server's output
        assert not connection.connected
        # the dead session was noticed: this call goes to a new server, not to an error
        assert tools["add"].execute(a=1, b=2).output == "3"
        second = int(tools["pid"].execute().output)
        assert second != first
    finally:
        for tool in tools.values():
            tool.close()


def _loop_threads() -> int:
    return sum(thread.name == "mcp-client" for thread in threading.enumerate())


def test_closing_the_last_tool_stops_the_server() -> None:
    threads = _loop_threads()
    tools = by_name(mcp_tools(DEMO_COMMAND, include=["pid", "add"]))
    assert _loop_threads() == threads + 1  # the connection's event loop
    server_pid = int(tools["pid"].execute().output)
    tools["pid"].close()
    assert tools["add"].execute(a=1, b=2).output == "3"  # the other tool still holds it
    assert tools["pid"].execute().error == "pid is closed"
    tools["add"].close()
    assert tools["add"].connection.closed
    assert process_gone(server_pid, within_s=2.0)
    assert _loop_threads() == threads  # and its thread is gone


def test_the_server_gets_only_the_env_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_TEST_SECRET", "hunter2")
    tools = by_name(mcp_tools(DEMO_COMMAND, env={"GIVEN": "yes"}, include=["env_value"]))
    try:
        assert tools["env_value"].execute(name="GIVEN").output == "yes"
        assert tools["env_value"].execute(name="AGENTFLOW_TEST_SECRET").output == "(unset)"
    finally:
        tools["env_value"].close()


def test_prefix_and_include() -> None:
    tools = mcp_tools(DEMO_COMMAND, name_prefix="demo_", include=["add"])
    try:
        [add] = tools
        assert add.card.name == "demo_add" and add.remote_name == "add"  # type: ignore[attr-defined]
        assert add.execute(a=1, b=2).output == "3"
    finally:
        add.close()
    with pytest.raises(ValueError, match="lists no tool 'multiply'; it lists add, env_value"):
        mcp_tools(DEMO_COMMAND, include=["multiply"])


def test_servers_that_cannot_start_fail_at_construction() -> None:
    with pytest.raises(MCPConnectionError, match="'no-such-mcp-server' is not an executable"):
        mcp_tools("no-such-mcp-server --stdio")
    with pytest.raises(MCPConnectionError, match="cannot connect to the MCP server") as info:
        mcp_tools([sys.executable, "-c", "import sys; sys.stderr.write('bad config'); sys.exit(3)"])
    assert "bad config" in str(info.value)  # the server's stderr explains it
    start = time.monotonic()
    with pytest.raises(MCPConnectionError, match="no answer within connect_timeout_s=1"):
        mcp_tools([sys.executable, "-c", "import time; time.sleep(60)"], connect_timeout_s=1)
    assert time.monotonic() - start < 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_http(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, DEMO, "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            raise RuntimeError(f"the demo HTTP server exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the demo HTTP server did not start in 60 s")


def test_streamable_http_server_calls_and_reconnects() -> None:
    port = _free_port()
    proc = _start_http(port)
    tools: dict[str, MCPTool] = {}
    try:
        tools = by_name(mcp_tools(f"http://127.0.0.1:{port}/mcp", timeout_s=10))
        assert tools["add"].execute(a=20, b=22).output == "42"
        proc.kill()
        proc.wait()
        down = tools["add"].execute(a=1, b=1)
        assert not down.ok and down.data["infra"] in ("crash", "connect")
        proc = _start_http(port)
        assert tools["add"].execute(a=2, b=2).output == "4"  # a new session on the new server
    finally:
        for tool in tools.values():
            tool.close()
        proc.kill()
        proc.wait()
