"""Search tools for the agent: local BM25, a retrieval-server client, web search, and a server.

The package's rooms, bottom to top (each imports only the ones above it in this list)::

    passages.py   Passage, SearchHit; the corpus record format (JSONL, Search-R1 ``contents``)
    bm25.py       BM25Index: the bm25s engine, its saved index directory, batched retrieval
    format.py     the text the tools print (Doc/Article lines): writers and readers
    base.py       BaseSearchTool: validation, batching, results; SearchBackendError
    local.py      SearchTool (Search_Tool), WikipediaSearchTool (Wikipedia_Search_Tool)
    protocol.py   the Search-R1 /retrieve request and response, written and read
    remote.py     RetrievalServerSearchTool (Retrieval_Search_Tool), WebSearchTool
                  (Web_Search_Tool), with timeouts and bounded retries
    server.py     make_retrieval_server: a BM25Index served over /retrieve
    cli.py        ``python -m tools.search index | query | serve``

Import the public names from here (``from tools.search import SearchTool``); every tool's
``execute`` returns a :class:`~tools.base.ToolResult` and never raises for bad input.
"""

from tools.search.base import BaseSearchTool, SearchBackendError
from tools.search.bm25 import BM25Index, IndexSettings, build_index, numba_available
from tools.search.cli import main
from tools.search.local import SearchTool, WikipediaSearchTool
from tools.search.passages import Passage, SearchHit, iter_corpus, load_corpus
from tools.search.remote import (
    MissingAPIKeyError,
    RetrievalServerSearchTool,
    RetryPolicy,
    WebSearchConfig,
    WebSearchTool,
)
from tools.search.server import RetrieveHandler, make_retrieval_server, serve_in_thread

__all__ = [
    "BM25Index",
    "BaseSearchTool",
    "IndexSettings",
    "MissingAPIKeyError",
    "Passage",
    "RetrievalServerSearchTool",
    "RetrieveHandler",
    "RetryPolicy",
    "SearchBackendError",
    "SearchHit",
    "SearchTool",
    "WebSearchConfig",
    "WebSearchTool",
    "WikipediaSearchTool",
    "build_index",
    "iter_corpus",
    "load_corpus",
    "main",
    "make_retrieval_server",
    "numba_available",
    "serve_in_thread",
]
