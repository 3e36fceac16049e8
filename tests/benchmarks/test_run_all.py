"""The combined benchmark table: summarizers on the saved results and on hand-made dicts
(including malformed ones), the machine caption, and ``--summarize-only`` end to end."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from benchmarks.run_all import (
    BENCHMARKS,
    machine_caption,
    main,
    read_result,
    render_markdown,
    render_table,
    summarize,
)

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _saved(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} not present (run python -m benchmarks --only {name})")
    return json.loads(path.read_text())


def _by_metric(rows: list[tuple[str, str, str, str]]) -> dict[str, tuple[str, str, str]]:
    return {metric: (value, target, met) for metric, value, target, met in rows}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ----------------------------------------------------------------------------------- learning
def test_learning_rows_follow_the_saved_json() -> None:
    data = _saved("learning")
    rows = _by_metric(summarize("learning", data))
    for method, s in data["summary"].items():
        runs = [r for r in data["results"] if r["method"] == method]
        n = s["n"]
        value, _, _ = rows[f"{method} held-out gain ({n} seed{'' if n == 1 else 's'})"]
        before, after = _mean([r["before"] for r in runs]), _mean([r["after"] for r in runs])
        assert value == f"{s['mean_gain']:+.2f} ± {s['std_gain']:.2f} ({before:.2f} -> {after:.2f})"
    [target_metric] = [m for m in rows if m.startswith("target: flow_grpo +20 points in 10 min")]
    value, target, met = rows[target_metric]
    assert target == ">= +0.20 in 10 min" and met == ("yes" if data["target_met"] else "NO")
    assert ("[quick run]" in target_metric) == bool(data["quick"])


def test_learning_hand_made_two_seeds_met() -> None:
    runs = [
        {
            "method": "flow_grpo",
            "seed": 0,
            "before": 0.40,
            "after": 0.65,
            "gain": 0.25,
            "train_minutes": 8.0,
        },
        {
            "method": "flow_grpo",
            "seed": 1,
            "before": 0.50,
            "after": 0.65,
            "gain": 0.15,
            "train_minutes": 9.5,
        },
    ]
    data = {
        "quick": False,
        "results": runs,
        "target_gain": 0.1,
        "target_minutes": 10.0,
        "target_met": True,
        "summary": {"flow_grpo": {"mean_gain": 0.20, "std_gain": 0.05, "n": 2}},
    }
    assert summarize("learning", data) == [
        ("flow_grpo held-out gain (2 seeds)", "+0.20 ± 0.05 (0.45 -> 0.65)", "", ""),
        (
            "target: flow_grpo +10 points in 10 min (every seed)",
            "worst seed +0.15 in 9.5 min",
            ">= +0.10 in 10 min",
            "yes",
        ),
    ]


def test_learning_without_a_flow_grpo_run_says_so() -> None:
    data = {
        "quick": True,
        "results": [
            {"method": "sft_only", "before": 0.2, "after": 0.3, "gain": 0.1, "train_minutes": 1.0}
        ],
        "summary": {"sft_only": {"mean_gain": 0.1, "std_gain": 0.0, "n": 1}},
        "target_gain": 0.2,
        "target_minutes": 10.0,
        "target_met": False,
    }
    rows = summarize("learning", data)
    assert rows[-1] == (
        "target: flow_grpo +20 points in 10 min (every seed) [quick run]",
        "no flow_grpo run",
        ">= +0.20 in 10 min",
        "NO",
    )


# ------------------------------------------------------------------------------------- update
def test_update_rows_follow_the_saved_json() -> None:
    data = _saved("update_throughput")
    rows = _by_metric(summarize("update_throughput", data))
    batch = f"{data['queries']}x{data['group_size']}"
    for r in data["rows"]:
        value, _, _ = rows[f"update {r['variant']} ({batch}): tokens/s | peak RSS growth"]
        assert value == f"{r['tokens_per_s']:,.0f} | {r['peak_rss_growth_mb']:,.0f} MB"
    speed = {r["variant"]: r["tokens_per_s"] for r in data["rows"]}
    if {"flow_grpo_packed", "trl_grpo"} <= set(speed):
        ratio = rows["flow_grpo_packed / trl_grpo tokens/s"][0]
        assert ratio == f"{speed['flow_grpo_packed'] / speed['trl_grpo']:.1f}x"


def test_update_hand_made_side_by_side() -> None:
    data = {
        "queries": 4,
        "group_size": 8,
        "rows": [
            {"variant": "flow_grpo_packed", "tokens_per_s": 3000.4, "peak_rss_growth_mb": 12.6},
            {"variant": "trl_grpo", "tokens_per_s": 1000.0, "peak_rss_growth_mb": 1234.0},
        ],
    }
    assert summarize("update_throughput", data) == [
        ("update flow_grpo_packed (4x8): tokens/s | peak RSS growth", "3,000 | 13 MB", "", ""),
        ("update trl_grpo (4x8): tokens/s | peak RSS growth", "1,000 | 1,234 MB", "", ""),
        ("flow_grpo_packed / trl_grpo tokens/s", "3.0x", "", ""),
    ]
    del data["rows"][1]  # no TRL run: no ratio row
    assert len(summarize("update_throughput", data)) == 1


def test_sandbox_target_is_on_the_paced_strict_row_and_the_ratio() -> None:
    def row(setup: str, paced: bool, median: float, callers: int = 1) -> dict[str, Any]:
        return {
            "setup": setup,
            "callers": callers,
            "paced": paced,
            "median_ms": median,
            "p95_ms": median + 2.0,
        }

    ratio = {"median_ratio": 12.5, "p95_ratio": 9.0}
    data = {
        "target_median_ms": 3.2,
        "target_ratio": 10.0,
        "ratios": {"paced": ratio, "back_to_back": {"median_ratio": 6.0, "p95_ratio": 4.0}},
        "rows": [
            row("fresh `python -c` subprocess", False, 32.0),
            row("PythonCoderTool pool (strict)", False, 5.3),
            row("PythonCoderTool pool (strict), paced", True, 2.56),
            row("PythonCoderTool pool (strict), 8 callers", False, 40.0, callers=8),
        ],
    }
    rows = _by_metric(summarize("sandbox_latency", data))
    assert rows["PythonCoderTool pool (strict) x1 median/p95 ms"] == ("5.3 / 7.3", "", "")
    assert rows["PythonCoderTool pool (strict), paced x1 median/p95 ms"] == (
        "2.6 / 4.6",
        "<= 3.2",
        "yes",
    )
    assert rows["fresh `python -c` / strict pool median (paced)"] == (
        "12.5x (p95 9.0x)",
        ">= 10x",
        "yes",
    )
    assert rows["fresh `python -c` / strict pool median (back to back)"][1:] == ("", "")
    assert not any(metric.startswith("CPU per") for metric in rows)  # older files: no row
    ratio["median_ratio"] = 9.9  # just short of the target: not met
    data["cpu_per_call"] = {
        "strict": {"fresh_ms": 40.0, "pool_tree_ms": 7.5, "caller_ms": 0.5, "fresh_over_pool": 5.0}
    }
    rows = _by_metric(summarize("sandbox_latency", data))
    assert rows["fresh `python -c` / strict pool median (paced)"][2] == "NO"
    assert rows["CPU per back-to-back call, fresh `python -c` / strict pool (ms)"] == (
        "5.0x (40.0 / 8.0)",
        "",
        "",
    )
    assert not any("memory in" in metric for metric in rows)  # older files: no such rows
    data["back_to_back_target_met"] = False  # newer files judge back to back as well
    rows = _by_metric(summarize("sandbox_latency", data))
    assert rows["fresh `python -c` / strict pool median (back to back)"] == (
        "6.0x (p95 4.0x)",
        ">= 10x",
        "NO",
    )
    data["huge_pages"] = {
        "small pages": {
            "back_to_back": {"median_ms": 7.04},
            "paced": {"median_ms": 2.26},
            "cpu_per_call": {"pool_tree_ms": 9.5, "caller_ms": 0.4},
        }
    }
    rows = _by_metric(summarize("sandbox_latency", data))
    metric = "strict pool, workers' memory in small pages: back to back / paced median ms, CPU ms"
    assert rows[metric] == ("7.0 / 2.3, 9.9", "", "")


def test_env_overhead_rows_judge_each_family_and_name_the_largest_stages() -> None:
    row = {"clock": "cpu", "overhead_ms": 0.15, "overhead_frac": 0.3}
    data = {
        "target_frac": 0.1,
        "offline_overhead": [
            {**row, "family": "search"},
            {**row, "family": "math", "clock": "wall", "overhead_ms": 0.4, "overhead_frac": 0.05},
        ],
        "search_breakdown": {
            "clock": "cpu",
            "stages": [
                {"stage": "parse", "share": 0.25},
                {"stage": "record", "share": 0.125},
                {"stage": "info", "share": 0.1},
                {"stage": "observation", "share": 0.01},
            ],
        },
    }
    assert summarize("env_overhead", data) == [
        ("offline env overhead per step (search, cpu clock)", "30.0% (150 µs)", "<= 10%", "NO"),
        ("offline env overhead per step (math, wall clock)", "5.0% (400 µs)", "<= 10%", "yes"),
        (
            "search step overhead, largest stages (cpu clock)",
            "parse 25%, record 12%, info 10%",
            "",
            "",
        ),
    ]


def test_async_hand_made_rows() -> None:
    data = {
        "target_speedup": 1.3,
        "settings": {"learn_steps": 30},
        "speed_summary": [
            {
                "setting": "offline",
                "speedup": 1.21,
                "engine_wait_share": 0.0,
                "latency_bound": False,
            },
            {
                "setting": "remote-8",
                "speedup": 1.27,
                "engine_wait_share": 0.62,
                "latency_bound": True,
            },
        ],
        "learning_summary": {"sync_gain": 0.052, "k1_gain": 0.048, "equal_within_noise": True},
    }
    assert summarize("async_rollout", data) == [
        ("offline k=1/sync steps per minute (engine wait 0% of a sync step)", "1.21x", "", ""),
        (
            "remote-8 k=1/sync steps per minute (engine wait 62% of a sync step)",
            "1.27x",
            ">= 1.3x",
            "NO",
        ),
        (
            "held-out gain after 30 steps, sync vs k=1",
            "+0.05 vs +0.05",
            "equal within noise",
            "yes",
        ),
    ]


def test_async_without_its_learning_check_has_only_speed_rows() -> None:
    """--learn-steps 0: the learning comparison lives in the learning benchmark (flow_grpo_k1)."""
    data = {
        "target_speedup": 1.3,
        "settings": {"learn_steps": 0},
        "speed_summary": [
            {"setting": "remote-4", "speedup": 1.5, "engine_wait_share": 0.7, "latency_bound": True}
        ],
        "learning_summary": None,
    }
    assert summarize("async_rollout", data) == [
        (
            "remote-4 k=1/sync steps per minute (engine wait 70% of a sync step)",
            "1.50x",
            ">= 1.3x",
            "yes",
        )
    ]


def test_async_rows_count_the_engine_and_the_tool_wait() -> None:
    data = {
        "target_speedup": 1.3,
        "settings": {"learn_steps": 0},
        "speed_summary": [
            {
                "setting": "remote-all+search-64",
                "speedup": 1.42,
                "engine_wait_share": 0.1,
                "tool_wait_share": 0.5,
                "wait_share": 0.6,
                "latency_bound": True,
            }
        ],
        "learning_summary": None,
    }
    assert summarize("async_rollout", data) == [
        (
            "remote-all+search-64 k=1/sync steps per minute (engine + tool wait 60% of a sync "
            "step)",
            "1.42x",
            ">= 1.3x",
            "yes",
        )
    ]


# ---------------------------------------------------------------------------------- malformed
@pytest.mark.parametrize(
    ("name", "data", "detail"),
    [
        ("learning", {}, "missing key 'results'"),
        ("learning", {"results": [], "summary": {"flow_grpo": 0.3}}, "TypeError"),
        (
            "learning",
            {"results": [], "summary": {}, "target_gain": "lots", "target_minutes": 10},
            "ValueError",
        ),
        (
            "update_throughput",
            {"queries": 4, "group_size": 8, "rows": [{"variant": "x"}]},
            "missing key 'tokens_per_s'",
        ),
        ("update_throughput", ["not", "an", "object"], "expected a JSON object, got list"),
        ("search_throughput", {"rows": None}, "TypeError"),
        ("env_overhead", {"target_frac": 0.1, "offline_overhead": []}, "'search_breakdown'"),
    ],
)
def test_malformed_json_gives_one_clear_row(name: str, data: Any, detail: str) -> None:
    [(metric, value, target, met)] = summarize(name, data)
    assert target == ""
    assert metric == f"malformed {name}.json" and detail in value and met == "NO"


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_saved_result_summarizes(name: str) -> None:
    _saved(name)
    res = read_result(name, RESULTS / f"{name}.json")
    assert res["status"] == "ok" and res["rows"]
    assert not any(metric.startswith("malformed") for metric, *_ in res["rows"])


def test_read_result_of_missing_and_broken_files(tmp_path: Path) -> None:
    assert read_result("learning", tmp_path / "learning.json")["status"] == "no results"
    (tmp_path / "learning.json").write_text('{"results": [')
    res = read_result("learning", tmp_path / "learning.json")
    assert res["status"] == "malformed" and res["rows"][0][1].startswith("not JSON")


# -------------------------------------------------------------------------------- table, machine
MACHINE = {
    "cpus": 2,
    "cpu_model": "Test CPU",
    "platform": "Linux-x",
    "python": "3.11.7",
    "loadavg": [1.0],
}


def test_machine_caption_names_the_machine_once_or_per_benchmark() -> None:
    same = [
        {"name": "a", "machine": MACHINE},
        {"name": "b", "machine": {**MACHINE, "loadavg": [3.0]}},
    ]
    assert machine_caption(MACHINE, same) == "measured on 2 CPUs (Test CPU), Linux-x, Python 3.11.7"
    mixed = [*same, {"name": "c", "machine": {"cpus": 8, "platform": "Linux-y"}}, {"name": "d"}]
    assert machine_caption(MACHINE, mixed) == (
        "measured on: a, b: 2 CPUs (Test CPU), Linux-x, Python 3.11.7; "
        "c: 8 CPUs, Linux-y; d: machine not recorded"
    )


def test_table_shows_cells_as_written_and_the_machine() -> None:
    results = [
        {
            "name": "learning",
            "status": "ok",
            "machine": MACHINE,
            "rows": [("[bold]not markup[/bold]", "+0.08", "", "NO")],
        }
    ]
    out = io.StringIO()
    Console(file=out, width=200).print(render_table(results, MACHINE, "quick"))
    text = out.getvalue()
    assert "learning [ok]" in text and "[bold]not markup[/bold]" in text
    assert "measured on 2 CPUs (Test CPU), Linux-x, Python 3.11.7" in text


def test_markdown_table_escapes_pipes_and_names_the_machine() -> None:
    results = [
        {
            "name": "update_throughput",
            "status": "ok",
            "machine": MACHINE,
            "rows": [
                ("tokens/s | peak RSS", "2,722 | 938 MB", "", ""),
                ("ratio", "2.8x", ">= 2x", "yes"),
            ],
        },
        {
            "name": "learning",
            "status": "malformed",
            "rows": [("malformed learning.json", "x\ny", "", "NO")],
        },
    ]
    md = render_markdown(results, MACHINE).splitlines()
    assert md[:2] == [
        "| benchmark | measure | value | target | met |",
        "| --- | --- | --- | --- | --- |",
    ]
    assert md[2] == "| update_throughput | tokens/s \\| peak RSS | 2,722 \\| 938 MB |  |  |"
    assert md[3] == "|  | ratio | 2.8x | >= 2x | yes |"
    assert md[4] == "| learning (malformed) | malformed learning.json | x y |  | NO |"
    assert md[-1] == (
        "measured on: update_throughput: 2 CPUs (Test CPU), Linux-x, Python 3.11.7; "
        "learning: machine not recorded"
    )


def test_summarize_only_writes_the_combined_json_with_the_machine(tmp_path: Path) -> None:
    for name in BENCHMARKS:
        _saved(name)
        shutil.copy(RESULTS / f"{name}.json", tmp_path / f"{name}.json")
    assert (
        main(
            [
                "--summarize-only",
                "--results-dir",
                str(tmp_path),
                "--out",
                str(tmp_path / "all.json"),
                "--markdown",
                str(tmp_path / "table.md"),
            ]
        )
        == 0
    )
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("| benchmark | measure |") and all(
        f"| {name} |" in table for name in BENCHMARKS
    )
    combined = json.loads((tmp_path / "all.json").read_text())
    assert combined["mode"] == "saved results" and combined["measured_on"].startswith("measured on")
    assert combined["machine"]["cpus"] == os.cpu_count() and "cpu_model" in combined["machine"]
    assert [b["name"] for b in combined["benchmarks"]] == list(BENCHMARKS)
    assert all(b["status"] == "ok" for b in combined["benchmarks"])

    (tmp_path / "learning.json").write_text("{}")  # a broken result: a clear row and exit code 1
    assert main(["--summarize-only", "--results-dir", str(tmp_path), "--only", "learning"]) == 1
    [learning] = json.loads((tmp_path / "all.json").read_text())["benchmarks"]
    assert learning["status"] == "malformed" and learning["rows"] == [
        ["malformed learning.json", "missing key 'results'", "", "NO"]
    ]


# ------------------------------------------------------------------------------------ scorers
def _scorer_file(name: str, ours: float, ref: float | None, cases: int = 10) -> dict[str, Any]:
    return {
        "file": name,
        "scorer": "mc",
        "reference": "lm-eval MC filter",
        "cases": cases,
        "ours_vs_label": ours,
        "reference_vs_label": ref,
        "ours_vs_reference": None,
    }


def test_scorers_hand_made_rows_and_target() -> None:
    data = {
        "cases": 20,
        "ours_total_vs_label": 0.95,
        "files": [_scorer_file("gpqa.json", 1.0, 0.8), _scorer_file("amc23.json", 0.9, None)],
    }
    rows = summarize("scorers", data)
    assert rows[0] == (
        "gpqa.json (10 cases): ours / lm-eval MC filter agree with labels",
        "100.0% / 80.0%",
        "",
        "",
    )
    assert rows[1][1] == "90.0% / n/a"  # no reference installed: not counted against ours
    assert rows[2][1:] == ("95.0%", ">= reference, every file", "yes")
    data["files"][0]["ours_vs_label"] = 0.7
    assert summarize("scorers", data)[2][1:] == (
        "95.0% (behind on gpqa.json)",
        ">= reference, every file",
        "NO",
    )
    assert summarize("scorers", {"skipped": "no files at x"}) == [
        ("skipped", "no files at x", "", "")
    ]
