"""The tool table: names and spec prefixes -> factories, and the env's engine for LLM tools."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentflow_env import AgentFlowEnv
from agentflow_env.llm.base import GenerationRequest
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.tool_registry import (
    TOOL_FACTORIES,
    ToolContext,
    build_tools,
    find_factory,
    register_tool,
)
from tests.agentflow_env.helpers import exact_scorer, lookup_env_kwargs, numbered_tasks
from tools.base import ToolCard, ToolResult


class EchoTool:
    """A real tool made by a prefix factory: its name and reply come from the spec."""

    def __init__(self, word: str, suffix: str = "") -> None:
        self.card = ToolCard(
            name=f"Echo_{word}_Tool", description="Repeats a word.", input_types={"query": "str"}
        )
        self.reply = word + suffix
        self.closed = False

    def execute(self, query: str = "", **_: Any) -> ToolResult:
        return ToolResult(ok=True, output=f"{self.reply}: {query}")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def echo_prefix() -> Iterator[list[EchoTool]]:
    """Register ``echo:WORD`` for one test; yields every tool the factory built."""
    made: list[EchoTool] = []

    def factory(settings: dict[str, Any], ctx: ToolContext) -> EchoTool:
        made.append(EchoTool(ctx.argument, **settings))
        return made[-1]

    register_tool("echo:", factory)
    yield made
    del TOOL_FACTORIES["echo:"]


def test_the_table_holds_the_papers_tools() -> None:
    assert {"Search_Tool", "Wikipedia_Search_Tool", "Python_Coder_Tool", "Base_Generator_Tool"} <= (
        set(TOOL_FACTORIES)
    )
    search, _ = find_factory("Search_Tool")
    [tool] = build_tools(["Search_Tool"], {}, documents=[{"title": "A", "text": "alpha beta"}])
    assert TOOL_FACTORIES["Search_Tool"] is search and tool.card.name == "Search_Tool"
    assert tool.execute(query="alpha").ok


def test_a_spec_prefix_maps_to_a_factory_in_an_env(echo_prefix: list[EchoTool]) -> None:
    env = AgentFlowEnv(
        tasks=numbered_tasks(2),
        tools=["echo:hello"],
        tool_kwargs={"echo:hello": {"suffix": "!"}},
        scorer=exact_scorer,
    )
    env.reset(options={"task_index": 0})
    *_, info = env.step("Tool Name: Echo_hello_Tool\nCommand: hi")
    assert info["tool_result"] == "hello!: hi" and echo_prefix[0].reply == "hello!"
    env.close()
    assert echo_prefix[0].closed


def test_unknown_names_and_double_registration_are_errors(echo_prefix: list[EchoTool]) -> None:
    with pytest.raises(ValueError, match=r"unknown tool 'Laser_Tool': use Base_Generator_Tool, "):
        find_factory("Laser_Tool")
    with pytest.raises(ValueError, match="or a spec starting with echo:"):
        find_factory("laser:beam")
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        register_tool("echo:", lambda settings, ctx: EchoTool("x"))
    register_tool("echo:", lambda settings, ctx: EchoTool("replaced"), replace=True)
    assert build_tools(["echo:x"], {})[0].reply == "replaced"


def test_a_failing_tool_closes_the_ones_built_before_it(echo_prefix: list[EchoTool]) -> None:
    with pytest.raises(ValueError, match="unknown tool 'Laser_Tool'"):
        AgentFlowEnv(tasks=numbered_tasks(2), tools=["echo:a", "Laser_Tool"])
    assert [t.closed for t in echo_prefix] == [True]


def test_search_tool_needs_a_corpus() -> None:
    with pytest.raises(ValueError, match="Search_Tool needs a corpus: pass documents="):
        AgentFlowEnv(tasks=numbered_tasks(2), tools=["Search_Tool"])


def test_base_generator_tool_gets_the_envs_engine() -> None:
    seen: list[GenerationRequest] = []

    def model(request: GenerationRequest) -> str:
        seen.append(request)
        return "forty-two"

    engine = CallableEngine(model)
    env = AgentFlowEnv(
        **lookup_env_kwargs(tools=["Base_Generator_Tool"], engine=engine, executor="direct")
    )
    tool = env.flow.tools["Base_Generator_Tool"]
    assert tool.engine is engine
    env.reset(options={"task_index": 0})
    *_, info = env.step("Tool Name: Base_Generator_Tool\nCommand: What is 6 * 7?")
    assert info["tool_result"] == "forty-two" and isinstance(seen[0], GenerationRequest)
    env.close()
    # its own engine in tool_kwargs wins (a spec is built), and none at all is a clear error
    spec = "python:tests.agentflow_env.test_config:echo_modules"
    env = AgentFlowEnv(
        **lookup_env_kwargs(
            tools=["Base_Generator_Tool"],
            engine=engine,
            tool_kwargs={"Base_Generator_Tool": {"engine": spec}},
        )
    )
    assert env.flow.tools["Base_Generator_Tool"].engine is not engine
    env.close()
    with pytest.raises(ValueError, match="Base_Generator_Tool needs an engine: pass engine="):
        AgentFlowEnv(**lookup_env_kwargs(tools=["Base_Generator_Tool"]))
