"""The trainer's ``env.tools`` takes MCP specs like any tool name: from a flag, a file or an
override, into the vector env the rollouts use (a real MCP server:
tests/tools/mcp_demo_server.py)."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("mcp", reason="the MCP SDK is not installed: pip install 'agentflow-gym[mcp]'")

from learners.envs import make_vector_env  # noqa: E402
from learners.flow_grpo.__main__ import parse_config  # noqa: E402
from learners.flow_grpo.config import make_config  # noqa: E402
from tests.tools.test_mcp_client import DEMO, process_gone  # noqa: E402

SPEC = f"mcp:{sys.executable} {DEMO}"


def test_a_flag_keeps_the_spec_whole() -> None:
    cfg, _ = parse_config(["--env.tools", "Search_Tool,mcp:python my_server.py --port 3"])
    assert cfg.env.tools == ["Search_Tool", "mcp:python my_server.py --port 3"]


def test_the_trainers_vector_env_gets_the_servers_tools() -> None:
    cfg = make_config(
        "tiny",
        overrides={
            "env.tools": [SPEC],
            "env.tool_kwargs": {SPEC: {"include": ["lookup", "pid"]}},
            "env.num_tasks": 20,
            "env.eval_tasks": 4,
        },
    )
    envs = make_vector_env(cfg.env, 2)
    try:
        assert list(envs.flow.tools) == ["lookup", "pid"]
        envs.reset(seed=0)
        step = "Justification: x\nSub-Goal: y\nTool Name: {}\nCommand: {}"
        _, _, _, _, infos = envs.step([step.format("lookup", "item 1"), step.format("pid", "")])
        assert infos["tool_result"][0] == "code-1"
        server = int(infos["tool_result"][1])
    finally:
        envs.close()
    assert process_gone(server, within_s=2.0)
