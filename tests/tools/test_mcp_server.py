"""``python -m tools.mcp serve``: this project's tools served over MCP, driven by the SDK's own
client (stdio) and by tools.mcp's client (streamable HTTP); the sandbox keeps its limits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp", reason="the MCP SDK is not installed: pip install 'agentflow-gym[mcp]'")

import anyio  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402

from tests.conftest import REPO_ROOT  # noqa: E402
from tools.mcp import mcp_tools  # noqa: E402
from tools.python_coder import PYTHON_CODER_CARD  # noqa: E402

CORPUS = [
    {"title": "Varnok Industries", "text": "Varnok Industries was founded by Elena Brisk."},
    {"title": "Lake Orvessa", "text": "Lake Orvessa lies in the country of Tamaria."},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp") / "corpus.jsonl"
    path.write_text("".join(json.dumps(doc) + "\n" for doc in CORPUS))
    return path


def _serve_args(corpus: Path, *extra: str) -> list[str]:
    kwargs = json.dumps({"Python_Coder_Tool": {"timeout_s": 2, "memory_mb": 256}})
    return [
        "-m",
        "tools.mcp",
        "serve",
        "--tools",
        "Python_Coder_Tool,Search_Tool",
        "--corpus",
        str(corpus),
        "--tool-kwargs",
        kwargs,
        *extra,
    ]


def _text(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


def test_the_sdk_client_lists_and_calls_the_served_tools(corpus: Path) -> None:
    """The official SDK's client over stdio: cards as descriptions, real calls, and every
    sandbox limit in force (a loop is killed at the timeout; no host environment; no network)."""
    params = StdioServerParameters(
        command=sys.executable,
        args=_serve_args(corpus),
        env={"AGENTFLOW_TEST_SECRET": "hunter2"},
        cwd=str(REPO_ROOT),
    )

    async def session() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with Client(params, read_timeout_seconds=60) as client:
            listing = (await client.list_tools()).tools
            out["tools"] = {tool.name: tool for tool in listing}
            call = client.call_tool
            out["search"] = await call("Search_Tool", {"query": "who founded Varnok Industries"})
            out["print"] = await call(
                "Python_Coder_Tool",
                {"code": "import os\nprint(6 * 7, os.environ.get('AGENTFLOW_TEST_SECRET'))"},
            )
            start = time.monotonic()
            out["loop"] = await call("Python_Coder_Tool", {"code": "while True:\n    pass"})
            out["loop_s"] = time.monotonic() - start
            out["net"] = await call(
                "Python_Coder_Tool",
                {"code": "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=2)"},
            )
            out["wrong"] = await call("Python_Coder_Tool", {"code": 42})
            out["unknown"] = await call("Laser_Tool", {})
        return out

    out = anyio.run(session)
    tools = out["tools"]
    assert set(tools) == {"Python_Coder_Tool", "Search_Tool"}
    coder = tools["Python_Coder_Tool"]
    assert coder.description.startswith(PYTHON_CODER_CARD.description)
    assert "Limitation: No network access" in coder.description  # the whole card
    assert coder.input_schema["required"] == ["code"]
    assert not out["search"].is_error
    assert _text(out["search"]).startswith("Doc 1 (Title: Varnok Industries)")
    assert not out["print"].is_error and "42 None" in _text(out["print"])  # no host env
    assert out["loop"].is_error and "timed out after 2 s" in _text(out["loop"])
    assert out["loop_s"] < 10
    assert out["net"].is_error and "PermissionError" in _text(out["net"])
    assert out["wrong"].is_error
    assert "42 is not of type 'string' (at code)" in _text(out["wrong"])
    assert out["unknown"].is_error and "unknown tool 'Laser_Tool'" in _text(out["unknown"])


def test_serve_over_http_with_the_projects_client(corpus: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, *_serve_args(corpus, "--http", "127.0.0.1:0")],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        match = None
        while match is None:  # it says where it serves (port 0: a free one); '' once it exits
            seen.append(proc.stderr.readline())
            assert seen[-1], "".join(seen)
            match = re.search(r"over MCP at (http://127\.0\.0\.1:\d+/mcp)$", seen[-1].strip())
        tools = {t.card.name: t for t in mcp_tools(match.group(1), timeout_s=30)}
        try:
            found = tools["Search_Tool"].execute(query="Lake Orvessa country")
            assert found.ok and "Tamaria" in found.output
            ran = tools["Python_Coder_Tool"].execute(code="print(sum(range(10)))")
            assert ran.ok and "45" in ran.output
            assert tools["Python_Coder_Tool"].card.text_input() == "code"
        finally:
            for tool in tools.values():
                tool.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tools", "Search_Tool"], "Search_Tool needs a corpus: pass --corpus"),
        (["--tools", "Base_Generator_Tool"], "cannot serve 'Base_Generator_Tool': servable"),
        (["--tools", "Search_Tool", "--corpus", "missing.jsonl"], "--corpus 'missing.jsonl'"),
        (["--tools", "Python_Coder_Tool", "--http", "localhost"], "is not HOST:PORT"),
    ],
)
def test_serve_refuses_bad_arguments_before_starting(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tools.mcp", "serve", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_list_prints_a_servers_cards() -> None:
    demo = str(Path(__file__).with_name("mcp_demo_server.py"))
    proc = subprocess.run(
        [sys.executable, "-m", "tools.mcp", "list", sys.executable, demo],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Tool: add\n  Description: Add two integers." in proc.stdout
    assert 'one JSON object: {"a": <integer>, "b": <integer>}' in proc.stdout
