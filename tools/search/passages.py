"""Passages and search hits, and the corpus record format (JSONL and Search-R1 ``contents``).

This module owns the text of one document record, both ways:

- reading: :func:`passage_from_record` accepts ``{"id", "title", "text"}`` records and Search-R1 /
  FlashRAG ``{"id", "contents"}`` records whose first line is the (optionally quoted) title;
  :func:`iter_corpus` / :func:`load_corpus` stream a JSONL corpus of either kind;
- writing: :func:`contents_of` writes the ``contents`` field (``"Title"`` then the text on the
  next line) that Search-R1's retrievers return and :func:`passage_from_record` reads back.

:class:`Passage` (a titled unit of text) and :class:`SearchHit` (a ranked, scored passage) are
the values every search backend in :mod:`tools.search` returns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = [
    "Passage",
    "SearchHit",
    "contents_of",
    "iter_corpus",
    "load_corpus",
    "passage_from_record",
]


class Passage(BaseModel):
    """One retrievable unit of text: a titled passage."""

    model_config = ConfigDict(frozen=True)

    title: str
    text: str
    id: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_str(cls, value: Any) -> Any:
        # corpora use both integer and string ids; one type keeps hits and JSON uniform
        return None if value is None else str(value)


class SearchHit(BaseModel):
    """One retrieved passage with its rank (1-based) and BM25 score."""

    model_config = ConfigDict(frozen=True)

    rank: int
    id: str | None
    title: str
    text: str
    score: float
    url: str | None = None
    """source address (web search results only)"""


# --------------------------------------------------------------------------- corpus loading


def passage_from_record(record: Mapping[str, Any] | Passage, default_id: str) -> Passage:
    """Turn one corpus record into a :class:`Passage`.

    Accepts ``{"title", "text"}`` records and Search-R1 / FlashRAG style ``{"contents"}`` records
    whose first line is the (optionally quoted) title and the rest the text.
    Raises ``ValueError`` for records with neither ``text`` nor ``contents``.
    """
    if isinstance(record, Passage):
        return record if record.id is not None else record.model_copy(update={"id": default_id})
    if not isinstance(record, Mapping):
        raise TypeError(f"a document must be a mapping or a Passage, got {type(record).__name__}")
    doc_id = record.get("id", record.get("_id", default_id))
    if "text" in record:
        title, text = record.get("title") or "", record["text"]
    elif "contents" in record:
        head, _, rest = str(record["contents"]).partition("\n")
        title, text = (record.get("title") or head.strip().strip('"')), rest  # see contents_of
    else:
        raise ValueError(f"document {doc_id!r} has neither 'text' nor 'contents'")
    if not isinstance(title, str) or not isinstance(text, str):
        raise ValueError(f"document {doc_id!r}: 'title' and 'text' must be strings")
    return Passage(id=doc_id, title=title, text=text)


def iter_corpus(path: str | os.PathLike[str]) -> Iterator[Passage]:
    """Stream passages from a JSONL corpus; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from exc
            try:
                yield passage_from_record(record, default_id=str(line_no - 1))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line_no}: {exc}") from exc


def load_corpus(path: str | os.PathLike[str]) -> list[Passage]:
    """All passages of a JSONL corpus (``{"id","title","text"}`` or ``{"id","contents"}`` lines)."""
    return list(iter_corpus(path))


def contents_of(title: str, text: str) -> str:
    """The Search-R1 ``contents`` field of a passage: the quoted title, a newline, the text."""
    return f'"{title}"\n{text}'
