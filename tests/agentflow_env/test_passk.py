"""pass@k and multi-seed evaluation: the estimator against hand computations, the Student-t
interval against printed tables, and ``evaluate --samples K --seeds S`` end to end.

``counting_planner`` is reached through a ``python:`` engine spec, as a user would plug in a
policy: it answers at once, right on the first ``RIGHT[item]`` samples of an item and wrong
after, so each task's correct count is known in advance (with one sub-env, episodes run in
order: episode ``j`` is sample ``j % K`` of task ``j // K``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from agentflow_env.eval import EvalConfig, EvaluateError, pass_at_k, run, run_seeds, sample_summary
from agentflow_env.eval.multi import INTERVAL, seed_path
from agentflow_env.eval.passk import mean_interval, pass_at_k_curve, t_interval, t_quantile
from agentflow_env.evaluate import main
from agentflow_env.infra import InfraError
from agentflow_env.llm.base import GenerationRequest
from agentflow_env.trajectory import EpisodeRecord, read_jsonl
from tests.agentflow_env.test_evaluate import CODES, _item, _text

THIS = "python:tests.agentflow_env.test_passk"
RIGHT = {"alpha": 0, "bravo": 1, "charlie": 2, "delta": 4}
SEEN: Counter[str] = Counter()


def counting_planner(request: GenerationRequest) -> str:
    item = _item(_text(request))
    answer = CODES[item] if SEEN[item] < RIGHT[item] else "code-0"
    SEEN[item] += 1
    return f"Tool Name: Finish\n<answer>{answer}</answer>"


@pytest.fixture
def four_items(tmp_path: Path) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"i{k}",
                    "question": f"What is the code of item {name}?",
                    "answer": CODES[name],
                }
            )
            + "\n"
            for k, name in enumerate(RIGHT)
        )
    )
    SEEN.clear()
    return path


# --------------------------------------------------------------------------------- estimator
def test_pass_at_k_by_hand() -> None:
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == 0.5  # 1 - C(3,2)/C(4,2) = 1 - 3/6; naive 1 - 0.75^2 = 0.4375
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(4, 1, 3) == 0.75  # 1 - C(3,3)/C(4,3)
    assert pass_at_k(4, 2, 3) == 1.0  # fewer than 3 failures: every draw of 3 has a pass
    assert pass_at_k(10, 3, 10) == 1.0


def test_pass_at_k_is_exact_for_large_n() -> None:
    # 1 - C(n-1, k)/C(n, k) = k/n exactly; float products of many factors drift from it.
    assert pass_at_k(10_000, 1, 1) == 1e-4
    assert pass_at_k(10_000, 1, 5_000) == 0.5
    value = pass_at_k(2_000, 3, 100)
    expected = 1 - math.prod((1 - 100 / i) for i in range(2_000 - 3 + 1, 2_001))
    assert value == pytest.approx(expected, rel=1e-12)


def test_pass_at_k_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be in"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="n >= 1"):
        pass_at_k(0, 0, 1)
    with pytest.raises(TypeError, match="integers"):
        pass_at_k(3, 1.0, 1)  # type: ignore[arg-type]


def test_curve_averages_over_tasks_that_have_k_samples() -> None:
    curve = pass_at_k_curve([(2, 1), (4, 1)], 4)
    assert curve[1] == {"value": (0.5 + 0.25) / 2, "tasks": 2.0}
    assert curve[2] == {"value": (1.0 + 0.5) / 2, "tasks": 2.0}
    assert curve[3] == {"value": 0.75, "tasks": 1.0}  # the 2-sample task has no pass@3
    assert math.isnan(pass_at_k_curve([(1, 1)], 2)[2]["value"])


def test_unscored_episodes_are_neither_right_nor_wrong() -> None:
    def record(j: int, score: float | None) -> EpisodeRecord:
        return EpisodeRecord(
            episode_id=f"ep{j}",
            task_id=f"t{j // 3}",
            question="q",
            ground_truth="a",
            score=score,
            metadata={"episode_index": j},
        )

    # task 0: right, wrong, lost (no score); task 1: 0.5 (partial credit is no pass), right, right
    records = [record(j, s) for j, s in enumerate([1.0, 0.0, None, 0.5, 1.0, 1.0])]
    out = sample_summary(records, 3)
    assert [(t["played"], t["n"], t["correct"]) for t in out["per_task"]] == [(3, 2, 1), (3, 3, 2)]
    # an episode whose outcome infrastructure lost counts as unscored even if a score was set
    lost = record(6, 0.0)
    lost.infra_error = InfraError(kind="engine_timeout", source="planner", message="timed out")
    more = sample_summary([*records, lost], 3)
    assert [(t["played"], t["n"], t["correct"]) for t in more["per_task"]][2] == (1, 0, 0)
    assert more["pass_at_k"]["1"] == out["pass_at_k"]["1"]
    assert out["mean@3"] == pytest.approx((0.5 + 2.5 / 3) / 2)
    assert out["pass_at_k"]["1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert out["pass_at_k"]["3"] == 1.0 and out["pass_at_k_tasks"]["3"] == 1


# --------------------------------------------------------------------------------- intervals
@pytest.mark.parametrize(
    ("df", "table"),
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (9, 2.262), (30, 2.042)],
)
def test_t_quantile_matches_the_printed_table(df: int, table: float) -> None:
    assert t_quantile(0.95, df) == pytest.approx(table, abs=6e-4)


def test_t_interval_by_hand() -> None:
    # mean 0.5, sample std 0.1, n = 3: half-width 4.3027 * 0.1 / sqrt(3) = 0.24842
    lo, hi = t_interval([0.4, 0.5, 0.6])
    assert (lo, hi) == (pytest.approx(0.25158, abs=1e-5), pytest.approx(0.74842, abs=1e-5))
    assert all(math.isnan(x) for x in t_interval([0.5]))
    stats = mean_interval([0.4, None, 0.6])
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(0.5) and stats["values"][1] is None


# ---------------------------------------------------------------------------------- end to end
def test_samples_report_pass_at_k_by_hand(four_items: Path, tmp_path: Path) -> None:
    out, traj = tmp_path / "report.json", tmp_path / "traj.jsonl"
    argv = ["--data", str(four_items), "--planner", f"{THIS}:counting_planner", "--tools", ""]
    argv += ["--samples", "4", "--concurrency", "1", "--out", str(out), "--trajectories", str(traj)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    s = report["summary"]["samples"]
    assert [(t["task_id"], t["n"], t["correct"]) for t in s["per_task"]] == [
        ("i0", 4, 0),
        ("i1", 4, 1),
        ("i2", 4, 2),
        ("i3", 4, 4),
    ]
    # per task: c = 0, 1, 2, 4 of n = 4
    assert s["pass_at_k"]["1"] == pytest.approx((0 + 1 / 4 + 2 / 4 + 1) / 4)
    assert s["pass_at_k"]["2"] == pytest.approx((0 + 1 / 2 + 5 / 6 + 1) / 4)
    assert s["pass_at_k"]["3"] == pytest.approx((0 + 3 / 4 + 1 + 1) / 4)
    assert s["pass_at_k"]["4"] == pytest.approx(3 / 4)
    assert s["mean@4"] == pytest.approx(0.4375) and s["tasks"] == 4
    assert report["summary"]["episodes"] == 16
    records = list(read_jsonl(traj))
    assert sorted(r.metadata["episode_index"] for r in records) == list(range(16))
    assert {r.task_id for r in records if r.metadata["episode_index"] // 4 == 2} == {"i2"}


def test_seeds_repeat_the_run_on_the_same_tasks(tmp_path: Path) -> None:
    cfg = EvalConfig(
        planner="scripted:random-tool",
        episodes=6,
        shuffle=True,
        samples=3,
        seeds=3,
        seed=4,
        max_turns=3,
        out=str(tmp_path / "seeds.json"),
        trajectories=str(tmp_path / "traj.jsonl"),
    )
    report = run_seeds(cfg)
    assert report["seeds"] == [4, 5, 6] and report["interval"] == INTERVAL
    assert json.loads((tmp_path / "seeds.json").read_text())["seeds"] == [4, 5, 6]
    tasks = []
    for seed, one in zip([4, 5, 6], report["runs"], strict=True):
        records = list(read_jsonl(seed_path(cfg.trajectories, seed)))
        assert len(records) == 18 and one["seed"] == seed
        tasks.append(sorted(r.task_id for r in records))
    assert tasks[0] == tasks[1] == tasks[2], "every seed plays the same tasks"
    accuracy = report["summary"]["accuracy"]
    per_seed = [r["summary"]["accuracy"] for r in report["runs"]]
    assert accuracy["values"] == per_seed
    assert accuracy["mean"] == pytest.approx(sum(per_seed) / 3)
    assert accuracy["ci"] == pytest.approx(list(t_interval(per_seed)))
    assert set(report["summary"]) == {"accuracy", "mean@3", "pass@1", "pass@2", "pass@3"}
    # A single run with the same seed plays what the multi-seed run's first run played.
    single = run(EvalConfig(**{**cfg.__dict__, "seeds": 1, "out": None, "trajectories": None}))
    assert single["summary"]["samples"] == report["runs"][0]["summary"]["samples"]


def test_seeds_check_every_seeds_outputs_before_playing(tmp_path: Path) -> None:
    """A later seed's trajectory file that exists (no --resume/--overwrite) refuses the run
    before the first seed plays anything; --overwrite then replaces it."""
    traj = str(tmp_path / "traj.jsonl")
    taken = Path(seed_path(traj, 1))  # type: ignore[arg-type]
    taken.write_text("not this run's\n")
    cfg = EvalConfig(planner="scripted:oracle", episodes=2, seeds=2, trajectories=traj)
    with pytest.raises(EvaluateError, match="exists"):
        run_seeds(cfg)
    assert not Path(seed_path(traj, 0)).exists()  # type: ignore[arg-type]
    assert taken.read_text() == "not this run's\n"
    report = run_seeds(EvalConfig(**{**cfg.__dict__, "overwrite": True}))
    assert report["seeds"] == [0, 1] and len(list(read_jsonl(taken))) == 2


@pytest.mark.parametrize("flag", ["--samples", "--seeds"])
def test_bad_counts_exit_2(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--planner", "scripted:oracle", flag, "0"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: --samples and --seeds must be >= 1") and len(err.splitlines()) == 1
    )
