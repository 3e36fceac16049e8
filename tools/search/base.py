"""The base of every search tool: input validation, batching, and the result text.

:class:`BaseSearchTool` owns what the planner sees of a search: it validates queries and
``top_k`` (bad input becomes an ``ok=False`` :class:`~tools.base.ToolResult`, never an
exception), serves a batch of queries with one backend call, and writes the hits as numbered,
titled passages (``Doc i (Title: ...) text [source: url]``). Backends subclass it and implement
``_search_batch``: the local BM25 tools in :mod:`tools.search.local`, the retrieval-server and
web-search clients in :mod:`tools.search.remote`. :class:`SearchBackendError` is the error any
backend reports when it cannot answer.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from tools.base import ToolCard, ToolResult
from tools.search.format import render_passages
from tools.search.passages import SearchHit

__all__ = ["BaseSearchTool", "SearchBackendError"]

logger = logging.getLogger(__name__)


class SearchBackendError(RuntimeError):
    """A search backend could not answer (after retries, or with an unusable response)."""


_ToolT = TypeVar("_ToolT", bound="BaseSearchTool")


class BaseSearchTool(abc.ABC):
    """Validation, batching and formatting shared by every search tool.

    Subclasses set ``card`` and implement :meth:`_search_batch`; they may override
    :meth:`_candidates` (how many passages to fetch for ``top_k`` results) and :meth:`_render`.
    """

    card: ToolCard

    def __init__(
        self,
        *,
        top_k: int = 3,
        max_chars_per_passage: int = 1000,
        max_query_chars: int = 2000,
        max_top_k: int = 50,
    ) -> None:
        if not 1 <= max_top_k:
            raise ValueError(f"max_top_k must be >= 1, got {max_top_k}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= max_top_k:
            raise ValueError(f"top_k must be an integer in [1, {max_top_k}], got {top_k!r}")
        if max_chars_per_passage < 20:
            raise ValueError(f"max_chars_per_passage must be >= 20, got {max_chars_per_passage}")
        if max_query_chars < 1:
            raise ValueError(f"max_query_chars must be >= 1, got {max_query_chars}")
        self.top_k = top_k
        self.max_chars_per_passage = max_chars_per_passage
        self.max_query_chars = max_query_chars
        self.max_top_k = max_top_k
        self._closed = False

    # ---- what subclasses provide
    @abc.abstractmethod
    def _search_batch(self, queries: list[str], k: int) -> list[list[SearchHit] | Exception]:
        """Hits for every query (or the exception that query failed with)."""

    def _candidates(self, top_k: int) -> int:
        return top_k

    def _render(self, query: str, hits: list[SearchHit], top_k: int) -> ToolResult:
        hits = hits[:top_k]
        return ToolResult(
            ok=True,
            output=render_passages(hits, self.max_chars_per_passage),
            data={"query": query, "hits": [h.model_dump() for h in hits]},
        )

    # ---- public API
    def execute(self, query: Any = None, top_k: Any = None, **extra: Any) -> ToolResult:
        """Search for ``query``; returns numbered, titled passages. Never raises."""
        if extra:
            return ToolResult.failure(
                f"unexpected input(s) for {self.card.name}: {', '.join(sorted(extra))}; "
                "expected: query (and optionally top_k)"
            )
        return self.batch_execute([query], top_k=top_k)[0]

    def batch_execute(self, queries: Sequence[Any], top_k: Any = None) -> list[ToolResult]:
        """One result per query, from a single batched retrieval. Never raises."""
        if isinstance(queries, (str, bytes)):
            return [ToolResult.failure("queries must be a list of strings, not one string")]
        try:
            queries = list(queries)
        except TypeError:
            return [ToolResult.failure("queries must be a sequence of strings")]
        if self._closed:
            return [ToolResult.backend_failure(f"{self.card.name} is closed") for _ in queries]
        k_error, k = self._check_top_k(top_k)
        results: list[ToolResult | None] = [None] * len(queries)
        valid: list[tuple[int, str]] = []
        for pos, query in enumerate(queries):
            error = k_error or self._check_query(query)
            if error:
                results[pos] = ToolResult.failure(error, query=_preview(query))
            else:
                valid.append((pos, query.strip()))
        if valid:
            try:
                batch = self._search_batch([q for _, q in valid], self._candidates(k))
            except Exception as exc:  # a backend bug must not end the episode: report it
                logger.exception("%s: search failed", self.card.name)
                batch = [exc] * len(valid)
            for (pos, query), hits in zip(valid, batch, strict=False):
                if isinstance(
                    hits, Exception
                ):  # the backend could not answer: not the query's fault
                    results[pos] = ToolResult.backend_failure(f"search failed: {hits}", query=query)
                else:
                    results[pos] = self._render(query, hits, k)
        missing = ToolResult.backend_failure(f"{self.card.name}: the backend returned no result")
        return [r if r is not None else missing for r in results]

    def close(self) -> None:
        """Release resources; later calls return an error result."""
        self._closed = True

    def __enter__(self: _ToolT) -> _ToolT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- validation
    def _check_query(self, query: Any) -> str | None:
        if not isinstance(query, str):
            return f"query must be a string, got {type(query).__name__}"
        if not query.strip():
            return "query is empty; write the words to search for"
        if len(query) > self.max_query_chars:
            return (
                f"query is too long ({len(query)} characters; the limit is "
                f"{self.max_query_chars}); write a short search query"
            )
        return None

    def _check_top_k(self, top_k: Any) -> tuple[str | None, int]:
        if top_k is None:
            return None, self.top_k
        if isinstance(top_k, str) and top_k.strip().isdigit():
            top_k = int(top_k.strip())  # planners write numbers as text
        if (
            isinstance(top_k, bool)
            or not isinstance(top_k, int)
            or not 1 <= top_k <= self.max_top_k
        ):
            return f"top_k must be an integer between 1 and {self.max_top_k}, got {top_k!r}", 0
        return None, top_k


def _preview(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:limit]
