"""Which of this project's tools ``python -m tools.mcp serve`` can build, and building them.

Kept apart from :mod:`tools.mcp.server` so that the command line checks its arguments (and
fails with a one-line error) without importing the MCP SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.base import Tool

__all__ = ["SERVABLE_TOOLS", "check_tool_names", "make_tools"]

SERVABLE_TOOLS = ("Python_Coder_Tool", "Search_Tool", "Wikipedia_Search_Tool")
"""tools ``python -m tools.mcp serve`` can build (the others need an engine or an API key)"""

SEARCH_TOOLS = ("Search_Tool", "Wikipedia_Search_Tool")


def make_tools(
    names: Sequence[str],
    *,
    corpus: str | Path | None = None,
    index_dir: str | Path | None = None,
    tool_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Tool]:
    """Build the named tools (see :data:`SERVABLE_TOOLS`); the search tools index ``corpus``
    (JSONL) or load ``index_dir``. ``tool_kwargs``: per-tool constructor arguments."""
    check_tool_names(names, corpus, index_dir, tool_kwargs)
    tool_kwargs = tool_kwargs or {}
    built: list[Tool] = []
    try:
        for name in names:
            kwargs = dict(tool_kwargs.get(name, {}))
            if name == "Python_Coder_Tool":
                from tools.python_coder import PythonCoderTool

                built.append(PythonCoderTool(**kwargs))
                continue
            from tools.search import SearchTool, WikipediaSearchTool

            if "index_dir" not in kwargs and "corpus_path" not in kwargs:
                kwargs.update(
                    {"index_dir": index_dir} if index_dir is not None else {"corpus_path": corpus}
                )
            cls = SearchTool if name == "Search_Tool" else WikipediaSearchTool
            built.append(cls(**kwargs))
    except BaseException:
        for tool in built:
            tool.close()
        raise
    return built


def check_tool_names(
    names: Sequence[str],
    corpus: str | Path | None,
    index_dir: str | Path | None,
    tool_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """The cheap checks of :func:`make_tools` (ValueError naming the fix), before any work."""
    if not names:
        raise ValueError(
            f"no tools to serve: pass --tools with some of {', '.join(SERVABLE_TOOLS)}"
        )
    unknown = [n for n in names if n not in SERVABLE_TOOLS]
    if unknown:
        raise ValueError(
            f"cannot serve {unknown[0]!r}: servable tools are {', '.join(SERVABLE_TOOLS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"a tool is named twice in {list(names)}")
    stray = sorted(set(tool_kwargs or {}) - set(names))
    if stray:
        raise ValueError(f"tool_kwargs names {stray[0]!r}, which is not served")
    own = {n for n in names if {"index_dir", "corpus_path"} & set((tool_kwargs or {}).get(n, {}))}
    searching = [n for n in names if n in SEARCH_TOOLS and n not in own]
    if searching and corpus is None and index_dir is None:
        raise ValueError(
            f"{searching[0]} needs a corpus: pass --corpus FILE.jsonl or --index-dir DIR"
        )
    if corpus is not None and index_dir is not None:
        raise ValueError("give --corpus or --index-dir, not both")
    for flag, path, is_ok in (
        ("--corpus", corpus, Path.is_file),
        ("--index-dir", index_dir, Path.is_dir),
    ):
        if path is not None and not is_ok(Path(path)):
            raise ValueError(
                f"{flag} {str(path)!r}: no such {'file' if flag == '--corpus' else 'directory'}"
            )
