"""The local BM25 search tools: ``Search_Tool`` and ``Wikipedia_Search_Tool``.

:class:`SearchTool` retrieves titled passages from a local corpus with BM25 (the engine in
:mod:`tools.search.bm25`); :class:`WikipediaSearchTool` does the same over a local
Wikipedia-style dump and groups results by article (this module owns that article layout). Both
take documents, a JSONL corpus or an index directory built once with
``python -m tools.search index`` and memory-mapped on load.

Validation, batching and the passage layout come from :class:`~tools.search.base.BaseSearchTool`:
``execute`` never raises, and ``batch_execute`` serves many queries with one retrieval call,
which is what the vector environment uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from tools.base import ToolCard, ToolDemo, ToolResult
from tools.search.base import BaseSearchTool
from tools.search.bm25 import Backend, BM25Index, IndexSettings, build_index
from tools.search.format import render_articles
from tools.search.passages import Passage, SearchHit, iter_corpus

__all__ = ["SearchTool", "WikipediaSearchTool"]


class _LocalIndexMixin:
    """Opens exactly one local source (documents, corpus_path, index_dir) as a BM25Index."""

    @staticmethod
    def _open_index(
        documents: Iterable[Mapping[str, Any] | Passage] | None,
        corpus_path: str | os.PathLike[str] | None,
        index_dir: str | os.PathLike[str] | None,
        settings: IndexSettings | None,
        backend: Backend,
    ) -> BM25Index:
        given = [
            name
            for name, value in (
                ("documents", documents),
                ("corpus_path", corpus_path),
                ("index_dir", index_dir),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of documents=, corpus_path=, index_dir= "
                f"(got {', '.join(given) or 'none'})"
            )
        if index_dir is not None:
            if settings is not None:
                raise ValueError("settings= applies when building; a saved index keeps its own")
            return BM25Index.load(index_dir, backend=backend)
        if corpus_path is not None:
            return BM25Index.build(iter_corpus(corpus_path), settings, backend=backend)
        if isinstance(documents, (str, bytes, os.PathLike)):
            raise TypeError("documents= takes a list of passages; pass a file as corpus_path=")
        return BM25Index.build(documents or [], settings, backend=backend)


class SearchTool(_LocalIndexMixin, BaseSearchTool):
    """BM25 search (bm25s) over a local corpus: ``Search_Tool``.

    Args:
        documents: passages as mappings (``title``/``text``, or ``contents``) or
            :class:`Passage` objects; indexed in memory.
        corpus_path: a JSONL corpus, indexed in memory.
        index_dir: an index directory from ``python -m tools.search index`` (memory-mapped).
        top_k: passages returned per query unless ``execute(top_k=...)`` says otherwise.
        max_chars_per_passage: each passage's text is cut to this many characters in the output.
        max_query_chars: longer queries get an error result.
        max_top_k: the largest ``top_k`` a caller may ask for.
        settings: tokenizer/BM25 settings when building (stemming, stopwords, k1, b).
        backend: bm25s scoring backend; ``"auto"`` uses numba for large corpora when installed.

    Exactly one of ``documents``, ``corpus_path``, ``index_dir`` must be given.
    """

    runs_inline: ClassVar[bool] = True
    """in-process BM25 with capped query length: bounded cost, no external call (see
    tools.base.Tool)"""

    card = ToolCard(
        name="Search_Tool",
        description=(
            "Searches a local document collection with BM25 keyword matching and "
            "returns the most relevant passages, each with its title."
        ),
        input_types={"query": "str - the search query (keywords or a short question)"},
        output_type="str - numbered passages, one per line: 'Doc i (Title: ...) text'",
        primary_input="query",
        demo_commands=(
            ToolDemo(
                command="founder of Varnok Industries",
                description="find passages about who founded a company",
            ),
            ToolDemo(command="Lake Orvessa country", description="look up a single fact"),
        ),
        limitations=(
            "Keyword matching only: a passage must share words with the query.",
            "Searches only the local collection, not the web.",
            "Answers one question per query; multi-hop questions need several searches.",
        ),
        best_practices=(
            "Put the exact names of the entities you are looking for in the query.",
            "Search for one fact at a time and use names found in earlier results.",
        ),
    )

    def __init__(
        self,
        documents: Sequence[Mapping[str, Any] | Passage] | None = None,
        *,
        corpus_path: str | os.PathLike[str] | None = None,
        index_dir: str | os.PathLike[str] | None = None,
        top_k: int = 3,
        max_chars_per_passage: int = 1000,
        max_query_chars: int = 2000,
        max_top_k: int = 50,
        settings: IndexSettings | None = None,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(
            top_k=top_k,
            max_chars_per_passage=max_chars_per_passage,
            max_query_chars=max_query_chars,
            max_top_k=max_top_k,
        )
        self.index = self._open_index(documents, corpus_path, index_dir, settings, backend)

    @classmethod
    def build_index(
        cls,
        corpus: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Passage],
        out_dir: str | os.PathLike[str],
        settings: IndexSettings | None = None,
    ) -> Path:
        """Build an index from a JSONL path or documents and save it to ``out_dir``."""
        return build_index(corpus, out_dir, settings)

    @property
    def num_passages(self) -> int:
        return self.index.num_passages

    def _search_batch(self, queries: list[str], k: int) -> list[list[SearchHit] | Exception]:
        return list(self.index.search(queries, k))

    def close(self) -> None:
        if not self._closed:
            self.index.close()
        super().close()


class WikipediaSearchTool(SearchTool):
    """Search over a local Wikipedia-style dump, grouped by article: ``Wikipedia_Search_Tool``.

    Same sources and index format as :class:`SearchTool` (a dump is a JSONL of passages with
    ``title`` + ``text``, or Search-R1's ``contents``). ``top_k`` counts articles; each shows up
    to ``passages_per_article`` of its best-matching passages.
    """

    card = ToolCard(
        name="Wikipedia_Search_Tool",
        description=(
            "Searches a local Wikipedia dump and returns the best-matching articles, "
            "each with its most relevant passages."
        ),
        input_types={"query": "str - the search query (an entity name or keywords)"},
        output_type="str - numbered articles: 'Article i: Title' followed by '- passage' lines",
        primary_input="query",
        demo_commands=(
            ToolDemo(
                command="Marie Curie Nobel Prize",
                description="find the article and passages about a person",
            ),
        ),
        limitations=("Keyword matching over a fixed local dump; it may be out of date.",),
        best_practices=("Query with the article's subject name plus one or two keywords.",),
    )

    def __init__(
        self,
        documents: Sequence[Mapping[str, Any] | Passage] | None = None,
        *,
        passages_per_article: int = 2,
        **kwargs: Any,
    ) -> None:
        if passages_per_article < 1:
            raise ValueError(f"passages_per_article must be >= 1, got {passages_per_article}")
        self.passages_per_article = passages_per_article
        super().__init__(documents, **kwargs)

    def _candidates(self, top_k: int) -> int:
        # several passages of one article often outrank the next article: fetch extra
        return top_k * (self.passages_per_article + 2)

    def _render(self, query: str, hits: list[SearchHit], top_k: int) -> ToolResult:
        articles: dict[str, list[SearchHit]] = {}
        for hit in hits:  # hits arrive best first, so insertion order ranks the articles
            articles.setdefault(hit.title, []).append(hit)
        kept = [(title, group[: self.passages_per_article]) for title, group in articles.items()][
            :top_k
        ]
        data = [
            {
                "title": title,
                "score": group[0].score,
                "passages": [{"id": h.id, "text": h.text, "score": h.score} for h in group],
            }
            for title, group in kept
        ]
        return ToolResult(
            ok=True,
            output=render_articles(kept, self.max_chars_per_passage),
            data={
                "query": query,
                "articles": data,
                "hits": [h.model_dump() for _, g in kept for h in g],
            },
        )
