"""Asynchronous rollouts (rollout.max_staleness): the worker at lag 0 reproduces the synchronous
loop exactly; lag 1 samples with weights one update old and says so in every record; a resumed
run draws the same queries; truncated importance weights; two gloo ranks stay identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agentflow_env.trajectory import read_jsonl
from learners.flow_grpo.async_rollout import RolloutWorker, StepPlan, WorkerError
from learners.flow_grpo.config import ConfigError, make_config
from learners.flow_grpo.trainer import FlowGRPOTrainer
from tests.learners.test_trainer import _args, _env


def _config(model: Path, out: Path, steps: int, **extra: Any) -> Any:
    overrides = {
        "model.name_or_path": str(model),
        "output_dir": str(out),
        "train.total_steps": steps,
        "train.max_minutes": 0,
        "train.progress": False,
        "train.checkpoint_every": 0,
        "train.num_threads": 1,
        "rollout.queries_per_step": 2,
        "rollout.group_size": 2,
        "rollout.max_new_tokens": 12,
        "rollout.temperature": 1.0,
        "env.num_tasks": 30,
        "env.eval_tasks": 0,
        "env.max_turns": 2,
        # The test model rarely succeeds: keep every group and an entropy term, so that every
        # update changes the parameters.
        "algo.skip_zero_variance_groups": False,
        "algo.entropy_coef": 0.01,
        "algo.micro_batch_size": 2,
        **extra,
    }
    return make_config("tiny", overrides=overrides)


def _train(cfg: Any, lag: int | None = None) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Run to the end; the final parameters and every step's scalars."""
    steps = []
    with FlowGRPOTrainer(cfg) as trainer:
        if lag is not None:
            trainer.use_rollout_worker(lag)
        while trainer.step < cfg.train.total_steps:
            steps.append(trainer.train_step())
            trainer.step += 1
        params = {k: v.detach().clone() for k, v in trainer.policy.model.state_dict().items()}
    return params, steps


def _records(out: Path) -> list[Any]:
    return list(read_jsonl(out / "trajectories.jsonl"))


def test_lag_zero_worker_reproduces_the_synchronous_loop(tiny_model_dir: Path, tmp_path: Path):
    sync, _ = _train(_config(tiny_model_dir, tmp_path / "sync", 3))
    worker, stats = _train(_config(tiny_model_dir, tmp_path / "worker", 3), lag=0)
    assert sync.keys() == worker.keys()
    for k in sync:
        assert torch.equal(sync[k], worker[k]), k
    a, b = _records(tmp_path / "sync"), _records(tmp_path / "worker")
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    assert [r.metadata["policy_version"] for r in a] == [s - 1 for s in (1, 2, 3) for _ in range(4)]
    assert all(s["rollout/policy_lag"] == 0 for s in stats)
    # The config's k = 0 is the synchronous loop itself (no worker thread).
    with FlowGRPOTrainer(_config(tiny_model_dir, tmp_path / "k0", 1)) as trainer:
        trainer.train_step()
        assert trainer._pipeline is None


def test_staleness_one_samples_with_weights_one_update_old(tiny_model_dir: Path, tmp_path: Path):
    cfg = _config(tiny_model_dir, tmp_path / "k1", 4, **{"rollout.max_staleness": 1})
    params, stats = _train(cfg)
    records = _records(tmp_path / "k1")
    # Step t samples with version t - 2 (never before the start): 0, 0, 1, 2.
    versions = {r.metadata["step"]: r.metadata["policy_version"] for r in records}
    assert versions == {1: 0, 2: 0, 3: 1, 4: 2}
    assert [s["rollout/policy_lag"] for s in stats] == [0.0, 1.0, 1.0, 1.0]
    assert all(s["train/optimizer_steps"] > 0 for s in stats)
    start = FlowGRPOTrainer(_config(tiny_model_dir, tmp_path / "start", 1))
    try:
        before = start.policy.model.state_dict()
        assert any(not torch.equal(before[k], params[k]) for k in params), "nothing learned"
    finally:
        start.close()
    # The same queries as the synchronous loop, step by step (plans are drawn in step order).
    _train(_config(tiny_model_dir, tmp_path / "k0", 4))
    sync = _records(tmp_path / "k0")
    assert [(r.metadata["step"], r.task_id) for r in records] == [
        (r.metadata["step"], r.task_id) for r in sync
    ]


def test_concurrent_collectors_give_the_same_parameters(tiny_model_dir: Path, tmp_path: Path):
    """k = 1 with one collector and with two (each its own model copy and envs, two rollouts in
    flight): bit-identical parameters and records, whatever the threads' timing."""
    runs = {}
    for c in (1, 2):
        extra = {"rollout.max_staleness": 1, "rollout.collectors": c}
        cfg = _config(tiny_model_dir, tmp_path / f"c{c}", 4, **extra)
        with FlowGRPOTrainer(cfg) as trainer:
            trainer.use_rollout_worker(1, c)
            assert len(trainer._pipeline.collectors) == c  # type: ignore[union-attr]
            envs = {id(col.envs) for col in trainer._pipeline.collectors}  # type: ignore[union-attr]
            assert len(envs) == c and id(trainer.envs) in envs
            made = [col.envs for col in trainer._pipeline.collectors[1:]]  # type: ignore[union-attr]
            while trainer.step < cfg.train.total_steps:
                trainer.train_step()
                trainer.step += 1
            runs[c] = {k: v.detach().clone() for k, v in trainer.policy.model.state_dict().items()}
        assert all(env.closed for env in made)  # the worker closed the envs it built
    for k in runs[1]:
        assert torch.equal(runs[1][k], runs[2][k]), k
    a, b = _records(tmp_path / "c1"), _records(tmp_path / "c2")
    assert [r.model_dump() for r in a] == [r.model_dump() for r in b]
    versions = {r.metadata["step"]: r.metadata["policy_version"] for r in b}
    assert versions == {1: 0, 2: 0, 3: 1, 4: 2}


def test_truncated_importance_weights_run_and_stay_finite(tiny_model_dir: Path, tmp_path: Path):
    cfg = _config(
        tiny_model_dir, tmp_path / "tis", 3, **{"rollout.max_staleness": 1, "algo.tis_cap": 2.0}
    )
    params, stats = _train(cfg)
    assert all(torch.isfinite(v).all() for v in params.values())
    assert all(np.isfinite(s["train/loss"]) for s in stats)
    with pytest.raises(ConfigError, match="tis_cap"):
        make_config("tiny", overrides={"algo.tis_cap": -1})


def test_resumed_async_run_draws_the_same_queries(tiny_model_dir: Path, tmp_path: Path):
    extra = {"rollout.max_staleness": 1, "train.checkpoint_every": 2, "train.eval_every": 0}
    full = _config(tiny_model_dir, tmp_path / "full", 4, **extra)
    with FlowGRPOTrainer(full) as trainer:
        trainer.train()
    half = _config(tiny_model_dir, tmp_path / "half", 2, **extra)
    with FlowGRPOTrainer(half) as trainer:
        trainer.train()  # a checkpoint at step 2; step 3's plan was drawn, not played
    again = _config(tiny_model_dir, tmp_path / "half", 4, **extra)
    with FlowGRPOTrainer(again) as trainer:
        trainer.train(resume=True)
    steps = [(r.metadata["step"], r.task_id) for r in _records(tmp_path / "half")]
    assert steps == [(r.metadata["step"], r.task_id) for r in _records(tmp_path / "full")]
    # The restarted pipeline samples step 3 with the resumed weights (version 2).
    versions = {
        r.metadata["step"]: r.metadata["policy_version"] for r in _records(tmp_path / "half")
    }
    assert versions == {1: 0, 2: 0, 3: 2, 4: 2}


def test_a_failing_rollout_reaches_the_trainer(tiny_model_dir: Path, tmp_path: Path):
    def broken(policy: Any, envs: Any, plan: StepPlan, version: int) -> Any:
        raise RuntimeError(f"tool backend down at step {plan.step}")

    def plan(step: int) -> StepPlan:
        return StepPlan(step, np.array([0]), step, {})

    with FlowGRPOTrainer(_config(tiny_model_dir, tmp_path / "x", 2)) as trainer:
        worker = RolloutWorker(trainer.policy, broken, plan, lag=1, total_steps=2)
        try:
            with pytest.raises(WorkerError, match="tool backend down at step 1") as info:
                worker.take(1, trainer.policy.model)
            assert isinstance(info.value.__cause__, RuntimeError)
            with pytest.raises(WorkerError, match="not the next one"):
                worker.take(2, trainer.policy.model)
        finally:
            worker.close(timeout_s=30)


def test_bad_staleness_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_staleness=-1"):
        make_config("tiny", overrides={"rollout.max_staleness": -1})
    with pytest.raises(ConfigError, match="rollout.backend transformers and no FSDP"):
        make_config("tiny", overrides={"rollout.max_staleness": 1, "train.distributed": "fsdp"})
    with pytest.raises(ConfigError, match="rollout.backend transformers and no FSDP"):
        make_config("tiny", overrides={"rollout.max_staleness": 1, "rollout.backend": "vllm"})
    for k, c in ((1, 3), (0, 2), (2, -1)):
        with pytest.raises(ConfigError, match=f"rollout.collectors={c} must be in"):
            make_config("tiny", overrides={"rollout.max_staleness": k, "rollout.collectors": c})
    cfg = make_config("tiny", overrides={"rollout.max_staleness": 2, "rollout.collectors": 3})
    assert cfg.rollout.collectors == 3


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_with_staleness(tiny_model_dir: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "learners.flow_grpo",
        *_args(tiny_model_dir, out, 3, "--rollout.max-staleness", "1"),
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["step"] == 3 and ranks["identical"]
    for rank, name in enumerate(("trajectories.jsonl", "trajectories-rank1.jsonl")):
        records = list(read_jsonl(out / name))
        assert [
            (r.metadata["step"], r.metadata["rank"], r.metadata["policy_version"]) for r in records
        ] == [(step, rank, version) for step, version in ((1, 0), (2, 0), (3, 1)) for _ in range(2)]
