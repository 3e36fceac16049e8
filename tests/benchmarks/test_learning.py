"""benchmarks/learning.py --merge: combining saved runs keeps provenance and recomputes the
target; the flow_grpo_k1 method is a real asynchronous run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.learning import main, merge_results
from learners.flow_grpo.config import ConfigError


def _run(method: str, seed: int, before: float, after: float, minutes: float) -> dict:
    return {
        "method": method,
        "seed": seed,
        "before": before,
        "after": after,
        "gain": after - before,
        "train_minutes": minutes,
        "curve": [
            {"step": 0, "eval_success": before, "minutes": 0.0},
            {"step": 9, "eval_success": after, "minutes": minutes},
        ],
    }


def _file(path: Path, runs: list[dict], stamp: str) -> Path:
    path.write_text(
        json.dumps({"quick": False, "results": runs, "machine": {"cpus": 2, "timestamp": stamp}})
    )
    return path


def test_merge_later_file_replaces_same_method_and_seed_and_keeps_provenance(
    tmp_path: Path,
) -> None:
    pytest.importorskip("matplotlib")
    old = _file(
        tmp_path / "old.json",
        [
            _run("flow_grpo", 0, 0.24, 0.47, 10.1),
            _run("flow_grpo", 1, 0.23, 0.48, 10.05),
            _run("sft_only", 0, 0.24, 0.95, 10.0),
        ],
        "2026-11-22T08:42:00",
    )
    new = _file(
        tmp_path / "new.json",
        [_run("flow_grpo", 0, 0.25, 0.46, 9.9), _run("flow_grpo", 1, 0.23, 0.52, 9.97)],
        "2026-11-22T09:08:00",
    )
    results, quick = merge_results([old, new])
    assert not quick
    assert [(r["method"], r["seed"]) for r in results] == [
        ("flow_grpo", 0),
        ("flow_grpo", 1),
        ("sft_only", 0),
    ]
    assert [r["measured"]["file"] for r in results] == [str(new), str(new), str(old)]
    assert results[0]["train_minutes"] == 9.9
    out = tmp_path / "merged.json"
    assert main(["--merge", str(old), str(new), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["target_met"] is True  # every flow_grpo run: >= +0.20 within 10 minutes
    assert merged["summary"]["flow_grpo"]["n"] == 2 and merged["summary"]["sft_only"]["n"] == 1
    assert merged["machine"]["timestamp"] == "2026-11-22T09:08:00"  # the newest reading
    assert out.with_suffix(".png").is_file()
    # in the other order the over-budget runs win, and the target is not met
    assert main(["--merge", str(new), str(old), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["target_met"] is False


def test_merge_rejects_a_file_without_results(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"quick": False}))
    with pytest.raises(ValueError, match="no 'results' list"):
        merge_results([bad])


def test_flow_grpo_k1_method_trains_with_one_update_stale_rollouts(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The learning benchmark's ``flow_grpo_k1`` is the flow_grpo run with rollout.max_staleness
    1: a real (tiny) run whose step t samples with the weights after update t-2."""
    from agentflow_env.trajectory import read_jsonl
    from benchmarks.learning import run_job

    overrides = {
        "model.name_or_path": str(tiny_model_dir),
        "train.num_threads": 1,
        "train.total_steps": 3,
        "train.max_minutes": 0,
        "train.eval_every": 0,
        "train.eval_samples": 1,
        "train.checkpoint_every": 0,
        "rollout.queries_per_step": 2,
        "rollout.group_size": 2,
        "rollout.max_new_tokens": 12,
        "env.num_tasks": 30,
        "env.eval_tasks": 2,
        "env.max_turns": 2,
        "algo.micro_batch_size": 2,
    }
    r = run_job("flow_grpo_k1", 0, tmp_path / "run", overrides, sft_minutes=1.0)
    assert (r["method"], r["seed"]) == ("flow_grpo_k1", 0)
    assert r["gain"] == pytest.approx(r["after"] - r["before"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["rollout"]["max_staleness"] == 1
    assert config["algo"]["estimator"] == "flow_grpo"
    versions = {
        rec.metadata["step"]: rec.metadata["policy_version"]
        for rec in read_jsonl(tmp_path / "run" / "trajectories.jsonl")
    }
    assert versions == {1: 0, 2: 0, 3: 1}  # step t: the weights after update t-2 (0: the start)
    with pytest.raises(ConfigError, match="no_such_method"):
        run_job("no_such_method", 0, tmp_path / "bad", overrides, sft_minutes=1.0)
