"""Task loaders: the authors' 10 benchmark files, JSONL, records, hf: sources, and bad input."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from agentflow_env.rewards import check_game24, score
from agentflow_env.tasks.base import Task
from agentflow_env.tasks.loaders import DatasetUnavailableError, TaskLoadError, load_tasks

SHARED = (Path(__file__).parents[2] / "../shared/benchmarks/agentflow").resolve()
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"the authors' benchmark files are not at {SHARED}"
)
EXPECTED = {  # file -> (records, scorer)
    "2wiki.json": (200, "exact"),
    "aime24.json": (30, "math"),
    "amc23.json": (40, "math"),
    "bamboogle.json": (125, "exact"),
    "gaia.json": (127, "exact"),
    "gameof24.json": (300, "game24"),
    "gpqa.json": (300, "mc"),
    "hotpotqa.json": (100, "exact"),
    "medqa.json": (300, "mc"),
    "musique.json": (200, "exact"),
}


def _raw(name: str) -> list[dict]:
    return json.loads((SHARED / name).read_text(encoding="utf-8"))


@needs_shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_file_loads_with_its_scorer_and_count(name: str) -> None:
    tasks = load_tasks(SHARED / name)
    count, scorer = EXPECTED[name]
    assert len(tasks) == len(_raw(name)) == count
    assert {t.scorer for t in tasks} == {scorer}
    assert len({t.id for t in tasks}) == count, "ids are unique"
    assert all(t.question.strip() and t.answer.strip() and t.source == name for t in tasks)
    # The authors' output instruction is stripped; the env asks for <answer> itself.
    assert not any("When ready, output" in t.question for t in tasks)


@needs_shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_answers_score_one_against_themselves(name: str) -> None:
    tasks, raw = load_tasks(SHARED / name), _raw(name)
    for task, record in zip(tasks, raw, strict=False):
        assert score(task.answer, task) == 1.0, (task.id, task.answer)
        assert score(f"reasoning...\n<answer>{task.answer}</answer>", task) == 1.0
        golds = record["answer"] if isinstance(record["answer"], list) else [record["answer"]]
        if "Final answer" in record:
            golds = [record["Final answer"]]
        for gold in golds:  # the raw field as written: "A. 0.9", "Colorectal cancer", 33, ...
            assert score(str(gold), task) == 1.0, (task.id, gold)


@needs_shared
def test_all_game_of_24_references_are_valid_and_wrong_ones_fail() -> None:
    tasks = load_tasks(SHARED / "gameof24.json")
    references = 0
    for task, record in zip(tasks, _raw("gameof24.json"), strict=False):
        assert task.metadata["numbers"] == record["question"]
        for expression in record["answer"]:
            references += 1
            assert check_game24(expression, task.metadata["numbers"]), (task.id, expression)
        assert score("24", task) == 0.0
        assert score(record["answer"][0] + "+0", task) == 0.0  # an extra number
    assert references == sum(len(r["answer"]) for r in _raw("gameof24.json")) > 300


@needs_shared
def test_multiple_choice_mappings_gpqa_and_medqa() -> None:
    gpqa = load_tasks(SHARED / "gpqa.json")
    for task, record in zip(gpqa, _raw("gpqa.json"), strict=False):
        assert task.answer == "ABCD"[record["answer_idx"]]
        assert task.choices is not None and len(task.choices) == 4
        assert all(c in task.question for c in task.choices), "the query lists the options"
        duplicated = {x for group in task.metadata.get("duplicate_options", []) for x in group}
        for wrong in "ABCD":
            same = wrong == task.answer or {wrong, task.answer} <= duplicated
            assert score(wrong, task) == float(same), (task.id, wrong)
            assert score(task.choices["ABCD".index(wrong)], task) == float(same), (task.id, wrong)
    medqa = load_tasks(SHARED / "medqa.json")
    for task, record in zip(medqa, _raw("medqa.json"), strict=False):
        assert (
            task.choices is not None
            and task.choices["ABCD".index(task.answer)] == record["answer"].strip()
        )
        assert score(f"({task.answer})", task) == 1.0


@needs_shared
def test_duplicated_options_are_reported_at_load_time(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="agentflow_env.tasks.loaders"):
        tasks = load_tasks(SHARED / "gpqa.json")
    found = {
        t.id: t.metadata["duplicate_options"] for t in tasks if t.metadata.get("duplicate_options")
    }
    # Items 14 and 286 repeat two wrong options; item 272 repeats the gold one ("200 mL").
    assert found == {"gpqa-14": [["A", "D"]], "gpqa-272": [["A", "B"]], "gpqa-286": [["B", "D"]]}
    [warning] = [r.getMessage() for r in caplog.records if "duplicated option" in r.getMessage()]
    assert "gpqa.json: 3 multiple-choice item(s)" in warning
    assert "gpqa-14 (A=D)" in warning and "gpqa-272 (A=B)" in warning
    by_id = {t.id: t for t in tasks}
    assert score("B", by_id["gpqa-272"]) == 1.0  # the same text as the key's option A
    assert score("A", by_id["gpqa-14"]) == 0.0 and score("C", by_id["gpqa-14"]) == 1.0
    assert not any("duplicate_options" in t.metadata for t in load_tasks(SHARED / "medqa.json"))


def test_duplicated_options_in_records_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    record = {"question": "Pick", "choices": ["A. x", "B. y", "C. x "], "answer_idx": 1}
    with caplog.at_level("WARNING", logger="agentflow_env.tasks.loaders"):
        [task] = load_tasks([record])
    assert task.metadata["duplicate_options"] == [["A", "C"]]
    assert "records-0 (A=C)" in caplog.text
    [clean] = load_tasks([{**record, "choices": ["A. x", "B. y", "C. X"]}])
    assert "duplicate_options" not in clean.metadata  # case differs: two different options


@needs_shared
def test_gaia_uses_final_answer_and_keeps_its_metadata() -> None:
    tasks = load_tasks(SHARED / "gaia.json")
    raw = _raw("gaia.json")
    assert [t.answer for t in tasks] == [r["Final answer"].strip() for r in raw]
    assert {t.metadata["level"] for t in tasks} <= {"1", "2", "3"}
    assert all(t.metadata["task_id"] == r["task_id"] for t, r in zip(tasks, raw, strict=False))
    assert len(load_tasks(SHARED / "gaia.json", split="validation")) == 127
    assert load_tasks(SHARED / "gaia.json", split="test") == []


@needs_shared
def test_limit_and_list_answers_become_aliases() -> None:
    assert [t.id for t in load_tasks(SHARED / "hotpotqa.json", limit=3)] == [
        "hotpotqa-0",
        "hotpotqa-1",
        "hotpotqa-2",
    ]
    game = load_tasks(SHARED / "gameof24.json")
    with_aliases = [t for t in game if t.metadata.get("aliases")]
    assert with_aliases and all(len(t.metadata["aliases"]) >= 1 for t in with_aliases)
    medqa_ids = [t.id for t in load_tasks(SHARED / "medqa.json")]
    assert len(set(medqa_ids)) == 300  # MedQA repeats pids; ids fall back to positions


@needs_shared
def test_scorer_override() -> None:
    tasks = load_tasks(SHARED / "musique.json", scorer="f1", limit=5)
    assert {t.scorer for t in tasks} == {"f1"}


def test_jsonl_and_records(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    lines = [
        {"question": "2+2?", "answer": "4", "scorer": "math", "id": "q1"},
        {"question": "Capital of Zorva?", "answer": ["Kell", "Kell City"], "metadata": {"hops": 1}},
        {"question": "Pick one", "answer": "B", "choices": ["x", "y"]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    tasks = load_tasks(path)
    assert [t.id for t in tasks] == ["q1", "mine-1", "mine-2"]
    assert [t.scorer for t in tasks] == ["math", "exact", "mc"]
    assert tasks[1].metadata == {"hops": 1, "aliases": ["Kell City"]}
    assert score("kell city", tasks[1]) == 1.0 and score("4.0", tasks[0]) == 1.0
    assert tasks[2].choices == ("x", "y") and score("y", tasks[2]) == 1.0
    assert tasks[2].question == "Pick one\nChoices:\nA. x\nB. y", "the policy must see the options"
    from_records = load_tasks(lines)
    assert [t.question for t in from_records] == [t.question for t in tasks]
    task = Task(id="t", question="q", answer="a")
    assert load_tasks([task]) == [task]


def test_missing_fields_name_the_file_and_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt_text": "hi", "label": 3}) + "\n", encoding="utf-8")
    with pytest.raises(
        TaskLoadError, match=r"bad\.jsonl record 0: missing a question field.*label"
    ):
        load_tasks(path)
    path.write_text(json.dumps({"question": "hi"}) + "\n", encoding="utf-8")
    with pytest.raises(TaskLoadError, match=r"bad\.jsonl record 0: missing an answer field"):
        load_tasks(path)
    path.write_text("not json at all\n", encoding="utf-8")
    with pytest.raises(TaskLoadError, match=r"bad\.jsonl: line 1 is not JSON"):
        load_tasks(path)
    other = tmp_path / "obj.json"
    other.write_text(json.dumps({"meta": 1}), encoding="utf-8")
    with pytest.raises(TaskLoadError, match=r"obj\.json: a JSON object must hold a list"):
        load_tasks(other)
    with pytest.raises(TaskLoadError, match="unknown scorer"):
        load_tasks([{"question": "q", "answer": "a", "scorer": "bleu"}])
    with pytest.raises(TaskLoadError, match="not one of the options"):
        load_tasks([{"question": "q", "options": ["A. x", "B. y"], "answer": "z"}])
    with pytest.raises(TaskLoadError, match="expected a JSON object"):
        load_tasks(["just a string"])
    with pytest.raises(TaskLoadError, match="no record has a 'split' field"):
        load_tasks([{"question": "q", "answer": "a"}], split="test")
    with pytest.raises(FileNotFoundError):
        load_tasks(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="limit"):
        load_tasks([{"question": "q", "answer": "a"}], limit=-1)


def test_hf_source_without_datasets_package_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes `import datasets` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DatasetUnavailableError, match="pip install datasets"):
        load_tasks("hf:openai/gsm8k:test")


@pytest.mark.skipif(
    importlib.util.find_spec("datasets") is None, reason="`datasets` is not installed"
)
def test_hf_source_unavailable_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError, match="could not load dataset"):
        load_tasks("hf:agentflow-gym/does-not-exist:test")
