"""The local BM25 engine (bm25s) under the search tools, and its index directory format.

This module owns a BM25 index that is built once, saved to a directory and memory-mapped on load,
and batched retrieval over it. The tools (``SearchTool``, ``WikipediaSearchTool`` in
:mod:`tools.search.local`) and the retrieval server (:mod:`tools.search.server`) only add
validation, formatting and a protocol on top. Passages and corpus records are
:mod:`tools.search.passages`'.

Index directory layout (format version 1)::

    agentflow_search.json        metadata: format version, number of passages, tokenizer settings
    passages.jsonl               one {"id", "title", "text"} object per passage, in index order
    passages.offsets.npy         int64 byte offsets of each line (n + 1 entries), memory-mapped
    *.index.npy / *.index.json   bm25s's own files (score matrix, vocabulary, parameters)

Tokenization is bm25s's own (``bm25s.tokenize``: lowercase, ``\\w\\w+`` words, English stopwords),
with an optional Snowball stemmer from PyStemmer. The same function tokenizes documents and
queries, so both sides always agree.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import bm25s
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tools.search.passages import Passage, SearchHit, iter_corpus, passage_from_record

__all__ = [
    "Backend",
    "IndexSettings",
    "BM25Index",
    "build_index",
    "numba_available",
    "INDEX_META_FILE",
]

logger = logging.getLogger(__name__)

INDEX_META_FILE = "agentflow_search.json"
PASSAGES_FILE = "passages.jsonl"
OFFSETS_FILE = "passages.offsets.npy"
INDEX_FORMAT_VERSION = 1
NUMBA_AUTO_MIN_DOCS = 50_000
"""``backend="auto"`` picks numba only from this corpus size up: its JIT compile costs ~5 s per
process, which only pays off when per-query scoring dominates (measured in
benchmarks/search_throughput.py)."""

_TIE_MARGIN = 8
Backend = Literal["auto", "numpy", "numba"]


class IndexSettings(BaseModel):
    """Tokenizer and BM25 parameters; stored with an index so queries are tokenized alike."""

    model_config = ConfigDict(frozen=True)

    stopwords: str | None = "en"
    """bm25s stopword list name ("en"), or None for no stopword removal"""
    stemmer: str | None = "english"
    """Snowball language for PyStemmer, or None for no stemming"""
    k1: float = Field(default=1.5, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)
    method: Literal["lucene", "robertson", "atire"] = "lucene"


def numba_available() -> bool:
    """Whether bm25s's numba backend can be used in this environment."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _make_stemmer(language: str | None) -> Any:
    if language is None:
        return None
    try:
        import Stemmer  # PyStemmer
    except ImportError as exc:  # pragma: no cover - PyStemmer is a declared dependency
        raise ImportError(
            f"stemmer={language!r} needs PyStemmer: `pip install PyStemmer`, "
            "or build/load the index with stemmer=None"
        ) from exc
    try:
        return Stemmer.Stemmer(language)
    except KeyError as exc:
        raise ValueError(
            f"unknown stemmer language {language!r}; choose one of "
            f"{sorted(Stemmer.algorithms())} or None"
        ) from exc


def _as_passages(documents: Iterable[Mapping[str, Any] | Passage]) -> list[Passage]:
    return [passage_from_record(doc, default_id=str(i)) for i, doc in enumerate(documents)]


# --------------------------------------------------------------------------- passage stores


class _ListStore:
    """Passages held in memory (indexes built from a document list)."""

    def __init__(self, passages: list[Passage]) -> None:
        self._passages = passages

    def __len__(self) -> int:
        return len(self._passages)

    def get(self, i: int) -> Passage:
        return self._passages[i]

    def close(self) -> None:
        self._passages = []


class _MmapStore:
    """Passages read lazily from ``passages.jsonl`` through mmap (index directories).

    Slicing an mmap does not move a shared file position, so concurrent readers are safe.
    """

    def __init__(self, directory: Path) -> None:
        self._offsets = np.load(directory / OFFSETS_FILE, mmap_mode="r")
        self._file = (directory / PASSAGES_FILE).open("rb")
        size = os.fstat(self._file.fileno()).st_size
        self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def get(self, i: int) -> Passage:
        if self._mm is None:
            raise IndexError(i)
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return Passage.model_validate_json(self._mm[start:end])

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        self._file.close()


def _write_passages(passages: Sequence[Passage], directory: Path) -> None:
    offsets = np.zeros(len(passages) + 1, dtype=np.int64)
    with (directory / PASSAGES_FILE).open("wb") as handle:
        for i, passage in enumerate(passages):
            line = passage.model_dump_json().encode("utf-8") + b"\n"
            handle.write(line)
            offsets[i + 1] = offsets[i] + len(line)
    np.save(directory / OFFSETS_FILE, offsets)


# --------------------------------------------------------------------------- the index


class BM25Index:
    """A bm25s index plus its passages and tokenizer settings.

    Build with :meth:`build` (in memory) and :meth:`save`, or :func:`build_index`; open a saved
    index with :meth:`load` (memory-mapped). :meth:`search` retrieves for a batch of queries in
    one bm25s call. Read-only after construction, so it is safe to share between threads.
    """

    def __init__(
        self, retriever: bm25s.BM25, store: _ListStore | _MmapStore, settings: IndexSettings
    ) -> None:
        self._retriever = retriever
        self._store = store
        self.settings = settings
        self._stemmer = _make_stemmer(settings.stemmer)
        # PyStemmer objects are not thread-safe; tokenization is short, so one lock suffices
        self._stem_lock = threading.Lock()
        self.backend: str = retriever.backend
        self._closed = False

    # ---- construction
    @classmethod
    def build(
        cls,
        documents: Iterable[Mapping[str, Any] | Passage],
        settings: IndexSettings | None = None,
        *,
        backend: Backend = "auto",
    ) -> BM25Index:
        """Index documents in memory. Raises ``ValueError`` for an empty corpus."""
        settings = settings or IndexSettings()
        passages = _as_passages(documents)
        if not passages:
            raise ValueError("cannot build a search index from an empty corpus")
        stemmer = _make_stemmer(settings.stemmer)
        tokens = bm25s.tokenize(
            [f"{p.title}\n{p.text}" for p in passages],
            stopwords=settings.stopwords,
            stemmer=stemmer,
            show_progress=False,
        )
        if not any(tokens.ids):
            raise ValueError("the corpus has no indexable words (only stopwords or 1-letter words)")
        retriever = bm25s.BM25(
            k1=settings.k1,
            b=settings.b,
            method=settings.method,
            backend=_resolve_backend(backend, len(passages)),
        )
        retriever.index(tokens, show_progress=False)
        index = cls(retriever, _ListStore(passages), settings)
        index._warmup()
        return index

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, backend: Backend = "auto") -> BM25Index:
        """Open an index directory written by :meth:`save`; score arrays are memory-mapped."""
        directory = Path(directory)
        meta_path = directory / INDEX_META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{directory} is not a search index (no {INDEX_META_FILE}); build one with "
                "`python -m tools.search index CORPUS.jsonl --out DIR`"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != INDEX_FORMAT_VERSION:
            raise ValueError(
                f"{directory}: index format {meta.get('format_version')!r} is not supported "
                f"(expected {INDEX_FORMAT_VERSION}); rebuild the index"
            )
        settings = IndexSettings.model_validate(meta["settings"])
        resolved = _resolve_backend(backend, int(meta["num_passages"]))
        retriever = bm25s.BM25.load(
            directory, mmap=True, load_corpus=False, show_progress=False, backend=resolved
        )
        store = _MmapStore(directory)
        if len(store) != meta["num_passages"]:
            store.close()
            raise ValueError(f"{directory}: passage store and metadata disagree; rebuild the index")
        index = cls(retriever, store, settings)
        index._warmup()
        return index

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index (bm25s arrays, passages, metadata) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._retriever.save(directory, show_progress=False)
        _write_passages([self._store.get(i) for i in range(len(self._store))], directory)
        meta = {
            "format_version": INDEX_FORMAT_VERSION,
            "num_passages": len(self._store),
            "settings": self.settings.model_dump(),
            "bm25s_version": bm25s.__version__,
        }
        # metadata last: a directory without it is never mistaken for a complete index
        (directory / INDEX_META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return directory

    def _warmup(self) -> None:
        # numba compiles on first use (~5 s); pay it at construction, not inside an episode
        if self.backend == "numba":
            token_id = next(v for w, v in self._retriever.vocab_dict.items() if w != "")
            self._retriever.retrieve([[token_id]], k=1, show_progress=False, n_threads=0)

    # ---- queries
    @property
    def num_passages(self) -> int:
        return len(self._store)

    def passage(self, i: int) -> Passage:
        """The ``i``-th passage in index order."""
        return self._store.get(i)

    def tokenize(self, queries: Sequence[str]) -> list[list[int]]:
        """Vocabulary ids of each query (words absent from the corpus are dropped)."""
        with self._stem_lock:
            words = bm25s.tokenize(
                list(queries),
                stopwords=self.settings.stopwords,
                stemmer=self._stemmer,
                return_ids=False,
                show_progress=False,
            )
        vocab = self._retriever.vocab_dict
        return [[vocab[w] for w in q if w in vocab and w != ""] for q in words]

    def search(self, queries: Sequence[str], k: int) -> list[list[SearchHit]]:
        """Top-``k`` passages for every query, in one bm25s call.

        Hits are ordered by score, ties by index position, so results are deterministic (and
        the same on the numpy and numba backends). Passages with a zero score (no query word in
        common) are dropped; a query with no known word gets no hits.
        """
        if self._closed:
            raise RuntimeError("this BM25Index is closed")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        # a few extra candidates so that ties at the cut are broken by index position, not by
        # the backend's partial sort (numpy and numba order tied scores differently)
        fetch = min(k + _TIE_MARGIN, self.num_passages)
        token_ids = self.tokenize(queries)
        live = [i for i, ids in enumerate(token_ids) if ids]
        results: list[list[SearchHit]] = [[] for _ in queries]
        if not live:
            return results
        docs, scores = self._retriever.retrieve(
            [token_ids[i] for i in live], k=fetch, show_progress=False, n_threads=0
        )
        for row, query_pos in enumerate(live):
            pairs = [
                (float(s), int(d)) for d, s in zip(docs[row], scores[row], strict=False) if s > 0
            ]
            pairs.sort(key=lambda pair: (-pair[0], pair[1]))
            if len(pairs) == fetch > k and pairs[k - 1][0] == pairs[-1][0]:
                pairs = self._exact_top_k(token_ids[query_pos], k)  # the tie runs past the margin
            del pairs[k:]
            results[query_pos] = [
                self._hit(rank, doc, score) for rank, (score, doc) in enumerate(pairs, start=1)
            ]
        return results

    def _exact_top_k(self, token_ids: list[int], k: int) -> list[tuple[float, int]]:
        """Top ``k`` from the full score vector, ties broken by index position (rare path)."""
        scores = np.asarray(self._retriever.get_scores(token_ids))
        order = np.lexsort((np.arange(len(scores)), -scores))[:k]
        return [(float(scores[d]), int(d)) for d in order if scores[d] > 0]

    def _hit(self, rank: int, doc: int, score: float) -> SearchHit:
        passage = self._store.get(doc)
        return SearchHit(
            rank=rank, id=passage.id, title=passage.title, text=passage.text, score=score
        )

    def memory_bytes(self) -> int:
        """Bytes of the score-matrix arrays (data, indices, indptr)."""
        scores = self._retriever.scores
        return int(sum(np.asarray(scores[key]).nbytes for key in ("data", "indices", "indptr")))

    def close(self) -> None:
        """Release memory maps and file handles."""
        self._closed = True
        self._store.close()
        self._retriever.scores = {"num_docs": 0}


def _resolve_backend(backend: Backend, num_docs: int) -> str:
    if backend == "auto":
        return "numba" if numba_available() and num_docs >= NUMBA_AUTO_MIN_DOCS else "numpy"
    if backend == "numba" and not numba_available():
        raise ImportError("backend='numba' needs numba: `pip install numba`, or use 'numpy'")
    if backend not in ("numpy", "numba"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'numba', got {backend!r}")
    return backend


def build_index(
    corpus: str | os.PathLike[str] | Iterable[Mapping[str, Any] | Passage],
    out_dir: str | os.PathLike[str],
    settings: IndexSettings | None = None,
) -> Path:
    """Build a BM25 index from a JSONL path or documents and save it to ``out_dir``."""
    documents = iter_corpus(corpus) if isinstance(corpus, (str, os.PathLike)) else corpus
    # numpy backend: building does not need numba's compile; the loader picks its own backend
    index = BM25Index.build(documents, settings, backend="numpy")
    try:
        return index.save(out_dir)
    finally:
        index.close()
