"""The Search-R1 ``/retrieve`` wire format, both sides: requests and responses.

The protocol of Search-R1's ``retrieval_server.py`` (dense or BM25 retrievers behind it)::

    POST /retrieve  {"queries": ["q1", ...], "topk": 3, "return_scores": true}
    ->  {"result": [[{"document": {"id": ..., "title": ..., "text": ...,
                                   "contents": "\\"Title\\"\\ntext"}, "score": 0.8},
                     ...], ...]}

Without ``return_scores`` each inner item is the document itself. This module writes and reads
both messages: the client (:class:`~tools.search.remote.RetrievalServerSearchTool`) uses
:func:`retrieve_request` and :func:`parse_retrieve_response`, the server
(:mod:`tools.search.server`) :func:`parse_retrieve_request` and :func:`retrieve_response`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from tools.search.base import SearchBackendError
from tools.search.passages import SearchHit, contents_of, passage_from_record

__all__ = [
    "RETRIEVE_PATH",
    "parse_retrieve_request",
    "parse_retrieve_response",
    "retrieve_request",
    "retrieve_response",
]

RETRIEVE_PATH = "/retrieve"


def retrieve_request(queries: Sequence[str], k: int) -> dict[str, Any]:
    """The body of one ``/retrieve`` request for ``queries`` (scores asked for)."""
    return {"queries": list(queries), "topk": k, "return_scores": True}


def parse_retrieve_request(
    request: Any, *, default_top_k: int, max_queries: int
) -> tuple[list[str], int, bool]:
    """``(queries, topk, return_scores)`` of a decoded request body; ``ValueError`` if bad.

    A missing, null or 0 ``topk`` means ``default_top_k``, as in Search-R1.
    """
    if not isinstance(request, dict):
        raise ValueError("body must be a JSON object")
    queries = request.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ValueError("'queries' must be a list of strings")
    if len(queries) > max_queries:
        raise ValueError(f"at most {max_queries} queries per request")
    k = request.get("topk") or default_top_k
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError("'topk' must be a positive integer")
    return queries, k, bool(request.get("return_scores", False))


def retrieve_response(
    hits_per_query: Iterable[Sequence[SearchHit]], *, with_scores: bool
) -> dict[str, Any]:
    """The response body: documents as Search-R1's BM25 retriever returns them.

    Each document has ``id``, ``title``, ``text`` and ``contents``; with ``with_scores`` each is
    wrapped as ``{"document": ..., "score": ...}``.
    """
    result = []
    for hits in hits_per_query:
        docs = [
            {"id": h.id, "title": h.title, "text": h.text, "contents": contents_of(h.title, h.text)}
            for h in hits
        ]
        result.append(
            [{"document": d, "score": h.score} for d, h in zip(docs, hits, strict=True)]
            if with_scores
            else docs
        )
    return {"result": result}


def parse_retrieve_response(body: Any, n_queries: int, k: int) -> list[list[SearchHit] | Exception]:
    """The hits for each of ``n_queries`` queries (at most ``k`` each) in a response body.

    A body without one result list per query raises :class:`SearchBackendError`; a malformed
    list for one query becomes that query's :class:`SearchBackendError`, the others still count.
    Documents may carry ``title``/``text`` or only ``contents``, with or without scores.
    """
    result = body.get("result") if isinstance(body, dict) else None
    if not isinstance(result, list) or len(result) != n_queries:
        raise SearchBackendError(
            f"malformed /retrieve response: expected 'result' with {n_queries} list(s), got "
            f"{json.dumps(body)[:200]}"
        )
    parsed: list[list[SearchHit] | Exception] = []
    for items in result:
        try:
            parsed.append(_parse_hits(items, k))
        except (TypeError, ValueError, KeyError) as exc:
            parsed.append(SearchBackendError(f"malformed /retrieve result: {exc}"))
    return parsed


def _parse_hits(items: Any, k: int) -> list[SearchHit]:
    if not isinstance(items, list):
        raise TypeError(f"expected a list of documents, got {type(items).__name__}")
    hits = []
    for rank, item in enumerate(items[:k], start=1):
        if isinstance(item, dict) and "document" in item:
            doc, score = item["document"], float(item.get("score") or 0.0)
        else:
            doc, score = item, 0.0
        if isinstance(doc, str):
            doc = {"contents": doc}
        passage = passage_from_record(doc, default_id=str(rank - 1))
        hits.append(
            SearchHit(
                rank=rank,
                id=passage.id if "id" in doc else None,
                title=passage.title,
                text=passage.text,
                score=score,
            )
        )
    return hits
