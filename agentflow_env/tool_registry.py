"""The tool table: tool name (or spec prefix) -> factory that builds the tool for an env.

``tools=["Search_Tool", ...]`` in an env's settings are keys of :data:`TOOL_FACTORIES`. A key
that ends with ``:`` is a prefix: a spec such as ``"mcp:python server.py"`` is looked up by its
exact name first, then by its prefix (``"mcp:"``), and the factory gets the text after the
prefix as :attr:`ToolContext.argument`. :func:`register_tool` adds an entry. A factory may
return several tools (an MCP server's): they all join the env.

MCP servers (``pip install 'agentflow-gym[mcp]'``): ``"mcp:python my_server.py"`` starts a stdio
server, ``"mcp+http://127.0.0.1:8765/mcp"`` (or ``mcp+https://``) connects to a streamable-HTTP
one; every tool the server lists joins the env. Their ``tool_kwargs`` entry (keyed by the spec)
holds :func:`tools.mcp.mcp_tools` arguments, e.g. ``{"timeout_s": 10, "name_prefix": "calc_"}``.

A factory takes ``(settings, context)``: ``settings`` are the tool's ``tool_kwargs`` entry (a
fresh dict it may change), ``context`` what the env knows that a tool may need (the corpus, the
env's engine). ``tools`` never imports ``agentflow_env``: the factories here import the tool
classes, not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentflow_env.llm.base import Engine
from tools.base import Tool

__all__ = [
    "TOOL_FACTORIES",
    "ToolContext",
    "ToolFactory",
    "build_tools",
    "find_factory",
    "register_tool",
]


def _no_engine() -> Engine | None:
    return None


@dataclass(frozen=True)
class ToolContext:
    """What the env passes a tool factory besides the tool's own settings."""

    spec: str
    """the name or spec as written in ``tools``"""
    argument: str = ""
    """for a prefix entry, the text after the prefix (``"python server.py"`` of
    ``"mcp:python server.py"``); empty for an exact name"""
    documents: Sequence[Mapping[str, Any]] = ()
    """the corpus: the env's ``documents``, else the generated task set's"""
    engine: Callable[[], Engine | None] = field(default=_no_engine)
    """the env's engine: its ``engine`` setting, built on the first call and shared with the
    LLM modules; None when the env has none"""
    timeout_s: float = 60.0
    """the env's per-call tool timeout"""


ToolFactory = Callable[[dict[str, Any], ToolContext], Tool | Sequence[Tool]]


# ------------------------------------------------------------------------------- factories
def _search_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    from tools.search import SearchTool

    own_corpus = "index_dir" in settings or "corpus_path" in settings
    if not own_corpus:
        if not ctx.documents:
            raise ValueError(
                "Search_Tool needs a corpus: pass documents=[{'title','text'}, ...], "
                "tool_kwargs={'Search_Tool': {'corpus_path': ...}}, or tools=[...]"
            )
        settings["documents"] = list(ctx.documents)
    return SearchTool(**settings)


def _wikipedia_search_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    from tools.search import WikipediaSearchTool

    return WikipediaSearchTool(**settings)


def _python_coder_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    from tools.python_coder import PythonCoderTool

    return PythonCoderTool(**settings)


def _base_generator_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    from agentflow_env.llm.base import GenerationRequest
    from tools.generator import BaseGeneratorTool

    engine = settings.get("engine")
    if engine is None:
        settings["engine"] = ctx.engine()
        if settings["engine"] is None:
            raise ValueError(
                "Base_Generator_Tool needs an engine: pass engine=... to the env (or "
                "tool_kwargs={'Base_Generator_Tool': {'engine': ...}})"
            )
    elif isinstance(engine, str) or not hasattr(engine, "generate"):
        from agentflow_env.llm import make_engine

        settings["engine"] = make_engine(engine)  # a spec in tool_kwargs, or a function
    # The tool builds plain dicts (tools never import agentflow_env); engines want requests.
    settings.setdefault("request_factory", GenerationRequest.model_validate)
    return BaseGeneratorTool(**settings)


def _mcp_tools(settings: dict[str, Any], ctx: ToolContext) -> Sequence[Tool]:
    """``mcp:COMMAND`` (stdio) or ``mcp+http(s)://URL``: every tool the server lists."""
    try:
        from tools.mcp import mcp_tools
    except ModuleNotFoundError as exc:  # the optional extra
        raise ValueError(f"{ctx.spec!r}: {exc}") from exc
    server = ctx.spec.removeprefix("mcp+") if ctx.spec.startswith("mcp+") else ctx.argument
    if not server:
        raise ValueError(f"{ctx.spec!r} names no server: write e.g. 'mcp:python my_server.py'")
    settings.setdefault("timeout_s", ctx.timeout_s)
    return mcp_tools(server, **settings)


TOOL_FACTORIES: dict[str, ToolFactory] = {
    "Search_Tool": _search_tool,
    "Wikipedia_Search_Tool": _wikipedia_search_tool,
    "Python_Coder_Tool": _python_coder_tool,
    "Base_Generator_Tool": _base_generator_tool,
    "mcp:": _mcp_tools,
    "mcp+http:": _mcp_tools,
    "mcp+https:": _mcp_tools,
}
"""tool name -> factory; keys ending in ``:`` are spec prefixes (see the module docstring)"""


def register_tool(key: str, factory: ToolFactory, *, replace: bool = False) -> None:
    """Add ``key`` (a tool name, or a prefix ending in ``:``) to :data:`TOOL_FACTORIES`."""
    if not key or not callable(factory):
        raise ValueError("register_tool needs a non-empty key and a callable factory")
    if key in TOOL_FACTORIES and not replace:
        raise ValueError(f"tool {key!r} is already registered; pass replace=True to override it")
    TOOL_FACTORIES[key] = factory


def find_factory(spec: str) -> tuple[ToolFactory, str]:
    """The factory of ``spec`` and its argument: the exact name first, then its prefix."""
    if spec in TOOL_FACTORIES:
        return TOOL_FACTORIES[spec], ""
    prefix, colon, argument = spec.partition(":")
    if colon and f"{prefix}:" in TOOL_FACTORIES:
        return TOOL_FACTORIES[f"{prefix}:"], argument.strip()
    names = sorted(k for k in TOOL_FACTORIES if not k.endswith(":"))
    prefixes = sorted(k for k in TOOL_FACTORIES if k.endswith(":"))
    specs = f", or a spec starting with {', '.join(prefixes)}" if prefixes else ""
    raise ValueError(
        f"unknown tool {spec!r}: use {', '.join(names)}{specs}, pass a Tool instance, "
        "or register one with agentflow_env.tool_registry.register_tool"
    )


def build_tools(
    specs: Sequence[str | Tool],
    tool_kwargs: Mapping[str, Mapping[str, Any]],
    *,
    documents: Sequence[Mapping[str, Any]] = (),
    engine: Callable[[], Engine | None] = _no_engine,
    timeout_s: float = 60.0,
) -> list[Tool]:
    """Tools for ``specs`` (names/specs built by their factory, Tool objects kept as given; a
    factory's list of tools joins in order)."""
    built: list[Tool] = []
    made: list[Tool] = []  # built here: closed again if a later one fails
    try:
        for spec in specs:
            if not isinstance(spec, str):
                built.append(spec)
                continue
            factory, argument = find_factory(spec)
            context = ToolContext(spec, argument, documents, engine, timeout_s)
            product = factory(dict(tool_kwargs.get(spec, {})), context)
            several = isinstance(product, Sequence)
            made.extend(product if several else [product])  # type: ignore[list-item]
            built.extend(product if several else [product])  # type: ignore[list-item]
    except BaseException:
        for tool in made:
            close = getattr(tool, "close", None)
            if close is not None:
                close()
        raise
    return built
