"""Search tools: BM25 over a local corpus, Wikipedia-style search, and the ``index`` CLI.

``SearchTool`` (``Search_Tool``) retrieves titled passages from a local corpus with BM25 (bm25s);
``WikipediaSearchTool`` (``Wikipedia_Search_Tool``) does the same over a local Wikipedia-style
dump and groups results by article. Both read an index built once and memory-mapped on load::

    python -m tools.search index CORPUS.jsonl --out DIR      # build and save an index
    python -m tools.search query DIR "who founded Varnok"    # try it
    python -m tools.search serve DIR --port 8000             # Search-R1 style /retrieve server

Network backends (``RetrievalServerSearchTool``, ``WebSearchTool``) live in
:mod:`tools.web_search` and are re-exported here.

Every tool's ``execute`` returns a :class:`~tools.base.ToolResult` and never raises: bad input
(non-string, blank, overlong query; bad ``top_k``; unknown inputs) and backend failures become
``ok=False`` results with a message. ``batch_execute`` serves many queries with one retrieval
call, which is what the vector environment uses.
"""

from __future__ import annotations

import abc
import argparse
import logging
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tools.base import ToolCard, ToolDemo, ToolResult
from tools.retrieval import (
    Backend,
    BM25Index,
    IndexSettings,
    Passage,
    SearchHit,
    build_index,
    iter_corpus,
    load_corpus,
)
from tools.search_format import render_articles, render_passages

if TYPE_CHECKING:  # imported lazily at run time (see __getattr__): web_search imports this module
    from tools.web_search import (
        MissingAPIKeyError,
        RetrievalServerSearchTool,
        RetryPolicy,
        SearchBackendError,
        WebSearchConfig,
        WebSearchTool,
    )

__all__ = [
    "Passage",
    "SearchHit",
    "IndexSettings",
    "BM25Index",
    "BaseSearchTool",
    "SearchTool",
    "WikipediaSearchTool",
    "RetrievalServerSearchTool",
    "WebSearchTool",
    "WebSearchConfig",
    "RetryPolicy",
    "SearchBackendError",
    "MissingAPIKeyError",
    "build_index",
    "load_corpus",
    "main",
]

logger = logging.getLogger(__name__)

_LAZY = {
    "RetrievalServerSearchTool",
    "WebSearchTool",
    "WebSearchConfig",
    "RetryPolicy",
    "SearchBackendError",
    "MissingAPIKeyError",
}


def __getattr__(name: str) -> Any:
    # tools.web_search imports BaseSearchTool from here; re-export its names lazily (no cycle)
    if name in _LAZY:
        from tools import web_search

        return getattr(web_search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            return [ToolResult.failure(f"{self.card.name} is closed") for _ in queries]
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
                if isinstance(hits, Exception):
                    results[pos] = ToolResult.failure(f"search failed: {hits}", query=query)
                else:
                    results[pos] = self._render(query, hits, k)
        missing = ToolResult.failure(f"{self.card.name}: the backend returned no result")
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


# --------------------------------------------------------------------------- CLI


def _cli_index(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    settings = IndexSettings(
        stopwords=None if args.no_stopwords else "en",
        stemmer=None if args.no_stem else args.stemmer,
        k1=args.k1,
        b=args.b,
    )
    start = time.perf_counter()
    out = build_index(Path(args.corpus), Path(args.out), settings)
    index = BM25Index.load(out, backend="numpy")
    Console().print(
        f"[green]indexed[/green] {index.num_passages:,} passages into {out} "
        f"in {time.perf_counter() - start:.1f} s "
        f"({index.memory_bytes() / 2**20:.1f} MiB of score arrays)"
    )
    index.close()
    return 0


def _cli_query(args: argparse.Namespace) -> int:
    from rich.console import Console

    cls = WikipediaSearchTool if args.wikipedia else SearchTool
    with cls(index_dir=args.index_dir, top_k=args.top_k) as tool:
        result = tool.execute(query=args.query)
    console = Console()
    if result.ok:
        console.print(result.output, markup=False, highlight=False, soft_wrap=True)
        return 0
    console.print(f"[red]error:[/red] {result.error}")
    return 1


def _cli_serve(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tools.web_search import make_retrieval_server

    index = BM25Index.load(args.index_dir)
    server = make_retrieval_server(index, host=args.host, port=args.port, default_top_k=args.top_k)
    host, port = str(server.server_address[0]), int(server.server_address[1])
    address = f"http://{host}:{port}/retrieve"
    Console().print(
        f"serving {index.num_passages:,} passages at {address} (Ctrl-C to stop)", soft_wrap=True
    )
    sys.stdout.flush()  # the address line must reach a pipe (scripts wait for it) before serving
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        index.close()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.search", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="build a BM25 index from a JSONL corpus and save it")
    p.add_argument("corpus", help="JSONL: {id, title, text} or {id, contents} per line")
    p.add_argument("--out", required=True, help="index directory to write")
    p.add_argument("--stemmer", default="english", help="Snowball language (PyStemmer)")
    p.add_argument("--no-stem", action="store_true", help="do not stem words")
    p.add_argument("--no-stopwords", action="store_true", help="keep English stopwords")
    p.add_argument("--k1", type=float, default=1.5, help="BM25 k1")
    p.add_argument("--b", type=float, default=0.75, help="BM25 b")
    p.set_defaults(func=_cli_index)
    p = sub.add_parser("query", help="search a saved index")
    p.add_argument("index_dir")
    p.add_argument("query")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--wikipedia", action="store_true", help="group results by article")
    p.set_defaults(func=_cli_query)
    p = sub.add_parser("serve", help="serve a saved index over the Search-R1 /retrieve protocol")
    p.add_argument("index_dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--top-k", type=int, default=3, help="default topk when a request has none")
    p.set_defaults(func=_cli_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tools.search``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError, ImportError) as exc:
        from rich.console import Console

        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
