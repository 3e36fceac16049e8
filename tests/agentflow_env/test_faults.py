"""The fault suite: a real fault-injecting OpenAI-compatible server on loopback
(:mod:`tests.faults`) behind every engine role. Each failure mode must end in its own
``infra_error`` kind, never in a score; each run must end in bounded time with the CLI's exit
status (0 done, 3 stopped by infrastructure); a server that fails once per request (``flaky``)
must cost nothing but retries."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow_env import AgentFlowEnv, AgentFlowVectorEnv
from agentflow_env.evaluate import main
from agentflow_env.llm import GenerationRequest
from agentflow_env.llm.openai_engine import OpenAIEngine
from agentflow_env.trajectory import read_jsonl
from tests.agentflow_env.helpers import lookup_action, lookup_env_kwargs
from tests.faults import EXPECTED_KIND, FAILING_MODES, FaultServer

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S, RETRIES = 0.5, 1
# One request's worst case: (retries + 1) attempts of TIMEOUT_S plus backoff; everything here
# must stay far below what a run without timeouts would take (the hang lasts 60 s).
BOUND_S = 15.0


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with FaultServer(retry_after=0.4) as s:
        yield s


def _engine(server: FaultServer, mode: str) -> OpenAIEngine:
    return OpenAIEngine(
        f"fault-{mode}",
        server.url,
        timeout_s=TIMEOUT_S,
        max_retries=RETRIES,
        backoff_base_s=0.05,
        seed=0,
    )


# ---------------------------------------------------------------------------------- the engine
@pytest.mark.parametrize("mode", FAILING_MODES)
def test_each_fault_is_retried_then_classified(server: FaultServer, mode: str) -> None:
    with _engine(server, mode) as engine:
        before = server.count(mode)
        start = time.monotonic()
        [result] = engine.generate([GenerationRequest.chat("q", max_tokens=4)])
        elapsed = time.monotonic() - start
    assert result.error and result.text == "" and result.error_kind == EXPECTED_KIND[mode]
    assert server.count(mode) - before == RETRIES + 1, "every attempt reached the server"
    assert elapsed < BOUND_S


def test_retry_after_is_honoured(server: FaultServer) -> None:
    with _engine(server, "429") as engine:
        engine.generate([GenerationRequest.chat("spacing", max_tokens=4)])
    times = [t for t, mode, _ in server.records if mode == "429"][-2:]
    assert times[1] - times[0] >= 0.4 - 0.02  # the backoff alone would wait ~0.05 s


def test_a_failure_followed_by_success_costs_only_a_retry(server: FaultServer) -> None:
    with _engine(server, "flaky") as engine:
        results = engine.generate([GenerationRequest.chat(f"q{i}", max_tokens=4) for i in range(4)])
    assert [r.error for r in results] == [None] * 4 and results[0].text.endswith("Command: 42")


# ---------------------------------------------------------------------------------- the envs
def _env_kwargs(server: FaultServer, mode: str, role: str) -> dict[str, Any]:
    return lookup_env_kwargs(3, **{role: "llm", f"{role}_engine": _engine(server, mode)})


@pytest.mark.parametrize("mode", [*FAILING_MODES, "flaky"])
@pytest.mark.parametrize("role", ["executor", "verifier", "generator"])
def test_single_env_ends_an_episode_whose_module_engine_failed(
    server: FaultServer, mode: str, role: str
) -> None:
    kwargs = _env_kwargs(server, mode, role)
    env = AgentFlowEnv(**kwargs)
    try:
        env.reset(options={"task_index": 1})
        start = time.monotonic()
        # the generator runs only at the end: let the turn limit come first
        for _ in range(3 if role == "generator" else 1):
            _, reward, terminated, truncated, info = env.step(lookup_action("item 1"))
        elapsed = time.monotonic() - start
    finally:
        env.close()
        kwargs[f"{role}_engine"].close()
    assert elapsed < BOUND_S
    if mode == "flaky":  # every request succeeded on its retry: no failure anywhere
        assert "infra_error" not in info and not math.isnan(reward)
        return
    assert info["infra_error"]["kind"] == EXPECTED_KIND[mode]
    assert info["infra_error"]["source"] == role
    assert truncated and not terminated and math.isnan(reward) and math.isnan(info["score"])


@pytest.mark.parametrize("mode", FAILING_MODES)
def test_vector_env_ends_only_the_failing_episodes(server: FaultServer, mode: str) -> None:
    kwargs = _env_kwargs(server, mode, "executor")
    envs = AgentFlowVectorEnv(3, **kwargs)
    try:
        envs.reset(options={"task_indices": [0, 1, 2]})
        start = time.monotonic()
        # sub-env 1 calls the tool (and so the executor's failing engine); 0 and 2 finish
        _, rewards, terms, truncs, infos = envs.step(
            ["<answer>code-0</answer>", lookup_action("item 1"), "<answer>wrong</answer>"]
        )
        elapsed = time.monotonic() - start
    finally:
        envs.close()
        kwargs["executor_engine"].close()
    assert elapsed < BOUND_S
    assert terms.tolist() == [True, False, True] and truncs.tolist() == [False, True, False]
    assert rewards[0] == 1.0 and rewards[2] == 0.0 and math.isnan(rewards[1])
    assert infos["_infra_error"].tolist() == [False, True, False]
    assert infos["infra_error"]["kind"][1] == EXPECTED_KIND[mode]


# ------------------------------------------------------------------------------------ the CLI
def _evaluate(tmp_path: Path, planner: str, *extra: str) -> tuple[int, float, dict[str, Any]]:
    out, traj = tmp_path / "r.json", tmp_path / "t.jsonl"
    argv = [
        "--env",
        "AgentFlow-Math-v0",
        "--tools",
        "",
        "--planner",
        planner,
        "--episodes",
        "4",
        "--concurrency",
        "2",
        "--request-timeout",
        str(TIMEOUT_S),
        "--max-retries",
        str(RETRIES),
        "--out",
        str(out),
        "--trajectories",
        str(traj),
        "--overwrite",
        *extra,
    ]
    start = time.monotonic()
    code = main(argv)
    elapsed = time.monotonic() - start
    report = json.loads(out.read_text()) if out.exists() else {}
    if out.exists():
        records = list(read_jsonl(traj))
        assert len(records) == report["summary"]["episodes"]
        out.unlink()
    return code, elapsed, report


@pytest.mark.parametrize("mode", FAILING_MODES)
def test_evaluate_classifies_every_planner_fault(
    server: FaultServer, tmp_path: Path, mode: str
) -> None:
    # the preflight finds the broken engine before any episode: exit 3, nothing written
    code, elapsed, report = _evaluate(tmp_path, server.spec(mode))
    assert code == 3 and report == {} and elapsed < BOUND_S
    # without it (and no error limit) every episode is played, errored, never scored
    code, elapsed, report = _evaluate(
        tmp_path, server.spec(mode), "--no-preflight", "--max-errors", "1.0"
    )
    summary = report["summary"]
    assert code == 0 and elapsed < 2 * BOUND_S
    assert summary["errored"] == 4 and summary["errored_by_kind"] == {EXPECTED_KIND[mode]: 4}
    assert summary["scored"] == 0 and summary["accuracy"] is None
    assert summary["accuracy_errored_as_wrong"] == 0.0
    # with the default limit the first errored episode stops the run: exit 3, partial report
    code, elapsed, report = _evaluate(tmp_path, server.spec(mode), "--no-preflight")
    assert code == 3 and elapsed < BOUND_S
    assert 1 <= report["summary"]["errored"] <= 2 and report["summary"]["stopped"]


def test_evaluate_with_a_flaky_planner_scores_every_episode(
    server: FaultServer, tmp_path: Path
) -> None:
    code, _, report = _evaluate(tmp_path, server.spec("flaky"))
    assert code == 0 and report["summary"]["errored"] == 0 and report["summary"]["scored"] == 4


@pytest.mark.parametrize(
    ("flags", "source"),
    [(["--executor", "llm", "--max-turns", "1"], "executor"), (["--judge", "{spec}"], "judge")],
)
def test_evaluate_classifies_module_and_judge_faults(
    server: FaultServer, tmp_path: Path, flags: list[str], source: str
) -> None:
    spec = server.spec("500")
    extra = [f.format(spec=spec) for f in flags]
    if "--executor" in extra:  # the first step searches: the executor writes the call
        extra += ["--module-engine", spec]
    search = ["--env", "AgentFlow-Search-v0", "--tools", "Search_Tool"]
    planner = "scripted:search-then-answer"
    code, _, report = _evaluate(
        tmp_path, planner, "--no-preflight", "--max-errors", "1.0", *search, *extra
    )
    assert code == 0
    rows = report["episodes"]
    assert all(r["infra_error"]["kind"] == "engine_server_error" for r in rows)
    assert {r["infra_error"]["source"] for r in rows} == {source}


def test_cli_exit_statuses_are_one_line_without_traceback(
    server: FaultServer, tmp_path: Path
) -> None:
    base = [sys.executable, "-m", "agentflow_env.evaluate", "--env", "AgentFlow-Math-v0"]
    base += ["--tools", "", "--episodes", "2", "--request-timeout", "0.5", "--max-retries", "0"]

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *argv], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
        )

    down = cli("--planner", server.spec("500"))
    assert down.returncode == 3 and "Traceback" not in down.stderr
    assert down.stderr.strip().splitlines() == [
        line for line in down.stderr.strip().splitlines() if line.startswith("stopped: preflight")
    ]
    assert "engine_server_error" in down.stderr
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    taken = cli("--planner", "scripted:oracle", "--out", str(existing))
    assert taken.returncode == 2 and "Traceback" not in taken.stderr
    assert taken.stderr.count("\n") == 1 and "--overwrite" in taken.stderr
    assert existing.read_text() == "{}", "an existing output is never touched without a flag"
    bad_dir = cli("--planner", "scripted:oracle", "--out", str(existing / "r.json"))
    assert bad_dir.returncode == 2 and "is not a directory" in bad_dir.stderr
    assert "Traceback" not in bad_dir.stderr
