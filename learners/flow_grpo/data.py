"""The paper's training and validation data: NQ + DeepMath-103K mixed, validated on AIME24.

The reference (``data/get_train_data.py``, ``data/aime24_data.py``) trains on the open-domain
Natural Questions train split as FlashRAG packages it (``RUC-NLPIR/FlashRAG_datasets``, config
``nq``: ``id``, ``question``, ``golden_answers``) concatenated with DeepMath-103K
(``zwhe99/DeepMath-103K``: ``question``, ``final_answer``, ``difficulty``, ``topic``, ...),
shuffled with seed 42, and validates on AIME 2024 (``Maxwell-Jia/AIME_2024``: ``ID``,
``Problem``, ``Answer``). Each source is either ``hf:NAME`` (loaded with ``datasets``, which
needs the Hub or its local cache) or a local JSON, JSONL or Parquet file holding records of that
same schema; the validation source also takes the authors' benchmark file (``aime24.json``).

Mapping, as the reference does: an NQ question gets a ``?`` when it lacks one, its first golden
answer is the answer and the others are aliases (``metadata["aliases"]``, shown to the judge);
DeepMath's ``final_answer`` is the answer (scorer ``math``), its ``difficulty`` and ``topic`` kept
in metadata (the long R1 solutions are dropped). The mix differs from the reference's in one way:
it is shuffled by a NumPy generator seeded with ``shuffle_seed``, not ``datasets``' shuffle, so
the order is not the reference's (the set is, without limits).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentflow_env.tasks.base import Task
from agentflow_env.tasks.loaders import DatasetUnavailableError, TaskLoadError, load_tasks

__all__ = [
    "DEEPMATH_HF",
    "NQ_HF",
    "AIME24_HF",
    "DataSpec",
    "DatasetUnavailableError",
    "TaskLoadError",
    "load_deepmath",
    "load_nq",
    "load_validation",
    "mix",
    "read_records",
]

NQ_HF = "hf:RUC-NLPIR/FlashRAG_datasets"
"""the reference's NQ (config ``nq``, split ``train``)"""
DEEPMATH_HF = "hf:zwhe99/DeepMath-103K"
"""the reference's DeepMath-103K (split ``train``)"""
AIME24_HF = "hf:Maxwell-Jia/AIME_2024"
"""the reference's validation set (split ``train``: its only one)"""

# hf name -> (config, split) the reference loads
_HF_PARTS: dict[str, tuple[str | None, str]] = {
    NQ_HF: ("nq", "train"),
    DEEPMATH_HF: (None, "train"),
    AIME24_HF: (None, "train"),
}


@dataclass(frozen=True)
class DataSpec:
    """Where one source's records come from, and how many to keep (None: all)."""

    source: str
    limit: int | None = None


# ------------------------------------------------------------------------------------ reading
def _hf_records(spec: str, limit: int | None) -> list[dict[str, Any]]:
    """Rows of ``hf:NAME[:CONFIG[:SPLIT]]`` (the reference's config and split by default)."""
    name, _, rest = spec[3:].partition(":")
    default_config, default_split = _HF_PARTS.get(f"hf:{name}", (None, "train"))
    config, _, split = rest.partition(":")
    config, split = config or default_config, split or default_split
    try:
        import datasets  # noqa: PLC0415 - optional and heavy, imported on use
    except ImportError as exc:
        raise DatasetUnavailableError(
            f"{spec!r} needs the Hugging Face `datasets` package (pip install datasets), or "
            "give a local file in the same schema"
        ) from exc
    try:
        loaded = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # datasets raises many types (connection, missing file, ...)
        raise DatasetUnavailableError(
            f"could not load dataset {name!r} (config {config!r}, split {split!r}): "
            f"{type(exc).__name__}: {str(exc)[:200]}. Offline, only datasets in the local "
            "Hugging Face cache load (HF_HUB_OFFLINE=1 fails fast); otherwise give a local "
            "JSON/JSONL/Parquet file in the same schema"
        ) from exc
    n = len(loaded) if limit is None else min(limit, len(loaded))
    return [dict(loaded[i]) for i in range(n)]


def read_records(source: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Records of ``hf:NAME[:CONFIG[:SPLIT]]`` or a local ``.parquet``, ``.json`` (a list) or
    ``.jsonl`` file; the first ``limit`` of them.

    Raises:
        DatasetUnavailableError: an ``hf:`` source that cannot be loaded (offline, no cache).
        FileNotFoundError: a local path that does not exist.
        TaskLoadError: a file that is not a list of JSON objects.
    """
    if isinstance(source, str) and source.startswith("hf:"):
        return _hf_records(source, limit)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq  # noqa: PLC0415 - only for parquet files

        records: list[Any] = pq.read_table(path).to_pylist()
    else:
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".jsonl":
                records = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskLoadError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise TaskLoadError(f"{path}: expected a list of JSON objects (records)")
    return [dict(r) for r in records[:limit]]


def _field(record: Mapping[str, Any], keys: Sequence[str], where: str) -> Any:
    for key in keys:
        if record.get(key) is not None:
            return record[key]
    raise TaskLoadError(
        f"{where}: missing field {' or '.join(keys)}; the record has {sorted(record)}"
    )


def _origin(source: str | Path) -> str:
    return str(source) if str(source).startswith("hf:") else Path(source).name


# ------------------------------------------------------------------------------------ sources
def load_nq(source: str | Path = NQ_HF, limit: int | None = None) -> list[Task]:
    """Natural Questions in FlashRAG's schema (``question``, ``golden_answers``, ``id``)."""
    origin = _origin(source)
    tasks = []
    for i, record in enumerate(read_records(source, limit)):
        where = f"{origin} record {i}"
        question = str(_field(record, ["question"], where)).strip()
        if question and not question.endswith("?"):  # as the reference's processing does
            question += "?"
        golden = _field(record, ["golden_answers"], where)
        answers = golden if isinstance(golden, (list, tuple, np.ndarray)) else [golden]
        answers = [str(a).strip() for a in answers if a is not None and str(a).strip()]
        if not question or not answers:
            raise TaskLoadError(f"{where}: an empty question or no golden answer")
        meta: dict[str, Any] = {"dataset": "nq"}
        if len(answers) > 1:
            meta["aliases"] = answers[1:]
        rid = record.get("id", i)
        tasks.append(
            Task(
                id=f"nq-{rid}",
                question=question,
                answer=answers[0],
                scorer="exact",
                source=origin,
                metadata=meta,
            )
        )
    return tasks


def load_deepmath(source: str | Path = DEEPMATH_HF, limit: int | None = None) -> list[Task]:
    """DeepMath-103K's schema (``question``, ``final_answer``; ``difficulty``, ``topic`` kept)."""
    origin = _origin(source)
    tasks = []
    for i, record in enumerate(read_records(source, limit)):
        where = f"{origin} record {i}"
        question = str(_field(record, ["question", "Problem"], where)).strip()
        answer = str(_field(record, ["final_answer", "Answer"], where)).strip()
        if not question or not answer:
            raise TaskLoadError(f"{where}: an empty question or final_answer")
        meta = {k: record[k] for k in ("difficulty", "topic") if record.get(k) is not None}
        tasks.append(
            Task(
                id=f"deepmath-{i}",
                question=question,
                answer=answer,
                scorer="math",
                source=origin,
                metadata={"dataset": "deepmath", **meta},
            )
        )
    return tasks


def load_validation(source: str | Path = AIME24_HF, limit: int | None = None) -> list[Task]:
    """AIME24: ``hf:Maxwell-Jia/AIME_2024`` (``ID``, ``Problem``, ``Answer``) or a local file,
    in that schema, as the authors' benchmark files (e.g. ``aime24.json``), or as the reference's
    processed ``aime24.parquet`` (``question``, ``result``)."""
    records = read_records(source, limit)
    if records and "Problem" in records[0]:  # the Hub's schema -> the loaders' field names
        records = [
            {"id": r.get("ID", i), "question": r["Problem"], "answer": r.get("Answer")}
            for i, r in enumerate(records)
        ]
    elif records and "result" in records[0] and "answer" not in records[0]:
        # the reference's processed aime24.parquet (question, result, ...)
        records = [
            {"id": r.get("id", i), "question": r.get("question"), "answer": r["result"]}
            for i, r in enumerate(records)
        ]
    stem = "aime24" if str(source).startswith("hf:") else Path(source).stem.lower()
    origin = _origin(source)
    tasks = load_tasks(records)
    # load_tasks names in-memory records "records"; keep the real origin and the stem's scorer
    return [
        t.model_copy(
            update={
                "id": f"{stem}-{t.id.rsplit('-', 1)[-1]}" if t.id.startswith("records-") else t.id,
                "source": origin,
                "scorer": "math" if stem.startswith(("aime", "amc")) else t.scorer,
            }
        )
        for t in tasks
    ]


def mix(sources: Sequence[Sequence[Task]], seed: int) -> list[Task]:
    """The reference's recipe: concatenate the sources, shuffle once with a seeded generator.

    Raises:
        TaskLoadError: two tasks share an id, or nothing to mix.
    """
    tasks = [t for source in sources for t in source]
    if not tasks:
        raise TaskLoadError("no training tasks: every data source is empty")
    counts = Counter(t.id for t in tasks)
    if len(counts) != len(tasks):
        dup = next(i for i, n in counts.items() if n > 1)
        raise TaskLoadError(f"training tasks share the id {dup!r}; give each source unique ids")
    order = np.random.default_rng(seed).permutation(len(tasks))
    return [tasks[i] for i in order]
