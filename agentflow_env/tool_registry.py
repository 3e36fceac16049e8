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

Toolsets: a name in :data:`TOOLSETS` stands for its tools, alone (``tools="paper"``) or inside a
list (``tools=["paper", "Search_Tool"]``). ``"paper"`` is the reference's four tools under the
names its planner was trained on (:mod:`tools.paper`): ``Generalist_Solution_Generator_Tool``
and ``Python_Code_Generator_Tool`` (need an engine: the env's, or ``{"engine": spec}`` in their
``tool_kwargs``), ``Ground_Google_Search_Tool`` (``{"backend": "web", "provider": ...}`` for a
web-search API; by default ``"local"``: BM25 over the env's corpus, said so in its card and in
``info["tool_backend"]``) and ``Wikipedia_RAG_Search_Tool`` (BM25 over a local dump, the env's
corpus by default, plus an engine that picks the pages). ``Web_Search_Tool`` is registered the
same way as ``Ground_Google_Search_Tool``.

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
    "LLM_TOOLS",
    "TOOLSETS",
    "TOOL_FACTORIES",
    "ToolContext",
    "ToolFactory",
    "build_tools",
    "expand_toolsets",
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


def _llm_settings(settings: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``settings`` with ``engine`` resolved (its own spec or function, else the env's engine)
    and the request factory LLM-backed tools need. Raises ValueError without an engine."""
    from agentflow_env.llm.base import GenerationRequest

    engine = settings.get("engine")
    if engine is None:
        settings["engine"] = ctx.engine()
        if settings["engine"] is None:
            raise ValueError(
                f"{ctx.spec} needs an engine: pass engine=... to the env (or "
                f"tool_kwargs={{{ctx.spec!r}: {{'engine': ...}}}})"
            )
    elif isinstance(engine, str) or not hasattr(engine, "generate"):
        from agentflow_env.llm import make_engine

        settings["engine"] = make_engine(engine)  # a spec in tool_kwargs, or a function
    # The tools build plain dicts (tools never import agentflow_env); engines want requests.
    settings.setdefault("request_factory", GenerationRequest.model_validate)
    return settings


def _base_generator_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    from tools.generator import BaseGeneratorTool

    return BaseGeneratorTool(**_llm_settings(settings, ctx))


def _generalist_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    from tools.paper import GeneralistSolutionGeneratorTool

    return GeneralistSolutionGeneratorTool(**_llm_settings(settings, ctx))


def _python_code_generator_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    """Settings: ``engine`` (the coder), ``sandbox`` (Python_Coder_Tool arguments, e.g.
    ``{"timeout_s": 10}``), ``temperature``, ``max_tokens``, ``max_query_chars``."""
    from tools.paper import PythonCodeGeneratorTool

    settings = _llm_settings(settings, ctx)
    settings["sandbox_options"] = dict(settings.pop("sandbox", None) or {})
    return PythonCodeGeneratorTool(**settings)


def _local_corpus(settings: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``settings`` with the env's corpus as ``documents`` unless they name their own."""
    if not any(k in settings for k in ("documents", "index_dir", "corpus_path")):
        if not ctx.documents:
            raise ValueError(
                f"{ctx.spec} searches a local corpus offline: pass documents=[{{'title','text'}}, "
                f"...] or tool_kwargs={{{ctx.spec!r}: {{'corpus_path': ...}}}} (or "
                f"{{'backend': 'web', ...}} where a web-search backend exists)"
            )
        settings["documents"] = list(ctx.documents)
    return settings


def _paper_search_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    """Settings: ``backend`` ``"local"`` (default: BM25 over the env's corpus or the given
    ``documents``/``corpus_path``/``index_dir``, with SearchTool's other arguments) or ``"web"``
    (WebSearchTool's arguments: ``provider``, ``url``, ``api_key``, ...)."""
    from tools.paper import PaperSearchTool
    from tools.search import SearchTool, WebSearchTool

    backend = settings.pop("backend", "local")
    if backend == "web":
        return PaperSearchTool(ctx.spec, WebSearchTool(**settings), "web")
    if backend != "local":
        raise ValueError(f"{ctx.spec}: backend must be 'local' or 'web', got {backend!r}")
    return PaperSearchTool(ctx.spec, SearchTool(**_local_corpus(settings, ctx)), "local")


def _wikipedia_rag_tool(settings: dict[str, Any], ctx: ToolContext) -> Tool:
    """Settings: ``engine`` (the page selector), ``max_pages``, ``max_selected``, and
    WikipediaSearchTool's (the dump: ``documents``/``corpus_path``/``index_dir``, default the
    env's corpus; ``passages_per_article``, ...)."""
    from tools.paper import WikipediaRAGSearchTool
    from tools.search import WikipediaSearchTool

    settings = _llm_settings(settings, ctx)
    own = {
        k: settings.pop(k)
        for k in ("engine", "request_factory", "max_pages", "max_selected")
        if k in settings
    }
    wiki = WikipediaSearchTool(**_local_corpus(settings, ctx))
    try:
        return WikipediaRAGSearchTool(wiki, **own)
    except BaseException:
        wiki.close()
        raise


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
    "Generalist_Solution_Generator_Tool": _generalist_tool,
    "Python_Code_Generator_Tool": _python_code_generator_tool,
    "Ground_Google_Search_Tool": _paper_search_tool,
    "Web_Search_Tool": _paper_search_tool,
    "Wikipedia_RAG_Search_Tool": _wikipedia_rag_tool,
    "mcp:": _mcp_tools,
    "mcp+http:": _mcp_tools,
    "mcp+https:": _mcp_tools,
}
"""tool name -> factory; keys ending in ``:`` are spec prefixes (see the module docstring)"""

TOOLSETS: dict[str, tuple[str, ...]] = {
    "paper": (
        "Generalist_Solution_Generator_Tool",
        "Python_Code_Generator_Tool",
        "Ground_Google_Search_Tool",
        "Wikipedia_RAG_Search_Tool",
    )
}
"""toolset name -> its tool names (``paper``: the reference's training tools, in its order)"""
LLM_TOOLS = frozenset(
    {
        "Base_Generator_Tool",
        "Generalist_Solution_Generator_Tool",
        "Python_Code_Generator_Tool",
        "Wikipedia_RAG_Search_Tool",
    }
)
"""tools that need an engine (the env's, unless their tool_kwargs name one)"""


def expand_toolsets(specs: str | Sequence[str | Tool]) -> list[str | Tool]:
    """``specs`` with every toolset name replaced by its tools (a single string must be a
    toolset); raises ValueError for a single string that is not one."""
    if isinstance(specs, str):
        if specs not in TOOLSETS:
            raise ValueError(
                f"tools={specs!r}: a single string must be a toolset ({', '.join(TOOLSETS)}); "
                "pass tool names as a list"
            )
        return list(TOOLSETS[specs])
    out: list[str | Tool] = []
    for spec in specs:
        out.extend(TOOLSETS[spec] if isinstance(spec, str) and spec in TOOLSETS else [spec])
    return out


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
    specs: str | Sequence[str | Tool],
    tool_kwargs: Mapping[str, Mapping[str, Any]],
    *,
    documents: Sequence[Mapping[str, Any]] = (),
    engine: Callable[[], Engine | None] = _no_engine,
    timeout_s: float = 60.0,
) -> list[Tool]:
    """Tools for ``specs`` (toolsets expanded, names/specs built by their factory, Tool objects
    kept as given; a factory's list of tools joins in order)."""
    built: list[Tool] = []
    made: list[Tool] = []  # built here: closed again if a later one fails
    try:
        for spec in expand_toolsets(specs):
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
