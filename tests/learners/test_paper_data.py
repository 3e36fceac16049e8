"""The paper's training data (NQ + DeepMath-103K), its mix and the AIME24 validation set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learners.flow_grpo.config import make_config
from learners.flow_grpo.data import (
    DEEPMATH_HF,
    NQ_HF,
    DatasetUnavailableError,
    TaskLoadError,
    load_deepmath,
    load_nq,
    load_validation,
    mix,
)
from learners.flow_grpo.runenv import load_data, resolve_run_env

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "benchmarks" / "agentflow"

# FlashRAG's NQ rows: id, question (no '?'), golden_answers (a list)
NQ_ROWS = [
    {
        "id": "train_0",
        "question": "who sang i will always love you",
        "golden_answers": ["Dolly Parton", "Whitney Houston"],
    },  # noqa: E501
    {"id": "train_1", "question": "capital of australia?", "golden_answers": ["Canberra"]},
    {
        "id": "train_2",
        "question": "when did the titanic sink",
        "golden_answers": ["1912", "April 15, 1912"],
    },  # noqa: E501
]
# DeepMath-103K's rows: question, final_answer, difficulty, topic, r1_solution_1..3
MATH_ROWS = [
    {
        "question": "Compute $2^{10}$.",
        "final_answer": "1024",
        "difficulty": 1.0,
        "topic": "Mathematics -> Algebra",
        "r1_solution_1": "long...",
        "r1_solution_2": "",
        "r1_solution_3": "",
    },  # noqa: E501
    {
        "question": "Evaluate $\\int_0^1 2x\\,dx$.",
        "final_answer": "1",
        "difficulty": 2.5,
        "topic": "Mathematics -> Calculus",
        "r1_solution_1": "long...",
        "r1_solution_2": "",
        "r1_solution_3": "",
    },  # noqa: E501
]


def write_nq(path: Path, rows: list[dict] = NQ_ROWS) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def write_deepmath(path: Path, rows: list[dict] = MATH_ROWS) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_nq_rows_become_exact_match_tasks_with_aliases(tmp_path: Path) -> None:
    tasks = load_nq(write_nq(tmp_path / "nq_train.jsonl"))
    assert [t.id for t in tasks] == ["nq-train_0", "nq-train_1", "nq-train_2"]
    assert tasks[0].question == "who sang i will always love you?"  # '?' added, as the reference
    assert tasks[1].question == "capital of australia?"  # not doubled
    assert tasks[0].answer == "Dolly Parton" and tasks[0].metadata["aliases"] == ["Whitney Houston"]
    assert "aliases" not in tasks[1].metadata
    assert {t.scorer for t in tasks} == {"exact"}
    assert load_nq(tmp_path / "nq_train.jsonl", limit=2)[-1].id == "nq-train_1"


def test_deepmath_parquet_rows_become_math_tasks(tmp_path: Path) -> None:
    tasks = load_deepmath(write_deepmath(tmp_path / "deepmath.parquet"))
    assert [(t.answer, t.scorer) for t in tasks] == [("1024", "math"), ("1", "math")]
    assert tasks[1].metadata == {
        "dataset": "deepmath",
        "difficulty": 2.5,
        "topic": "Mathematics -> Calculus",
    }
    assert all("r1_solution_1" not in t.metadata for t in tasks)  # the long solutions dropped


def test_records_in_another_schema_fail_naming_the_missing_field(tmp_path: Path) -> None:
    bad = tmp_path / "nq.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(TaskLoadError, match="golden_answers"):
        load_nq(bad)
    with pytest.raises(TaskLoadError, match="final_answer"):
        load_deepmath(write_deepmath(tmp_path / "m.parquet", [{"question": "q", "answer": "1"}]))
    (tmp_path / "x.json").write_text('{"not": "a list"}')
    with pytest.raises(TaskLoadError, match="list of JSON objects"):
        load_nq(tmp_path / "x.json")
    with pytest.raises(FileNotFoundError):
        load_deepmath(tmp_path / "missing.parquet")


def test_hub_names_fail_offline_with_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network here: the Hugging Face path must say so, not hang or return nothing."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for load, name in ((load_nq, NQ_HF), (load_deepmath, DEEPMATH_HF)):
        with pytest.raises(DatasetUnavailableError, match="Parquet file in the same schema"):
            load(name, limit=2)


def test_the_mix_is_the_concatenation_shuffled_by_its_seed(tmp_path: Path) -> None:
    nq = load_nq(write_nq(tmp_path / "nq.jsonl"))
    math = load_deepmath(write_deepmath(tmp_path / "m.parquet"))
    a, b = mix([nq, math], 42), mix([nq, math], 42)
    assert [t.id for t in a] == [t.id for t in b]
    assert sorted(t.id for t in a) == sorted(t.id for t in nq + math)
    orders = {tuple(t.id for t in mix([nq, math], s)) for s in range(6)}
    assert len(orders) > 1  # the seed decides the order
    with pytest.raises(TaskLoadError, match="share the id"):
        mix([nq, nq], 0)
    with pytest.raises(TaskLoadError, match="empty"):
        mix([[], []], 0)


@pytest.mark.skipif(not (SHARED / "aime24.json").is_file(), reason="../shared benchmarks absent")
def test_validation_on_the_authors_aime24_file() -> None:
    tasks = load_validation(SHARED / "aime24.json")
    assert len(tasks) == 30
    assert {t.scorer for t in tasks} == {"math"} and all(t.id.startswith("aime24-") for t in tasks)
    assert all("<answer>" not in t.question for t in tasks)  # the authors' format line removed
    assert len({t.id for t in tasks}) == 30


def test_validation_in_the_hub_schema(tmp_path: Path) -> None:
    rows = [{"ID": "2024-I-1", "Problem": "Find 1+1.", "Solution": "2", "Answer": 2}]
    path = tmp_path / "aime_2024.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    (task,) = load_validation(path)
    assert (task.question, task.answer, task.scorer) == ("Find 1+1.", "2", "math")
    # the reference's processed file (data/aime24_data.py): question with its format line, result
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = {
        "id": 0,
        "question": "Find 1+2.\n\nWhen ready, output the final answer enclosed in "
        "<answer> and </answer> tags.",
        "chain": "",
        "result": "3",
        "source": "aime2024",
    }
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "aime24.parquet")
    (task,) = load_validation(tmp_path / "aime24.parquet")
    assert (task.question, task.answer, task.scorer) == ("Find 1+2.", "3", "math")


def test_the_paper_preset_names_the_reference_data() -> None:
    cfg = make_config("paper")
    assert (cfg.data.nq, cfg.data.deepmath, cfg.data.val) == (
        "hf:RUC-NLPIR/FlashRAG_datasets",
        "hf:zwhe99/DeepMath-103K",
        "hf:Maxwell-Jia/AIME_2024",
    )
    assert cfg.data.shuffle_seed == 42 and cfg.data.nq_limit == 0
    tiny = make_config("tiny")
    assert not tiny.data.used  # the tiny preset keeps its generated tasks


def test_the_run_env_takes_the_data_and_validation_split(tmp_path: Path) -> None:
    val = tmp_path / "aime.jsonl"
    val.write_text(json.dumps({"ID": "a", "Problem": "Find 2+2.", "Answer": 4}))
    cfg = make_config(
        "tiny",
        overrides={
            "data.nq": str(write_nq(tmp_path / "nq.jsonl")),
            "data.deepmath": str(write_deepmath(tmp_path / "m.parquet")),
            "data.deepmath_limit": 1,
            "data.val": str(val),
        },
    )
    train, held = load_data(cfg.data)
    assert train is not None and held is not None
    assert len(train) == 4 and [t.answer for t in held] == ["4"]
    run = resolve_run_env(cfg)
    assert run.judge is None and run.env.scorer is None  # tiny keeps the rule scorers
    assert list(run.env.tasks) == train + held
    assert run.split(list(run.env.tasks), cfg.env.eval_tasks) == (train, held)
    with pytest.raises(ValueError, match="must be >= 0"):
        make_config("tiny", overrides={"data.nq_limit": -1})
