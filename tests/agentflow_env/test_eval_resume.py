"""``evaluate`` resumes exactly and repeats itself: a run killed with ``kill -9`` (its trajectory
file's last line torn) and resumed plays every episode exactly once and reports what an
uninterrupted run reports; episodes whose outcome infrastructure lost are played again; the same
command twice gives identical records (scripted planner, and a real tiny model greedy and with
seeded sampling)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentflow_env.eval import EvalConfig, run
from agentflow_env.evaluate import main
from agentflow_env.llm.base import GenerationRequest, GenerationResult
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.trajectory import EpisodeRecord, read_jsonl

REPO = Path(__file__).resolve().parents[2]
THIS = "python:tests.agentflow_env.test_eval_resume"
EPISODES = 12


def _question(request: GenerationRequest) -> str:
    text = request.messages[-1].content if request.messages else str(request.prompt)
    return text.split("Query:", 1)[-1].split("\n", 2)[1] if "Query:" in text else text[:200]


def slow_planner(request: GenerationRequest) -> str:
    """Deterministic and slow enough to be killed mid-run: a wrong tool first, then an answer
    derived from the question (right for some tasks, wrong for others)."""
    time.sleep(0.15)
    text = request.messages[-1].content if request.messages else str(request.prompt)
    if "### Step 2" not in text:
        return "Justification: try\nSub-Goal: look\nTool Name: No_Such_Tool\nCommand: x"
    return f"Tool Name: Finish\n<answer>{sum(map(ord, _question(request))) % 5}</answer>"


def _argv(out: Path, traj: Path, *extra: str) -> list[str]:
    return [
        "--env",
        "AgentFlow-Math-v0",
        "--tools",
        "",
        "--planner",
        f"{THIS}:slow_planner",
        "--episodes",
        str(EPISODES),
        "--concurrency",
        "2",
        "--max-turns",
        "3",
        "--out",
        str(out),
        "--trajectories",
        str(traj),
        *extra,
    ]


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what differs between runs by nature (timings, the resume flag)."""
    summary = {
        k: v for k, v in report["summary"].items() if k not in ("wall_time_s", "episodes_per_s")
    }
    return {"summary": summary, "episodes": report["episodes"], "tools": report["tools"]}


def _by_index(path: Path) -> list[EpisodeRecord]:
    return sorted(read_jsonl(path), key=lambda r: r.metadata["episode_index"])


@pytest.mark.slow
def test_killed_evaluation_resumes_each_episode_exactly_once(tmp_path: Path) -> None:
    full_out, full_traj = tmp_path / "full.json", tmp_path / "full.jsonl"
    assert main(_argv(full_out, full_traj)) == 0
    out, traj = tmp_path / "r.json", tmp_path / "t.jsonl"
    cmd = [sys.executable, "-m", "agentflow_env.evaluate", *_argv(out, traj)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not (traj.exists() and traj.read_text().count("\n") >= 4):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    lines = traj.read_text().splitlines(keepends=True)
    assert 4 <= len(lines) < EPISODES
    # as if the kill had landed in the middle of writing one more line
    torn = lines[-1][: len(lines[-1]) // 2]
    traj.write_text("".join(lines) + torn)
    before = traj.read_bytes()
    # without --resume the file is never touched
    assert main(_argv(out, traj)) == 2 and traj.read_bytes() == before
    assert main(_argv(out, traj, "--resume")) == 0
    resumed = _by_index(traj)
    assert [r.metadata["episode_index"] for r in resumed] == list(range(EPISODES))
    assert resumed == _by_index(full_traj)
    assert _comparable(json.loads(out.read_text())) == _comparable(json.loads(full_out.read_text()))
    # a finished run resumed again has nothing left to play
    assert main(_argv(out, traj, "--resume")) == 0 and _by_index(traj) == resumed


def test_resume_plays_errored_episodes_again(tmp_path: Path) -> None:
    traj = tmp_path / "t.jsonl"
    down = {"on": True}

    def planner(request: GenerationRequest) -> GenerationResult:
        episode = int(request.sampling.seed or 0) // 1_009  # request seeds: episode * 1009 + turn
        if down["on"] and episode % 2:  # the server fails for every other episode
            return GenerationResult(text="", error="HTTP 503", error_kind="engine_server_error")
        return GenerationResult(text="Tool Name: Finish\n<answer>1</answer>")

    def cfg(**kw: Any) -> EvalConfig:
        base = {
            "env": "AgentFlow-Math-v0",
            "tools": [],
            "planner": CallableEngine(planner),
            "episodes": 6,
            "trajectories": str(traj),
            "max_errors": 1.0,
        }
        return EvalConfig(**{**base, **kw})

    first = run(cfg())["summary"]
    assert first["errored"] == 3 and first["scored"] == 3
    kept = {r.episode_id for r in read_jsonl(traj) if r.infra_error is None}
    down["on"] = False
    second = run(cfg(resume=True))["summary"]
    assert second["errored"] == 0 and second["scored"] == 6 and second["episodes"] == 6
    records = list(read_jsonl(traj))
    assert sorted(r.metadata["episode_index"] for r in records) == list(range(6))
    assert kept < {r.episode_id for r in records}


def test_resume_refuses_a_file_of_another_run(tmp_path: Path) -> None:
    traj = tmp_path / "t.jsonl"
    base = ["--env", "AgentFlow-Math-v0", "--tools", "", "--planner", "scripted:oracle"]
    assert main([*base, "--episodes", "2", "--trajectories", str(traj)]) == 0
    other = ["--env", "AgentFlow-Search-v0", "--planner", "scripted:oracle", "--episodes", "2"]
    before = traj.read_bytes()
    assert main([*other, "--trajectories", str(traj), "--resume"]) == 2
    assert traj.read_bytes() == before
    assert main([*base, "--episodes", "2", "--resume"]) == 2  # nothing to resume from


# ------------------------------------------------------------------------------- determinism
def _twice(tmp_path: Path, *argv: str) -> tuple[list[EpisodeRecord], list[EpisodeRecord]]:
    runs = []
    for name in ("a", "b"):
        traj = tmp_path / f"{name}.jsonl"
        assert main([*argv, "--trajectories", str(traj)]) == 0
        runs.append(_by_index(traj))
    return runs[0], runs[1]


def test_a_scripted_evaluation_repeats_itself(tmp_path: Path) -> None:
    a, b = _twice(
        tmp_path,
        "--env",
        "AgentFlow-Search-v0",
        "--planner",
        "scripted:random-tool",
        "--episodes",
        "8",
        "--concurrency",
        "3",
        "--seed",
        "5",
    )
    assert a == b and len(a) == 8
    assert len({json.dumps([t.action for t in r.turns]) for r in a}) > 1, "episodes differ"


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [["--temperature", "0"], ["--temperature", "1.0"]])
def test_a_model_planner_repeats_itself_greedy_and_seeded(
    tiny_model_dir: Path, tmp_path: Path, sampling: list[str]
) -> None:
    argv = [
        "--env",
        "AgentFlow-Search-v0",
        "--planner",
        f"hf:{tiny_model_dir}",
        "--episodes",
        "4",
        "--concurrency",
        "2",
        "--max-turns",
        "2",
        "--max-tokens",
        "24",
        "--seed",
        "11",
        *sampling,
    ]
    a, b = _twice(tmp_path, *argv)
    assert a == b and all(r.num_turns >= 1 for r in a)
    if sampling[1] != "0":  # a different seed samples differently: the seed is what repeats
        c = tmp_path / "c.jsonl"
        assert main([*argv[:-4], "--seed", "12", *sampling, "--trajectories", str(c)]) == 0
        assert _by_index(c) != a
