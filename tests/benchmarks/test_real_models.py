"""benchmarks/real_models.py: the per-module analysis on hand-made episode records (the runs
themselves need the real model and minutes of CPU: `python -m benchmarks.real_models`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.real_models import module_analysis, targets


def _turn(command: str, tool_input: str, result: str, verifier: str) -> dict[str, Any]:
    action = (
        f"Justification: j\nContext: None\nSub-Goal: s\nTool Name: Search_Tool\nCommand: {command}"
    )
    return {
        "action": action,
        "tool_name": "Search_Tool",
        "tool_input": tool_input,
        "tool_result": result,
        "verifier": verifier,
    }


def _record(gold: str, score: float, turns: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ground_truth": gold, "score": score, "turns": turns}


def test_each_module_is_charged_with_what_it_lost() -> None:
    records = [
        # the executor searched for a demo's entity instead of the planner's: a dropped name
        _record("Lima", 0.0, [_turn("Ana Vrak born in", "founder of Varnok", "nothing", "STOP")]),
        # a rephrasing that keeps the names is fine; the answer was found but the generator erred
        _record(
            "Lima",
            0.0,
            [
                _turn(
                    "Ana Vrak born in", "Where was Ana Vrak born?", "Ana was born in Lima.", "STOP"
                )
            ],
        ),
        # all right: found, and scored
        _record("Lima", 1.0, [_turn("Ana Vrak", "Ana Vrak", "born in lima", "STOP")]),
        # the verifier continued, then stopped with nothing found
        _record(
            "Quito",
            0.0,
            [_turn("Bo Lund", "Bo Lund", "x", "CONTINUE"), _turn("Bo", "Bo", "y", "STOP")],
        ),
    ]
    assert module_analysis(records) == {
        "episodes": 4,
        "tool_calls": 5,
        "executor_dropped_a_name_of_the_command": 1,
        "verifier_stopped_before_the_answer_was_found": 2,
        "gold_answer_in_a_tool_result": 2,
        "generator_wrong_with_the_answer_in_hand": 1,
    }


def test_targets_read_both_parts_and_tolerate_a_missing_one() -> None:
    modules = [
        {
            "constrained_modules": True,
            "module_format_errors": 0,
            "accuracy": 0.6,
            "episodes_per_s": 0.2,
        },
        {
            "constrained_modules": False,
            "module_format_errors": 3,
            "accuracy": 0.1,
            "episodes_per_s": 0.01,
        },
    ]
    planners = [
        {"planner": "SmolLM2 free", "turns": 10, "unparseable_turns": 3},
        {"planner": "SmolLM2 free", "turns": 10, "unparseable_turns": 0},
        {"planner": "SmolLM2 constrained", "turns": 8, "unparseable_turns": 0},
    ]
    t = targets(modules, planners)
    assert t["free_unparseable"] == 0.15 and t["constrained_unparseable"] == 0.0
    assert all(t["met"].values())
    t = targets(modules[1:], [])  # no constrained module row, no planner rows
    assert t["module_accuracy"] is None and t["free_unparseable"] is None
    assert not t["met"]["free_unparseable"]


def test_a_bad_concurrency_is_refused_before_anything_runs() -> None:
    import pytest

    from benchmarks.real_models import main

    with pytest.raises(SystemExit) as exc:
        main(["--concurrency", "0"])
    assert exc.value.code == 2


def test_a_one_part_run_keeps_the_other_parts_finished_rows(tmp_path: Path) -> None:
    from benchmarks.real_models import carry_other_part, finished_report

    out = tmp_path / "real_models.json"
    module_row = {"constrained_modules": True, "module_format_errors": 0, "accuracy": 0.0}
    module_row["episodes_per_s"] = 0.1
    old = {"parts": "a", "modules": [module_row], "planners": [], "machine": {"cpu": "x"}}
    out.write_text(json.dumps({**old, "argv": ["--parts", "a"], "concurrency": 20}))
    planner_row = {"planner": "SmolLM2 free", "turns": 4, "unparseable_turns": 1}
    new = {"parts": "b", "modules": [], "planners": [planner_row]}
    carry_other_part(new, finished_report(out))
    assert new["modules"] == [module_row] and new["planners"] == [planner_row]
    assert new["carried"]["modules"]["argv"] == ["--parts", "a"]
    assert new["targets"]["free_unparseable"] == 0.25
    assert new["targets"]["episodes_per_s"] == 0.1
    # what this run measured is never replaced, and a cut-short old report is not carried
    again = {"parts": "ab", "modules": [], "planners": []}
    carry_other_part(again, finished_report(out))
    assert again["modules"] == [] and "carried" not in again
    out.write_text(json.dumps({**old, "partial": True}))
    fresh = {"parts": "b", "modules": [], "planners": []}
    carry_other_part(fresh, finished_report(out))
    assert fresh["modules"] == []
    carry_other_part(fresh, finished_report(tmp_path / "absent.json"))  # nothing to carry
    assert fresh["modules"] == []


def test_a_planner_subset_run_keeps_the_other_columns_rows(tmp_path: Path) -> None:
    from benchmarks.real_models import carry_other_part, finished_report, main

    out = tmp_path / "real_models.json"

    def row(tasks: str, planner: str, bad: int) -> dict[str, Any]:
        return {"tasks": tasks, "planner": planner, "turns": 4, "unparseable_turns": bad}

    old_rows = [
        row(t, p, 1)
        for t in ("AgentFlow-Search-v0", "AgentFlow-Math-v0")
        for p in ("scripted:oracle", "SmolLM2 free", "SmolLM2 constrained")
    ]
    out.write_text(json.dumps({"parts": "b", "modules": [], "planners": old_rows}))
    tasks = ("AgentFlow-Search-v0", "AgentFlow-Math-v0")
    new_rows = [row(t, "SmolLM2 constrained", 0) for t in tasks]
    report = {
        "parts": "b",
        "planner_columns": ["SmolLM2 constrained"],
        "modules": [],
        "planners": new_rows,
    }
    carry_other_part(report, finished_report(out))
    got = [(r["tasks"], r["planner"], r["unparseable_turns"]) for r in report["planners"]]
    assert got == [
        ("AgentFlow-Search-v0", "scripted:oracle", 1),
        ("AgentFlow-Search-v0", "SmolLM2 free", 1),
        ("AgentFlow-Search-v0", "SmolLM2 constrained", 0),  # this run's, in the task's order
        ("AgentFlow-Math-v0", "scripted:oracle", 1),
        ("AgentFlow-Math-v0", "SmolLM2 free", 1),
        ("AgentFlow-Math-v0", "SmolLM2 constrained", 0),
    ]
    assert report["targets"]["constrained_unparseable"] == 0.0
    carried = report["carried"]["planner_cells"]["cells"]
    assert sorted({planner for _, planner in carried}) == ["SmolLM2 free", "scripted:oracle"]
    # --tasks: only the named task set's cells of the named columns are replaced
    one = {
        "parts": "b",
        "planner_columns": ["SmolLM2 free"],
        "task_sets": ["AgentFlow-Math-v0"],
        "modules": [],
        "planners": [row("AgentFlow-Math-v0", "SmolLM2 free", 4)],
    }
    carry_other_part(one, finished_report(out))
    assert one["carried"]["planner_cells"]["earlier"] is None  # that report carried nothing
    got = {(r["tasks"], r["planner"]): r["unparseable_turns"] for r in one["planners"]}
    assert len(got) == 6 and got[("AgentFlow-Math-v0", "SmolLM2 free")] == 4
    assert got[("AgentFlow-Search-v0", "SmolLM2 free")] == 1
    with pytest.raises(SystemExit):
        main(["--planners", "SmolLM3 free"])
    with pytest.raises(SystemExit):
        main(["--tasks", "AgentFlow-Chess-v0"])
