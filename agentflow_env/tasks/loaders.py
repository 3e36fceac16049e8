"""Load tasks from the authors' benchmark JSON, JSONL, in-memory records or Hugging Face datasets.

The AgentFlow authors' files (Bamboogle, 2Wiki, HotpotQA, Musique, GAIA, AIME24, AMC23, Game of
24, GPQA, MedQA) share ``pid``/``query``/``answer`` but differ in the rest; records are mapped by
their fields, not their file names:

- GAIA: ``Final answer`` (plus ``Level``, ``task_id``, ``file_name``) -> scorer ``exact``.
- GPQA: ``choices`` (``"A. text"`` strings) and ``answer_idx`` -> letter answer, scorer ``mc``.
- MedQA: ``options`` (``"A. text"`` strings or a ``{"A": text}`` dict) and the option's text as
  ``answer`` -> letter answer, scorer ``mc``.
- Game of 24: ``question`` is the list of numbers, ``answer`` a list of reference expressions
  -> scorer ``game24``, ``metadata["numbers"]``.
- Others: ``question``/``query`` + ``answer`` (a string, a number, or a list of aliases). The
  scorer comes from the record's ``scorer``, else the file name (AIME/AMC -> ``math``; the search
  sets -> ``exact``), else ``math`` for numeric answers and ``exact`` otherwise.

The authors' trailing instruction "When ready, output the final answer enclosed in <answer> ..."
is removed from questions (the environment asks for that format itself); the raw text is kept in
``metadata["raw_query"]``. Extra gold answers go to ``metadata["aliases"]``. Multiple-choice items
whose options repeat a text get ``metadata["duplicate_options"]`` (letter groups such as
``[["A", "B"]]``) and one warning per load names them all.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

from agentflow_env.tasks.base import ScorerName, Task

__all__ = ["load_tasks", "record_to_task", "TaskLoadError", "DatasetUnavailableError"]

logger = logging.getLogger(__name__)

_SCORERS = set(get_args(ScorerName))
_STEM_SCORERS: dict[str, ScorerName] = {
    "aime24": "math",
    "aime25": "math",
    "amc23": "math",
    "math500": "math",
    "gsm8k": "math",
    "bamboogle": "exact",
    "2wiki": "exact",
    "hotpotqa": "exact",
    "musique": "exact",
    "nq": "exact",
    "triviaqa": "exact",
    "popqa": "exact",
    "gaia": "exact",
    "gpqa": "mc",
    "medqa": "mc",
    "gameof24": "game24",
    "game24": "game24",
}
_QUESTION_KEYS = ("question", "query", "Question", "problem", "prompt")
_ANSWER_KEYS = ("answer", "answers", "golden_answers", "Final answer", "target")
_FORMAT_SUFFIX = re.compile(
    r"\s*When ready, output the final answer enclosed in <answer>.*\Z", re.DOTALL
)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LABEL = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s+(.*)$", re.DOTALL)


class TaskLoadError(ValueError):
    """A task source cannot be read as tasks (unknown format, missing fields, bad values)."""


class DatasetUnavailableError(TaskLoadError):
    """An ``hf:`` source cannot be loaded (``datasets`` missing, or the dataset not available
    offline)."""


def _as_list(value: Any, where: str) -> list[Any]:
    """A list field that may be stored as a Python/JSON list literal string."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as exc:
            raise TaskLoadError(f"{where}: cannot read {value[:60]!r} as a list") from exc
    if isinstance(value, Mapping):
        return [value[k] for k in sorted(value)]
    if not isinstance(value, (list, tuple)):
        raise TaskLoadError(f"{where}: expected a list, got {type(value).__name__}")
    return list(value)


def _split_options(raw: Any, where: str) -> list[str]:
    """Option texts without their ``A.`` labels (labels are implied by position)."""
    options = _as_list(raw, where)
    texts = []
    for i, option in enumerate(options):
        match = _LABEL.match(str(option))
        texts.append(
            match.group(2).strip()
            if match and match.group(1) == _LETTERS[i]
            else str(option).strip()
        )
    if len(texts) < 2:
        raise TaskLoadError(f"{where}: a multiple-choice question needs at least two options")
    return texts


def _question_text(record: Mapping[str, Any], where: str) -> tuple[str, str]:
    """(cleaned question, raw question) from the first question-like field."""
    for key in _QUESTION_KEYS:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return _FORMAT_SUFFIX.sub("", value).strip(), value
    raise TaskLoadError(
        f"{where}: missing a question field (one of {list(_QUESTION_KEYS)}); "
        f"the record has {sorted(record)}"
    )


def _answers(record: Mapping[str, Any], where: str) -> list[str]:
    for key in _ANSWER_KEYS:
        if key in record and record[key] is not None:
            value = record[key]
            values = value if isinstance(value, (list, tuple)) else [value]
            answers = [str(v).strip() for v in values if str(v).strip()]
            if answers:
                return answers
    raise TaskLoadError(
        f"{where}: missing an answer field (one of {list(_ANSWER_KEYS)}); "
        f"the record has {sorted(record)}"
    )


def _lists_options(text: str, choices: Sequence[str]) -> bool:
    """Whether ``text`` shows every option on its own line after its letter (``B. text``)."""
    return all(
        re.search(rf"(?m)^[ \t]*\(?{_LETTERS[i]}[.):][ \t]*{re.escape(c)}", text)
        for i, c in enumerate(choices)
    )


def _with_options(question: str, choices: Sequence[str]) -> str:
    """The question followed by lettered options, unless it already lists them."""
    if _lists_options(question, choices):
        return question
    listed = "\n".join(f"{_LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"{question}\nChoices:\n{listed}"


def _duplicate_options(choices: Sequence[str]) -> list[list[str]]:
    """Letter groups of options whose texts are identical (``[["A", "B"]]``): a defect of the
    item (three GPQA items have one), reported at load time. The scorer treats the letters of
    identical texts as the same answer."""
    groups: dict[str, list[str]] = {}
    for i, choice in enumerate(choices):
        groups.setdefault(" ".join(choice.split()), []).append(_LETTERS[i])
    return [letters for letters in groups.values() if len(letters) > 1]


def _mc_task(record: Mapping[str, Any], where: str, base: dict[str, Any]) -> dict[str, Any]:
    """GPQA (``choices`` + ``answer_idx``) or MedQA (``options`` + answer text/letter)."""
    key = "choices" if "choices" in record else "options"
    choices = _split_options(record[key], f"{where} field {key!r}")
    if "answer_idx" in record:
        try:
            index = int(record["answer_idx"])
        except (TypeError, ValueError) as exc:
            raise TaskLoadError(
                f"{where}: answer_idx {record['answer_idx']!r} is not an integer"
            ) from exc
    else:
        answer = _answers(record, where)[0]
        match = _LABEL.match(answer)
        text = match.group(2).strip() if match else answer
        if len(answer) == 1 and answer.upper() in _LETTERS[: len(choices)]:
            index = _LETTERS.index(answer.upper())
        elif text in choices:
            index = choices.index(text)
        else:
            lowered = [c.lower() for c in choices]
            if text.lower() not in lowered:
                raise TaskLoadError(
                    f"{where}: answer {answer!r} is not one of the options {choices}"
                )
            index = lowered.index(text.lower())
    if not 0 <= index < len(choices):
        raise TaskLoadError(f"{where}: answer index {index} is outside the {len(choices)} options")
    query = record.get("query")
    if isinstance(query, str) and _lists_options(query, choices):
        question = query  # the authors' prompt already lists the options (GPQA, MedQA)
    else:
        question = _with_options(_question_text(record, where)[0], choices)
    raw_answer = record.get("answer")
    base["metadata"]["raw_answer"] = raw_answer if isinstance(raw_answer, str) else _LETTERS[index]
    duplicates = _duplicate_options(choices)
    if duplicates:
        base["metadata"]["duplicate_options"] = duplicates
    return {
        **base,
        "question": question.strip(),
        "answer": _LETTERS[index],
        "choices": tuple(choices),
        "scorer": "mc",
    }


def _game24_numbers(value: Any) -> list[int] | None:
    if isinstance(value, str):
        found = re.fullmatch(r"\s*\[?\s*(\d+(?:\s*[, ]\s*\d+){1,5})\s*\]?\s*", value)
        return [int(n) for n in re.findall(r"\d+", found.group(1))] if found else None
    if (
        isinstance(value, (list, tuple))
        and 2 <= len(value) <= 6
        and all(isinstance(n, int) and not isinstance(n, bool) for n in value)
    ):
        return list(value)
    return None


def _add_answers(fields: dict[str, Any], answers: list[str]) -> dict[str, Any]:
    fields["answer"] = answers[0]
    if len(answers) > 1:
        fields["metadata"]["aliases"] = answers[1:]
    return fields


def _add_question(fields: dict[str, Any], record: Mapping[str, Any], where: str) -> dict[str, Any]:
    question, raw = _question_text(record, where)
    fields["question"] = question
    if raw.strip() != question:
        fields["metadata"]["raw_query"] = raw
    return fields


def _gaia_task(record: Mapping[str, Any], where: str, base: dict[str, Any]) -> dict[str, Any]:
    fields = _add_question({**base, "scorer": "exact"}, record, where)
    return _add_answers(
        fields, _answers({"answer": record["Final answer"]}, f"{where} 'Final answer'")
    )


def _game24_task(
    record: Mapping[str, Any], numbers: list[int], where: str, base: dict[str, Any]
) -> dict[str, Any]:
    query = record.get("query")
    question = (
        query.strip()
        if isinstance(query, str) and query.strip()
        else (
            f"Using the numbers {numbers}, create an expression that equals 24. Use each number "
            "exactly once, with only +, -, ×, / and parentheses."
        )
    )
    base["metadata"]["numbers"] = numbers
    return _add_answers({**base, "question": question, "scorer": "game24"}, _answers(record, where))


def _plain_task(
    record: Mapping[str, Any], where: str, stem: str, base: dict[str, Any]
) -> dict[str, Any]:
    fields = _add_question(dict(base), record, where)
    _add_answers(fields, _answers(record, where))
    raw_answer = record.get("answer")
    if record.get("choices") is not None:
        fields["choices"] = tuple(_split_options(record["choices"], f"{where} field 'choices'"))
        fields["question"] = _with_options(fields["question"], fields["choices"])
        fields["scorer"] = "mc"
    elif isinstance(raw_answer, (int, float)) and not isinstance(raw_answer, bool):
        fields["scorer"] = _STEM_SCORERS.get(stem, "math")
    else:
        fields["scorer"] = _STEM_SCORERS.get(stem, "exact")
    return fields


def record_to_task(
    record: Any,
    index: int,
    *,
    stem: str = "records",
    origin: str = "records",
    task_id: str | None = None,
    scorer: ScorerName | None = None,
) -> Task:
    """Map one record (authors' JSON, JSONL line, dataset row) to a :class:`Task`.

    ``stem`` (the file name without suffix) picks a default scorer; ``origin`` names the source
    in ``Task.source`` and error messages; ``task_id`` is used when the record has no ``id``;
    ``scorer`` overrides every other choice of scorer.

    Raises:
        TaskLoadError: the record is not an object, lacks a question or answer, or has bad values.
    """
    if isinstance(record, Task):
        return record
    where = f"{origin} record {index}"
    if not isinstance(record, Mapping):
        raise TaskLoadError(f"{where}: expected a JSON object, got {type(record).__name__}")
    meta = dict(record["metadata"]) if isinstance(record.get("metadata"), Mapping) else {}
    for key in ("pid", "idx", "Level", "task_id", "file_name", "split"):
        if record.get(key) not in (None, ""):
            meta.setdefault(key.lower(), record[key])
    tid = str(record["id"]) if record.get("id") is not None else (task_id or f"{stem}-{index}")
    base: dict[str, Any] = {"id": tid, "source": origin, "metadata": meta}
    numbers = _game24_numbers(record.get("question"))
    if "Final answer" in record:
        fields = _gaia_task(record, where, base)
    elif ("choices" in record and "answer_idx" in record) or "options" in record:
        fields = _mc_task(record, where, base)
    elif numbers is not None and (
        stem in ("gameof24", "game24") or record.get("scorer") == "game24" or len(numbers) == 4
    ):
        fields = _game24_task(record, numbers, where, base)
    else:
        fields = _plain_task(record, where, stem, base)
    own = record.get("scorer")
    if own is not None and own not in _SCORERS:
        raise TaskLoadError(f"{where}: unknown scorer {own!r}; valid: {sorted(_SCORERS)}")
    fields["scorer"] = scorer or own or fields["scorer"]
    try:
        return Task(**fields)
    except ValueError as exc:  # pydantic: e.g. choices that are not strings
        raise TaskLoadError(f"{where}: {exc}") from exc


# ------------------------------------------------------------------ sources


def _read_records(path: Path) -> list[Any]:
    """Records of a JSON (list, ``{"data": [...]}``, or id -> record) or JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TaskLoadError(f"{path}: not UTF-8 text ({exc})") from exc
    stripped = text.lstrip()
    if path.suffix.lower() != ".jsonl" and stripped[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # may still be JSONL whose first line is an object
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            for key in ("data", "tasks", "examples", "questions"):
                if isinstance(data.get(key), list):
                    return data[key]
            if data and all(isinstance(v, Mapping) for v in data.values()):
                return [{"id": str(k), **v} for k, v in data.items()]
            raise TaskLoadError(
                f"{path}: a JSON object must hold a list under 'data', 'tasks', "
                f"'examples' or 'questions', or map ids to records; it has keys "
                f"{sorted(data)[:10]}"
            )
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise TaskLoadError(
                f"{path}: line {number} is not JSON ({exc.msg}); expected the "
                "authors' JSON list or JSONL with 'question' and 'answer'"
            ) from exc
    return records


def _ids(records: Sequence[Any], stem: str) -> list[str]:
    """``stem-pid`` when the file's ``pid``s are unique (MedQA's are not), else ``stem-index``."""
    pids = [r.get("pid") if isinstance(r, Mapping) else None for r in records]
    if all(p is not None for p in pids) and len({str(p) for p in pids}) == len(pids):
        return [f"{stem}-{p}" for p in pids]
    return [f"{stem}-{i}" for i in range(len(records))]


def _report_duplicate_options(tasks: Sequence[Task], origin: str) -> None:
    """One warning naming every item whose options repeat a text (``metadata["duplicate_options"]``
    holds the letter groups, for callers that want to exclude or fix them)."""
    items = [
        f"{t.id} ({', '.join('='.join(g) for g in t.metadata['duplicate_options'])})"
        for t in tasks
        if t.metadata.get("duplicate_options")
    ]
    if items:
        logger.warning(
            "%s: %d multiple-choice item(s) have duplicated option texts (the letters of a "
            "duplicate are the same answer; see metadata['duplicate_options']): %s",
            origin,
            len(items),
            "; ".join(items),
        )


def _convert(
    records: Sequence[Any],
    stem: str,
    origin: str,
    limit: int | None,
    split: str | None,
    scorer: ScorerName | None,
) -> list[Task]:
    if split is not None:
        if not any(isinstance(r, Mapping) and "split" in r for r in records):
            raise TaskLoadError(
                f"{origin}: split={split!r} was asked for but no record has a 'split' field"
            )
        records = [r for r in records if isinstance(r, Mapping) and r.get("split") == split]
    ids = _ids(records, stem)
    count = len(records) if limit is None else min(limit, len(records))
    tasks = [
        record_to_task(records[i], i, stem=stem, origin=origin, task_id=ids[i], scorer=scorer)
        for i in range(count)
    ]
    _report_duplicate_options(tasks, origin)
    seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task.id in seen:
            raise TaskLoadError(
                f"{origin}: records {seen[task.id]} and {i} share the id {task.id!r}"
            )
        seen[task.id] = i
    return tasks


def _load_hf(
    spec: str, limit: int | None, split: str | None, scorer: ScorerName | None
) -> list[Task]:
    """``hf:NAME[:split]`` through ``datasets.load_dataset`` (imported only here)."""
    name, _, spec_split = spec[3:].partition(":")
    if not name:
        raise TaskLoadError(f"{spec!r}: write hf:NAME or hf:NAME:SPLIT")
    try:
        import datasets  # noqa: PLC0415 - optional dependency, imported on use
    except ImportError as exc:
        raise DatasetUnavailableError(
            f"{spec!r} needs the Hugging Face `datasets` package: pip install datasets"
        ) from exc
    wanted = split or spec_split or None
    try:
        loaded = datasets.load_dataset(name, split=wanted)
    except Exception as exc:  # datasets raises many types (connection, FileNotFound, ValueError)
        raise DatasetUnavailableError(
            f"could not load dataset {name!r} (split {wanted!r}): {type(exc).__name__}: {exc}. "
            "Without internet only datasets already in the local Hugging Face cache (or local "
            "dataset folders) can be loaded; set HF_DATASETS_OFFLINE=1 to fail fast."
        ) from exc
    if isinstance(loaded, Mapping):  # a DatasetDict: no split given
        names = sorted(loaded)
        chosen = names[0] if len(names) == 1 else ("test" if "test" in loaded else None)
        if chosen is None:
            raise TaskLoadError(
                f"dataset {name!r} has splits {names}; pick one with hf:{name}:SPLIT"
            )
        loaded, wanted = loaded[chosen], chosen
    stem = name.rstrip("/").rsplit("/", 1)[-1].lower()
    rows = [
        dict(row)
        for row in (loaded.select(range(min(limit, len(loaded)))) if limit is not None else loaded)
    ]
    return _convert(rows, stem, f"hf:{name}:{wanted}", None, None, scorer)


def load_tasks(
    source: str | Path | Sequence[Mapping[str, Any] | Task],
    *,
    limit: int | None = None,
    split: str | None = None,
    scorer: ScorerName | None = None,
) -> list[Task]:
    """Load tasks from a file, records, or a Hugging Face dataset.

    Args:
        source: a path to the authors' JSON (e.g. ``../shared/benchmarks/agentflow/gpqa.json``)
            or a JSONL file (``{"question", "answer"}`` plus optional ``id``, ``scorer``,
            ``choices``, ``metadata`` per line); a list of such dicts (or Tasks); or
            ``"hf:NAME[:split]"`` for ``datasets.load_dataset`` (needs ``datasets``).
        limit: keep the first ``limit`` tasks (after ``split`` filtering).
        split: for files, keep records whose ``split`` field equals it (GAIA has one); for
            ``hf:``, the dataset split.
        scorer: override the scorer of every task (e.g. ``"f1"`` for the search sets).

    Raises:
        FileNotFoundError: the path does not exist.
        TaskLoadError: unknown format or records missing fields (the message names the source,
            the record and the missing fields).
        DatasetUnavailableError: an ``hf:`` source cannot be loaded.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if scorer is not None and scorer not in _SCORERS:
        raise ValueError(f"scorer must be one of {sorted(_SCORERS)}, got {scorer!r}")
    if isinstance(source, str) and source.startswith("hf:"):
        return _load_hf(source, limit, split, scorer)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"task file not found: {path}")
        records = _read_records(path)
        tasks = _convert(records, path.stem.lower(), path.name, limit, split, scorer)
        logger.debug("loaded %d tasks from %s", len(tasks), path)
        return tasks
    if isinstance(source, (bytes, bytearray)) or not isinstance(source, Sequence):
        raise TaskLoadError(
            f"source must be a path, 'hf:NAME[:split]' or a list of records, "
            f"got {type(source).__name__}"
        )
    return _convert(list(source), "records", "records", limit, split, scorer)
