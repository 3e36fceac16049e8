"""MCP tools in the environment: a real MCP server (tests/tools/mcp_demo_server.py) through
``gym.make(..., tools=mcp_tools(...))`` and through spec strings (``mcp:COMMAND``), in the single
and the vector env and in ``evaluate --tools``; the direct executor's JSON commands; timeouts,
a server that exits mid-episode, and no server process left after ``close``."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

pytest.importorskip("mcp", reason="the MCP SDK is not installed: pip install 'agentflow-gym[mcp]'")

import agentflow_env  # noqa: E402, F401 - registers the ids
from agentflow_env import AgentFlowEnv, AgentFlowVectorEnv  # noqa: E402
from agentflow_env.evaluate import main as evaluate  # noqa: E402
from agentflow_env.llm.base import GenerationRequest  # noqa: E402
from agentflow_env.tool_registry import find_factory  # noqa: E402
from tests.agentflow_env.helpers import exact_scorer, finish_action, numbered_tasks  # noqa: E402
from tests.tools.test_mcp_client import DEMO, process_gone  # noqa: E402
from tools.mcp import mcp_tools  # noqa: E402

SPEC = f"mcp:{sys.executable} {DEMO}"


def act(tool: str, command: str) -> str:
    return f"Justification: try it\nSub-Goal: use {tool}\nTool Name: {tool}\nCommand: {command}"


def test_specs_find_the_mcp_factory() -> None:
    for spec in (SPEC, "mcp+http://127.0.0.1:8765/mcp", "mcp+https://example.org/mcp"):
        factory, _ = find_factory(spec)
        assert factory is find_factory("mcp:x")[0]
    with pytest.raises(ValueError, match="'mcp:' names no server"):
        AgentFlowEnv(tasks=numbered_tasks(2), tools=["mcp:"])


def test_gym_make_with_mcp_tools_and_json_commands() -> None:
    env = gym.make(
        "AgentFlow-Search-v0",
        tasks=numbered_tasks(3),
        tools=mcp_tools([sys.executable, DEMO], include=["lookup", "add"], timeout_s=20),
        scorer=exact_scorer,
        max_turns=6,
    )
    obs, _ = env.reset(options={"task_index": 2})
    assert "Tool: add" in obs and '{"a": <integer>, "b": <integer>}' in obs
    # one required string input: the command is the text
    *_, info = env.step(act("lookup", "item 2"))
    assert info["tool_result"] == "code-2" and info["error"] is None
    # several inputs: the command is a JSON object
    *_, info = env.step(act("add", '{"a": 2, "b": 3}'))
    assert info["tool_result"] == "5" and info["tool_input"] == "a=2, b=3"
    # not JSON: an executor error that shows the expected object
    *_, info = env.step(act("add", "two plus three"))
    assert info["error_kind"] == "executor"
    assert info["error"].startswith(
        'add takes a JSON object of its inputs, {"a": <integer>, "b": <integer>}, as the '
        "command; it is not JSON"
    )
    # JSON of the wrong types: the tool says what does not fit, and nothing reached the server
    *_, info = env.step(act("add", '{"a": "2", "b": 3}'))
    assert info["error_kind"] == "tool"
    assert info["error"] == (
        "arguments do not fit the input schema of add: '2' is not of type 'integer' (at a)"
    )
    *_, reward, terminated, _, info = env.step(finish_action("code-2"))
    assert terminated and reward == 1.0
    tools = list(env.unwrapped.flow.tools.values())
    env.close()
    assert all(tool.connection.closed for tool in tools)


def test_a_spec_string_builds_the_servers_tools_and_close_reaps_the_server() -> None:
    env = AgentFlowEnv(
        tasks=numbered_tasks(3),
        tools=[SPEC],
        tool_kwargs={SPEC: {"include": ["pid", "lookup", "exit_now"], "name_prefix": "demo_"}},
        scorer=exact_scorer,
        max_turns=6,
    )
    assert list(env.flow.tools) == ["demo_pid", "demo_lookup", "demo_exit_now"]
    env.reset(options={"task_index": 1})
    *_, info = env.step(act("demo_pid", "{}"))
    first = int(info["tool_result"])
    # the server exits mid-episode: that step is an error, the episode goes on
    *_, info = env.step(act("demo_exit_now", ""))
    assert info["error_kind"] == "tool" and "closed the connection" in info["error"]
    assert process_gone(first)
    *_, info = env.step(act("demo_lookup", "item 1"))  # a new server answers
    assert info["tool_result"] == "code-1"
    *_, info = env.step(act("demo_pid", "{}"))
    second = int(info["tool_result"])
    *_, reward, terminated, _, _ = env.step(finish_action("code-1"))
    assert terminated and reward == 1.0 and second != first
    env.close()
    assert process_gone(second, within_s=2.0)


def test_a_tool_past_its_timeout_is_an_error_step() -> None:
    env = AgentFlowEnv(
        tasks=numbered_tasks(2),
        tools=[SPEC],
        tool_kwargs={SPEC: {"include": ["nap", "lookup"], "timeout_s": 1}},
        scorer=exact_scorer,
        tool_timeout_s=30,
    )
    env.reset(options={"task_index": 0})
    start = time.monotonic()
    *_, info = env.step(act("nap", '{"seconds": 60}'))
    assert time.monotonic() - start < 10
    assert info["error"] == "the MCP tool call timed out after 1 s (it was cancelled)"
    *_, info = env.step(act("lookup", "item 0"))
    assert info["tool_result"] == "code-0"
    env.close()


def test_the_vector_env_calls_mcp_tools_concurrently() -> None:
    envs = AgentFlowVectorEnv(
        4, tasks=numbered_tasks(4), tools=[SPEC], scorer=exact_scorer, max_turns=3
    )
    envs.reset(seed=0, options={"task_indices": [0, 1, 2, 3]})
    start = time.monotonic()
    _, _, _, _, infos = envs.step([act("nap", '{"seconds": 1.5}')] * 4)
    took = time.monotonic() - start
    assert list(infos["tool_result"]) == ["slept 1.5 s"] * 4
    assert took < 4.0, f"4 calls of 1.5 s took {took:.1f} s: not concurrent"
    _, _, _, _, infos = envs.step([act("lookup", f"item {i}") for i in range(4)])
    assert list(infos["tool_result"]) == [f"code-{i}" for i in range(4)]
    _, rewards, terms, _, _ = envs.step([finish_action(f"code-{i}") for i in range(4)])
    assert terms.all() and rewards.tolist() == [1.0] * 4
    envs.close()


def lookup_planner(request: GenerationRequest) -> str:
    """Evaluate's planner (a ``python:`` engine spec): look the item up with the MCP tool, then
    answer the code the result shows."""
    if request.messages:  # chat input: the query's message, then one per step's result
        users = [m.content for m in request.messages if m.role == "user"]
        first, later = users[0], "\n".join(users[1:])
    else:
        first = str(request.prompt)
        later = first.split("### Step")[-2] if "### Step 2" in first else ""
    found = re.findall(r"code-\d+", later)
    if found:
        return finish_action(found[-1])
    item = re.search(r"item (\d+)\?", first).group(1)  # type: ignore[union-attr]
    return act("lookup", f"item {item}")


def test_evaluate_takes_an_mcp_spec_in_tools(tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(t.model_dump()) + "\n" for t in numbered_tasks(4)))
    out = tmp_path / "report.json"
    code = evaluate(
        [
            "--data",
            str(data),
            "--planner",
            "python:tests.agentflow_env.test_mcp_env:lookup_planner",
            "--tools",
            SPEC,
            "--env-kwargs",
            json.dumps({"tool_kwargs": {SPEC: {"include": ["lookup"]}}}),
            "--max-turns",
            "3",
            "--concurrency",
            "2",
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    assert code == 0
    assert report["tools"] == ["lookup"] and report["summary"]["accuracy"] == 1.0
    # a server that cannot start is a bad argument: exit 2, one line
    assert evaluate(["--data", str(data), "--tools", "mcp:no-such-mcp-server"]) == 2
