"""Flow-GRPO end to end: a smoke run changes the parameters and writes events + a checkpoint;
a killed run resumed with --resume ends with exactly the parameters of an uninterrupted run;
two gloo ranks keep identical parameters."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agentflow_env.eval.view import main as view_main
from agentflow_env.trajectory import read_jsonl, write_jsonl
from learners.checkpoint import latest_checkpoint
from learners.flow_grpo.__main__ import main
from tests.agentflow_env.helpers import CHROMIUM, browser_dom

REPO = Path(__file__).resolve().parents[2]


def _args(model: Path, out: Path, steps: int, *extra: str) -> list[str]:
    # Every loss term on (entropy, KL) and no group skipping: the tiny test model rarely
    # succeeds, and the update must still run through every code path.
    return [
        "--model.name-or-path",
        str(model),
        "--output-dir",
        str(out),
        "--total-steps",
        str(steps),
        "--rollout.queries-per-step",
        "2",
        "--rollout.group-size",
        "2",
        "--rollout.max-new-tokens",
        "12",
        "--env.num-tasks",
        "30",
        "--env.eval-tasks",
        "2",
        "--env.max-turns",
        "2",
        "--algo.skip-zero-variance-groups",
        "false",
        "--algo.entropy-coef",
        "0.01",
        "--algo.kl-coef",
        "0.01",
        "--algo.micro-batch-size",
        "2",
        "--train.num-threads",
        "1",
        "--train.progress",
        "false",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_smoke_run_updates_parameters_and_writes_everything(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "run"
    assert main(_args(tiny_model_dir, out, 2, "--train.checkpoint-every", "1")) == 0
    assert capsys.readouterr().out.strip().startswith("eval/success ")
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "final_model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before), "no parameter changed"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in (
        "rollout/success",
        "rollout/turns",
        "train/loss",
        "train/kl",
        "train/clip_frac",
        "train/entropy",
        "train/grad_norm",
        "time/tokens_per_s",
        "eval/success",
    ):
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert latest_checkpoint(out / "checkpoints").name == "ckpt-0000002"
    records = list(read_jsonl(out / "trajectories.jsonl"))
    assert len(records) == 2 * 2 * 2
    assert [(r.metadata["step"], r.metadata["group"]) for r in records] == [
        (step, group) for step in (1, 2) for group in (0, 0, 1, 1)
    ]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_viewer_opens_a_one_step_run_by_step_and_group(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = _args(tiny_model_dir, out, 1, "--env.eval-tasks", "0", "--rollout.temperature", "0.9")
    assert main(argv) == 0
    records = list(read_jsonl(out / "trajectories.jsonl"))
    assert len(records) == 2 * 2
    for index, r in enumerate(records):
        assert r.metadata["step"] == 1 and r.metadata["rank"] == 0
        assert r.metadata["index"] == index and r.metadata["group"] == index // 2
        assert r.metadata["sampling"] == {"temperature": 0.9, "top_p": 1.0, "max_new_tokens": 12}
        assert r.episode_id == f"step1-rank0-traj{index}"
        assert 1 <= r.num_turns <= 2 and (r.terminated or r.truncated) and r.score is not None
        assert len(r.metadata["response_tokens"]) == r.num_turns
    report = tmp_path / "report.html"
    assert view_main([str(out), "-o", str(report)]) == 0
    assert str(report) in capsys.readouterr().out
    page = browser_dom(report, "#group=1")
    assert ("html", {"lang": "en", "data-ready": "1"}) in page.tags, "the page script ran"
    episodes = page.by_class("details", "episode")
    assert [(e["data-step"], e["data-group"]) for e in episodes] == [
        ("1", "0"),
        ("1", "0"),
        ("1", "1"),
        ("1", "1"),
    ]
    assert page.shown_episodes() == ["ep-2", "ep-3"]
    assert browser_dom(report, "#step=1").shown_episodes() == [f"ep-{i}" for i in range(4)]
    assert "Showing 2 of 4 episodes" in "".join(page.text)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_parameters(tiny_model_dir: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "learners.flow_grpo"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(
        cmd + _args(tiny_model_dir, full, 4, "--train.checkpoint-every", "2"),
        env=_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    proc = subprocess.Popen(
        cmd + _args(tiny_model_dir, killed, 4, "--train.checkpoint-every", "2"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    try:
        while latest_checkpoint(killed / "checkpoints") is None:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert alive, "the run finished before the kill; nothing was interrupted"
    assert json.loads((killed / "checkpoints" / "latest.json").read_text())["step"] == 2
    shutil.rmtree(killed / "final_model", ignore_errors=True)
    # As if the kill came after step 3's rollout was written: the resume plays step 3 again.
    stale = next(read_jsonl(full / "trajectories.jsonl")).model_copy(update={"episode_id": "x"})
    stale.metadata["step"] = 3
    with open(killed / "trajectories.jsonl", "a", encoding="utf-8") as fh:
        write_jsonl([stale], fh)
    subprocess.run(
        cmd + _args(tiny_model_dir, killed, 4, "--train.checkpoint-every", "2") + ["--resume"],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=600,
    )
    # Steps played after the checkpoint and again after the resume are recorded once.
    resumed = list(read_jsonl(killed / "trajectories.jsonl"))
    assert resumed == list(read_jsonl(full / "trajectories.jsonl"))
    assert [r.metadata["step"] for r in resumed] == [s for s in (1, 2, 3, 4) for _ in range(4)]
    a = torch.load(full / "checkpoints" / "ckpt-0000004" / "model.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "ckpt-0000004" / "model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    oa = torch.load(full / "checkpoints" / "ckpt-0000004" / "optimizer.pt", weights_only=True)
    ob = torch.load(killed / "checkpoints" / "ckpt-0000004" / "optimizer.pt", weights_only=True)
    assert all(
        torch.equal(oa["state"][i]["exp_avg"], ob["state"][i]["exp_avg"]) for i in oa["state"]
    )


@pytest.mark.slow
def test_two_gloo_ranks_keep_identical_parameters(tiny_model_dir: Path, tmp_path: Path) -> None:
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
    ] + _args(tiny_model_dir, out, 2)
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads((out / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["step"] == 2
    assert ranks["identical"] and ranks["fingerprints"][0] == ranks["fingerprints"][1]
    from safetensors.torch import load_file

    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "final_model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Each rank played one query: group ids are the queries' positions in the step, not per rank.
    for rank, name in enumerate(("trajectories.jsonl", "trajectories-rank1.jsonl")):
        records = list(read_jsonl(out / name))
        assert [(r.metadata["step"], r.metadata["rank"], r.metadata["group"]) for r in records] == [
            (step, rank, rank) for step in (1, 2) for _ in range(2)
        ]


def test_time_budget_stops_early_and_sampled_eval_plays_each_task_eval_samples_times(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    overrides = {
        "model.name_or_path": str(tiny_model_dir),
        "output_dir": str(tmp_path / "run"),
        "train.total_steps": 5,
        "train.max_minutes": 1e-6,
        "train.eval_samples": 3,
        "train.eval_temperature": 1.0,
        "train.progress": False,
        "train.save_trajectories": False,
        "rollout.queries_per_step": 2,
        "rollout.group_size": 2,
        "rollout.max_new_tokens": 8,
        "env.num_tasks": 30,
        "env.eval_tasks": 2,
        "env.max_turns": 2,
        "algo.micro_batch_size": 2,
    }
    trainer = FlowGRPOTrainer(make_config("tiny", overrides=overrides))
    try:
        trainer.train()
        assert trainer.step == 1, "a spent time budget must stop the run after the current step"
        assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "ckpt-0000001"
        assert trainer.last_eval_episodes == 2 * 3  # 2 held-out tasks x 3 samples
        assert [e[0] for e in trainer.history["eval"]] == [0, 1]
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="eval_samples"):
        make_config("tiny", overrides={"train.eval_samples": 0})
    with pytest.raises(ValueError, match="max_minutes"):
        make_config("tiny", overrides={"train.max_minutes": -1})


def test_chat_template_run_counts_and_logs_prefix_breaks_once(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A template that drops its generation prompt from the history (as reasoning models' do)
    breaks the prefix property at every later turn: the run trains on per-turn samples, logs the
    reason once and records rollout/prefix_breaks."""
    from tests.learners.test_chat_rollout import REASONING_TEMPLATE

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").write_text(REASONING_TEMPLATE)
    out = tmp_path / "run"
    argv = _args(model, out, 2, "--env.eval-tasks", "0", "--model.chat-template", "true")
    with caplog.at_level("WARNING", logger="learners.rollout"):
        assert main(argv) == 0
    warnings = [r.getMessage() for r in caplog.records if "prefix break" in r.getMessage()]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    breaks = [e.value for e in events.Scalars("rollout/prefix_breaks")]
    turns = [e.value for e in events.Scalars("rollout/turns")]
    # Every turn after the first of a trajectory is a break: breaks per trajectory = turns - 1.
    assert breaks == pytest.approx([t - 1 for t in turns]) and max(turns) > 1
    assert len(warnings) == 1 and "earlier-turns" in warnings[0]
