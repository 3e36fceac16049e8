"""``python -m agentflow_env.evaluate``: every shared benchmark file, engine planners, the judge,
LLM modules, batching, and clear errors for bad arguments.

The module-level functions below are real policies/engines reached through ``python:`` engine
specs (``python:tests.agentflow_env.test_evaluate:NAME``), exactly as a user would plug one in.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agentflow_env.eval import (
    EnvOverrides,
    EvalConfig,
    EvaluateError,
    RunStopped,
    choose_tools,
    infer_kind,
    run,
    wilson_interval,
)
from agentflow_env.evaluate import main
from agentflow_env.format import PLANNER_STOP
from agentflow_env.llm.base import GenerationRequest, GenerationResult
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.planners import EngineBatchPlanner
from agentflow_env.prompts import GENERATOR_TASK, VERIFIER_TASK
from agentflow_env.tasks.base import Task
from agentflow_env.trajectory import read_jsonl
from tests.conftest import REPO_ROOT

CUE = "the lines Justification, Context, Sub-Goal, Tool Name and Command."
"""what a chat user message asks for after "Write step k:" while the episode goes on"""

THIS = "python:tests.agentflow_env.test_evaluate"
SHARED_KINDS = {
    "2wiki.json": "search",
    "aime24.json": "math",
    "amc23.json": "math",
    "bamboogle.json": "search",
    "gaia.json": "agentic",
    "gameof24.json": "math",
    "gpqa.json": "science",
    "hotpotqa.json": "search",
    "medqa.json": "science",
    "musique.json": "search",
}
ITEMS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
CODES = {name: f"code-{7 * k + 3}" for k, name in enumerate(ITEMS)}
NUM_ITEMS = len(ITEMS)


# ------------------------------------------------------------------ policies and engines for specs
def _text(request: GenerationRequest) -> str:
    return request.messages[-1].content if request.messages else str(request.prompt)


def _planner_input(request: GenerationRequest) -> tuple[str, str]:
    """(the text holding the query, the last step's result or ""): from the chat messages
    (system, query, then action and result per step) or from the raw text observation."""
    if request.messages:
        messages = request.messages
        return messages[1].content, messages[-1].content if len(messages) > 2 else ""
    obs = str(request.prompt)
    return obs, obs.split("### Step")[-2] if "Result:" in obs else ""


def _item(text: str) -> str:
    return re.search(r"item (\w+)\?", text).group(1)  # type: ignore[union-attr]


def search_planner(request: GenerationRequest) -> str:
    """Search the item's code, then answer the code the last result states for that item."""
    query, last = _planner_input(request)
    item = _item(query)
    found = re.findall(rf"code of item {item} is (code-\d+)", last)
    if found:
        return (
            f"Justification: found it\nTool Name: Finish\n<answer>{found[0]}</answer>\nResult: junk"
        )
    return f"Sub-Goal: find the code\nTool Name: Search_Tool\nCommand: code of item {item}"


def generator_tool_planner(request: GenerationRequest) -> str:
    """Ask Base_Generator_Tool (the module engine answers), leave stopping to the LLM verifier."""
    return (
        "Sub-Goal: ask the model\nTool Name: Base_Generator_Tool\n"
        f"Command: code of item {_item(_planner_input(request)[0])}?"
    )


def module_engine(request: GenerationRequest) -> GenerationResult:
    """Paper-mode modules and Base_Generator_Tool, speaking their prompts' formats."""
    text = _text(request)
    if text.startswith("You are the executor"):
        command = re.search(r"Sub-Goal: ask the model", text) and re.search(
            r"code of item \w+\?", text
        )
        out = (
            f'Command: execution = tool.execute(query="{command.group(0)}")'
            if command
            else "no idea"
        )
    elif VERIFIER_TASK in text:
        out = "The code is known.\nConclusion: STOP" if "code-" in text else "Conclusion: CONTINUE"
    elif GENERATOR_TASK in text:
        codes = re.findall(r"code-\d+", text)
        out = f"<answer>{codes[-1]}</answer>"
    elif text.startswith("Analyze the query"):
        out = "The query asks for an item's code."
    else:  # Base_Generator_Tool: the planner's question as written
        out = f"The code is {CODES[_item(text)]}."
    return GenerationResult(
        text=out, prompt_tokens=len(text.split()), completion_tokens=len(out.split())
    )


def half_right_planner(request: GenerationRequest) -> str:
    """Answers at once: right for every other item, a wrong code for the rest."""
    item = _item(_planner_input(request)[0])
    answer = CODES[item] if ITEMS.index(item) % 2 == 0 else "code-0"
    return f"Tool Name: Finish\n<answer>{answer}</answer>"


def exact_judge(request: GenerationRequest) -> GenerationResult:
    text = _text(request)
    ref = re.search(r"^Reference answer: (.*)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    resp = re.search(r"^Response: (.*)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    verdict = "CORRECT" if ref.strip().lower() == resp.strip().lower() else "INCORRECT"
    return GenerationResult(
        text=f"Compared.\nVerdict: {verdict}", prompt_tokens=50, completion_tokens=3
    )


def rambling_judge(request: GenerationRequest) -> str:
    return "Both answers look plausible to me."


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def item_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A JSONL task file (exact-match answers, kind 'search') and a JSONL corpus for Search_Tool."""
    root = tmp_path_factory.mktemp("items")
    tasks = root / "items.jsonl"
    corpus = root / "corpus.jsonl"
    tasks.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"i{k}",
                    "question": f"What is the code of item {name}?",
                    "answer": CODES[name],
                }
            )
            + "\n"
            for k, name in enumerate(ITEMS)
        )
    )
    corpus.write_text(
        "".join(
            json.dumps(
                {
                    "id": str(k),
                    "title": f"Item {name}",
                    "text": f"The code of item {name} is {CODES[name]}.",
                }
            )
            + "\n"
            for k, name in enumerate(ITEMS)
        )
    )
    return tasks, corpus


def _strict_json(path: Path) -> dict[str, Any]:
    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant} in {path}")

    return json.loads(path.read_text(), parse_constant=reject)


def _cli(tmp_path: Path, *argv: str) -> tuple[dict[str, Any], list[Any]]:
    out, traj = tmp_path / "results.json", tmp_path / "traj.jsonl"
    # --overwrite: a test may evaluate several times into the same files
    assert main([*argv, "--out", str(out), "--trajectories", str(traj), "--overwrite"]) == 0
    # records are streamed in completion order; each knows its episode index
    return _strict_json(out), sorted(read_jsonl(traj), key=lambda r: r.metadata["episode_index"])


# ------------------------------------------------------------------------- shared benchmark files
@pytest.mark.parametrize("name", sorted(SHARED_KINDS))
def test_every_shared_file_with_the_oracle(
    name: str, shared_benchmarks_dir: Path, tmp_path: Path
) -> None:
    """Loader, tools, env and rule scorer agree: the oracle (which answers the gold) scores 1.0."""
    from agentflow_env.tasks.loaders import load_tasks

    path = shared_benchmarks_dir / name
    report, records = _cli(
        tmp_path,
        "--data",
        str(path),
        "--planner",
        "scripted:oracle",
        "--episodes",
        "3",
        "--concurrency",
        "2",
    )
    summary = report["summary"]
    assert summary["episodes"] == summary["scored"] == 3 and len(report["episodes"]) == 3
    assert summary["accuracy"] == 1.0 and sum(summary["errors"].values()) == 0
    assert [r.task_id for r in records] == [t.id for t in load_tasks(path)[:3]]
    assert all(r.score == 1.0 and r.terminated for r in records)
    assert report["kind"] == SHARED_KINDS[name]
    if SHARED_KINDS[name] == "search":
        assert report["tools"] == [] and any("Search_Tool left out" in n for n in report["notes"])
    else:
        assert report["tools"] == ["Python_Coder_Tool"]


def test_counts_match_the_file_size(shared_benchmarks_dir: Path, tmp_path: Path) -> None:
    report, records = _cli(
        tmp_path,
        "--data",
        str(shared_benchmarks_dir / "aime24.json"),
        "--planner",
        "scripted:oracle",
        "--concurrency",
        "4",
    )
    assert report["summary"]["episodes"] == len(records) == 30
    assert [row["index"] for row in report["episodes"]] == list(range(30))
    report, _ = _cli(
        tmp_path,
        "--data",
        str(shared_benchmarks_dir / "amc23.json"),
        "--planner",
        "scripted:oracle",
        "--episodes",
        "1000",
        "--shuffle",
    )
    assert report["summary"]["episodes"] == 40
    assert len({row["task_id"] for row in report["episodes"]}) == 40


def test_baselines_on_a_science_file(shared_benchmarks_dir: Path, tmp_path: Path) -> None:
    data = str(shared_benchmarks_dir / "gpqa.json")
    report, _ = _cli(
        tmp_path,
        "--data",
        data,
        "--planner",
        "scripted:random-tool",
        "--episodes",
        "4",
        "--max-turns",
        "3",
    )
    summary = report["summary"]
    turns = sum(row["turns"] for row in report["episodes"])
    # every turn but the finishing ones calls Python_Coder_Tool (the only tool here)
    assert summary["episodes"] == 4
    assert summary["tool_calls"].get("Python_Coder_Tool", 0) == turns - summary["terminated"] > 0
    # search-then-answer has no Search_Tool here: each search is an unknown-tool parse error.
    report, records = _cli(
        tmp_path, "--data", data, "--planner", "scripted:search-then-answer", "--episodes", "4"
    )
    assert report["summary"]["errors"]["parse"] == 4
    assert all("unknown tool" in (r.turns[0].error or "") for r in records)


def test_real_subprocess(shared_benchmarks_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    cmd = [
        sys.executable,
        "-m",
        "agentflow_env.evaluate",
        "--data",
        str(shared_benchmarks_dir / "gameof24.json"),
        "--planner",
        "scripted:oracle",
        "--episodes",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "accuracy" in proc.stdout and "calls: Python_Coder_Tool" in proc.stdout
    assert _strict_json(out)["summary"]["accuracy"] == 1.0
    bad = subprocess.run(
        [sys.executable, "-m", "agentflow_env.evaluate", "--env", "AgentFlow-Nope-v0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "unknown env id 'AgentFlow-Nope-v0'" in bad.stderr


# ------------------------------------------------------------------------------- engine planners
def test_engine_planner_spec_with_a_search_corpus(
    item_data: tuple[Path, Path], tmp_path: Path
) -> None:
    tasks, corpus = item_data
    report, records = _cli(
        tmp_path,
        "--data",
        str(tasks),
        "--corpus",
        str(corpus),
        "--planner",
        f"{THIS}:search_planner",
        "--episodes",
        "5",
        "--concurrency",
        "3",
    )
    summary = report["summary"]
    assert report["tools"] == ["Search_Tool"] and report["notes"] == []
    assert summary["accuracy"] == 1.0 and summary["tool_calls"] == {"Search_Tool": 5}
    assert summary["mean_turns"] == 2.0 and sum(summary["errors"].values()) == 0
    # the planner's invented "Result:" line was cut by the planner's stop strings
    assert all("Result: junk" not in r.turns[-1].action for r in records)


def test_one_generate_call_per_step_with_the_sampling_settings(
    item_data: tuple[Path, Path],
) -> None:
    tasks, corpus = item_data
    batches: list[list[GenerationRequest]] = []

    def batch_fn(requests: Sequence[GenerationRequest]) -> list[str]:
        batches.append(list(requests))
        return [search_planner(r) for r in requests]

    report = run(
        EvalConfig(
            data=str(tasks),
            corpus=str(corpus),
            planner=CallableEngine(batch_fn, batched=True),
            episodes=7,
            concurrency=3,
            temperature=0.5,
            max_tokens=77,
            seed=3,
        )
    )
    turns = sum(row["turns"] for row in report["episodes"])
    assert sum(len(b) for b in batches) == turns == 14
    assert len(batches[0]) == 3 and max(len(b) for b in batches) == 3
    assert len(batches) < turns  # batched: fewer calls than planner turns
    requests = [r for b in batches for r in b]
    assert {(r.sampling.temperature, r.sampling.max_tokens, r.sampling.stop) for r in requests} == {
        (0.5, 77, PLANNER_STOP)
    }
    assert len({r.sampling.seed for r in requests}) == len(requests)  # one seed per (episode, turn)


def test_chat_planner_input_sends_the_episodes_messages(item_data: tuple[Path, Path]) -> None:
    tasks, corpus = item_data
    seen: list[GenerationRequest] = []

    def fn(request: GenerationRequest) -> str:
        seen.append(request)
        return search_planner(request)

    traj = Path(tasks).parent / "chat-traj.jsonl"
    report = run(
        EvalConfig(
            data=str(tasks),
            corpus=str(corpus),
            planner=CallableEngine(fn),
            episodes=1,
            trajectories=str(traj),
        )
    )
    assert report["summary"]["accuracy"] == 1.0 and len(seen) == 2
    first, second = ([(m.role, m.content) for m in r.messages or ()] for r in seen)
    assert [role for role, _ in first] == ["system", "user"]
    assert "Available tools:" in first[0][1] and first[1][1].endswith(f"Write step 1: {CUE}")
    assert second[:2] == first, "append-only"
    [record] = read_jsonl(traj)
    assert second[2] == ("assistant", record.turns[0].action)
    assert second[3] == ("user", f"Result: {record.turns[0].tool_result}\n\nWrite step 2: {CUE}")


def test_chat_planner_needs_the_messages() -> None:
    planner = EngineBatchPlanner(CallableEngine(lambda r: "x"))
    with pytest.raises(ValueError, match="messages"):
        planner.act([0], ["### Step 1\n"], [0], [1])
    prompt = EngineBatchPlanner(CallableEngine(lambda r: r.prompt.upper()), input_mode="prompt")
    assert prompt.act([0], ["### Step 1\n"], [0], [1]) == ["### STEP 1\n"]


def test_raw_prompt_planner_input(item_data: tuple[Path, Path]) -> None:
    tasks, corpus = item_data
    seen: list[GenerationRequest] = []

    def fn(request: GenerationRequest) -> str:
        seen.append(request)
        return search_planner(request)

    report = run(
        EvalConfig(
            data=str(tasks),
            corpus=str(corpus),
            planner=CallableEngine(fn),
            episodes=1,
            planner_input="prompt",
        )
    )
    assert report["summary"]["accuracy"] == 1.0 and len(seen) == 2
    assert all(
        r.messages is None and (r.prompt or "").endswith("### Step 2\n" if i else "### Step 1\n")
        for i, r in enumerate(seen)
    )


def test_results_do_not_depend_on_concurrency(item_data: tuple[Path, Path]) -> None:
    tasks, corpus = item_data

    def rows(concurrency: int) -> list[dict[str, Any]]:
        report = run(
            EvalConfig(
                data=str(tasks),
                corpus=str(corpus),
                planner="scripted:random-tool",
                episodes=NUM_ITEMS,
                concurrency=concurrency,
                seed=5,
                max_turns=4,
            )
        )
        return [{k: v for k, v in row.items()} for row in report["episodes"]]

    serial = rows(1)
    assert serial == rows(3)
    assert len({row["turns"] for row in serial}) > 1  # the random planner really varied


def test_trajectories_are_streamed_as_episodes_finish(
    item_data: tuple[Path, Path], tmp_path: Path
) -> None:
    tasks, corpus = item_data
    calls = 0

    def interrupted(requests: Sequence[GenerationRequest]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 3:  # after two steps of two sub-envs: two finished episodes
            raise KeyboardInterrupt
        return [search_planner(r) for r in requests]

    traj = tmp_path / "traj.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run(
            EvalConfig(
                data=str(tasks),
                corpus=str(corpus),
                planner=CallableEngine(interrupted, batched=True),
                episodes=6,
                concurrency=2,
                trajectories=str(traj),
            )
        )
    assert sorted(r.task_id for r in read_jsonl(traj)) == ["i0", "i1"]


def test_planner_engine_failures_are_errored_episodes_not_wrong_answers(
    item_data: tuple[Path, Path],
) -> None:
    tasks, _ = item_data
    engine = CallableEngine(
        lambda r: GenerationResult(
            text="", error="HTTP 503 after 3 retries", error_kind="engine_server_error"
        )
    )
    cfg = EvalConfig(data=str(tasks), planner=engine, episodes=2, max_turns=2, max_errors=1.0)
    report = run(cfg)
    summary = report["summary"]
    # each episode ends at its first failed planner call: no empty action is played or scored
    assert summary["errors"]["planner"] == 2 and summary["errors"]["parse"] == 0
    assert summary["errored"] == 2 and summary["scored"] == 0 and summary["accuracy"] is None
    assert summary["errored_by_kind"] == {"engine_server_error": 2}
    assert summary["accuracy_errored_as_wrong"] == 0.0 and summary["stopped"] is None
    for row in report["episodes"]:
        assert row["score"] is None and row["turns"] == 0
        assert row["infra_error"]["source"] == "planner"
    # the default limit (a tenth of the planned episodes) stops the run, partial report kept
    with pytest.raises(RunStopped, match="errored episodes") as stop:
        run(EvalConfig(data=str(tasks), planner=engine, episodes=2, max_turns=2))
    assert stop.value.report is not None and stop.value.report["summary"]["errored"] >= 1


@pytest.mark.slow
def test_tiny_transformers_model_as_planner(
    tiny_model_dir: Path, item_data: tuple[Path, Path], tmp_path: Path
) -> None:
    tasks, corpus = item_data
    report, records = _cli(
        tmp_path,
        "--data",
        str(tasks),
        "--corpus",
        str(corpus),
        "--planner",
        f"hf:{tiny_model_dir}",
        "--episodes",
        "2",
        "--concurrency",
        "2",
        "--max-turns",
        "2",
        "--max-tokens",
        "24",
    )
    tokens = report["summary"]["tokens"]["planner"]
    assert report["summary"]["episodes"] == 2 and all(r.num_turns >= 1 for r in records)
    assert tokens["prompt"] > 0 and tokens["completion"] > 0


def test_a_local_model_batches_every_episode_stepping_together(tiny_model_dir: Path) -> None:
    """``--concurrency 24`` with an ``hf:`` planner: one ``generate`` batch of 24 rows, not
    16 + 8 (the engine's own default batch stays the floor)."""
    from agentflow_env.eval.build import engine_kwargs, make_planner

    cfg = EvalConfig(planner=f"hf:{tiny_model_dir}", concurrency=24, temperature=0.0, max_tokens=8)
    planner = make_planner(cfg)
    assert _inner_engine(planner).backend.max_batch_size == 24
    assert engine_kwargs(EvalConfig(concurrency=2), "hf:x") == {"max_batch_size": 16}
    assert engine_kwargs(EvalConfig(concurrency=64), "transformers:x") == {"max_batch_size": 64}
    # other engines keep their own batching (a server's, or a function's)
    assert engine_kwargs(EvalConfig(concurrency=64), "python:m:f") == {}
    assert engine_kwargs(EvalConfig(concurrency=64, max_retries=1), "openai:m") == {
        "max_retries": 1
    }


def _inner_engine(planner: Any) -> Any:
    engine = planner.engine
    while hasattr(engine, "engine"):  # CountingEngine and the like wrap the real one
        engine = engine.engine
    return engine


# --------------------------------------------------------------------------------- judge, modules
def test_judge_scores_episodes(item_data: tuple[Path, Path], tmp_path: Path) -> None:
    tasks, _ = item_data
    report, records = _cli(
        tmp_path,
        "--data",
        str(tasks),
        "--planner",
        f"{THIS}:half_right_planner",
        "--episodes",
        "4",
        "--judge",
        f"{THIS}:exact_judge",
    )
    summary = report["summary"]
    assert summary["accuracy"] == 0.5 and summary["scored"] == 4 and summary["errors"]["score"] == 0
    assert [r.score for r in records] == [1.0, 0.0, 1.0, 0.0]
    assert summary["tokens"]["judge"] == {"prompt": 200, "completion": 12}


def test_judge_failure_is_an_error_not_a_zero(item_data: tuple[Path, Path], tmp_path: Path) -> None:
    tasks, _ = item_data
    report, records = _cli(
        tmp_path,
        "--data",
        str(tasks),
        "--planner",
        "scripted:oracle",
        "--episodes",
        "3",
        "--judge",
        f"{THIS}:rambling_judge",
        "--max-errors",
        "3",
    )
    summary = report["summary"]
    assert (
        summary["scored"] == 0 and summary["accuracy"] is None and summary["accuracy_ci95"] is None
    )
    assert summary["errors"]["score"] == 3
    assert summary["errored"] == 3 and summary["errored_by_kind"] == {"judge": 3}
    for row, record in zip(report["episodes"], records, strict=True):
        assert row["score"] is None and row["score_error"].startswith("JudgeError: unparseable")
        assert record.score is None and record.score_error == row["score_error"]
        assert record.infra_error is not None and record.infra_error.kind == "judge"
        assert record.answer is not None  # the answer is kept; only its score is missing
    report, _ = _cli(
        tmp_path,
        "--data",
        str(tasks),
        "--planner",
        "scripted:oracle",
        "--episodes",
        "3",
        "--judge",
        f"{THIS}:rambling_judge",
        "--judge-fallback",
    )
    summary = report["summary"]
    assert summary["errors"]["judge_fallback"] == 3 and summary["errors"]["score"] == 0
    assert summary["scored"] == 3 and summary["accuracy"] == 1.0


def test_llm_modules_and_base_generator_tool(item_data: tuple[Path, Path], tmp_path: Path) -> None:
    tasks, _ = item_data
    report, records = _cli(
        tmp_path,
        "--data",
        str(tasks),
        "--planner",
        f"{THIS}:generator_tool_planner",
        "--executor",
        "llm",
        "--verifier",
        "llm",
        "--generator",
        "llm",
        "--query-analysis",
        "--module-engine",
        f"{THIS}:module_engine",
        "--episodes",
        "4",
        "--concurrency",
        "2",
    )
    summary = report["summary"]
    assert report["tools"] == ["Base_Generator_Tool"] and any(
        "Search_Tool" in n for n in report["notes"]
    )
    assert (
        summary["accuracy"] == 1.0 and summary["mean_turns"] == 1.0 and summary["terminated"] == 4
    )
    assert (
        summary["tool_calls"] == {"Base_Generator_Tool": 4} and sum(summary["errors"].values()) == 0
    )
    assert records[0].turns[0].tool_result == "The code is code-3."
    assert records[0].turns[0].verifier == "STOP"
    assert (
        summary["tokens"]["modules"]["prompt"] > 0
        and summary["tokens"]["planner"]["prompt"] is None
    )


@pytest.mark.parametrize(
    ("source", "modules"),
    [
        ("query_analysis", {"query_analysis": True}),
        ("executor", {"executor": "llm"}),
        ("verifier", {"verifier": "llm"}),
        ("generator", {"generator": "llm"}),
    ],
)
def test_module_engine_failures_are_errored_episodes_by_kind(
    item_data: tuple[Path, Path], source: str, modules: dict[str, Any]
) -> None:
    tasks, corpus = item_data
    failing = CallableEngine(
        lambda r: GenerationResult(
            text="", error="HTTP 500 after 3 retries", error_kind="engine_server_error"
        )
    )
    cfg = EvalConfig(
        data=str(tasks),
        corpus=str(corpus),
        planner=f"{THIS}:search_planner",
        module_engine=failing,
        episodes=2,
        max_turns=2,
        max_errors=1.0,
        **modules,
    )
    report = run(cfg)
    summary = report["summary"]
    assert summary["errored"] == 2 and summary["scored"] == 0
    assert summary["errored_by_kind"] == {"engine_server_error": 2}
    assert {row["infra_error"]["source"] for row in report["episodes"]} == {source}
    # an engine failure is not the planner's mistake: nothing is charged to its actions
    assert summary["errors"]["parse"] == 0 and summary["errors"]["tool"] == 0


def test_generated_tasks_without_data(tmp_path: Path) -> None:
    report, records = _cli(
        tmp_path, "--env", "AgentFlow-Math-v0", "--planner", "scripted:oracle", "--episodes", "3"
    )
    assert report["summary"]["episodes"] == 3 and report["summary"]["accuracy"] == 1.0
    assert report["tools"] == ["Python_Coder_Tool"] and len(records) == 3


# ------------------------------------------------------------------------------------ env kwargs
COMPACT_TOP1 = {"prompt_style": "compact", "tool_kwargs": {"Search_Tool": {"top_k": 1}}}


def test_env_kwargs_reach_the_env_merged_over_the_evaluators_own(
    item_data: tuple[Path, Path], tmp_path: Path
) -> None:
    tasks, corpus = item_data

    def evaluate(env_kwargs: dict[str, Any] | None) -> tuple[dict[str, Any], list[str], set[int]]:
        seen: list[GenerationRequest] = []

        def planner(request: GenerationRequest) -> str:
            seen.append(request)
            return search_planner(request)

        traj = tmp_path / "traj.jsonl"
        report = run(
            EvalConfig(
                data=str(tasks),
                corpus=str(corpus),
                planner=CallableEngine(planner),
                episodes=2,
                env_kwargs=env_kwargs,
                trajectories=str(traj),
                overwrite=True,
            )
        )
        passages = {r.turns[0].tool_result.count("Doc ") for r in read_jsonl(traj)}
        return report, [[m.content for m in r.messages or ()] for r in seen], passages

    # defaults: the full prompt (tool cards, format) and Search_Tool's 3 passages per search
    report, prompts, passages = evaluate(None)
    assert passages == {3} and prompts[0][0].startswith("You are the planner")
    assert report["config"]["env_kwargs"] is None
    # the tiny planner's settings: compact prompt, one passage; our corpus_path is kept (merged
    # per tool)
    report, prompts, passages = evaluate(COMPACT_TOP1)
    assert report["summary"]["accuracy"] == 1.0 and passages == {1}
    assert prompts[0] == [
        "Tools: Search_Tool, Finish",
        f"Query: What is the code of item alpha?\n\nWrite step 1: {CUE}",
    ]
    assert report["config"]["env_kwargs"] == COMPACT_TOP1  # recorded as given


def test_env_kwargs_on_the_command_line(
    item_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks, corpus = item_data
    report, records = _cli(
        tmp_path,
        "--data",
        str(tasks),
        "--corpus",
        str(corpus),
        "--planner",
        f"{THIS}:search_planner",
        "--episodes",
        "2",
        "--env-kwargs",
        json.dumps(COMPACT_TOP1),
    )
    assert report["config"]["env_kwargs"] == COMPACT_TOP1 and report["summary"]["accuracy"] == 1.0
    assert all(r.turns[0].tool_result.count("Doc ") == 1 for r in records)
    assert '"top_k": 1' in capsys.readouterr().out  # the table shows them
    # generated tasks: num_tasks / task_kwargs shape the task set
    report, _ = _cli(
        tmp_path,
        "--env",
        "AgentFlow-Math-v0",
        "--planner",
        "scripted:oracle",
        "--env-kwargs",
        '{"num_tasks": 3}',
    )
    assert report["summary"]["episodes"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{bad", "argument --env-kwargs: not valid JSON (Expecting property name"),
        ('["prompt_style"]', "argument --env-kwargs: must be a JSON object, got list"),
        ("", "argument --env-kwargs: not valid JSON"),
    ],
)
def test_env_kwargs_that_are_not_a_json_object_are_argparse_errors(
    text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--env-kwargs", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and message in err


def test_env_kwargs_errors_from_the_python_api(item_data: tuple[Path, Path]) -> None:
    tasks, _ = item_data
    with pytest.raises(EvaluateError, match="must be a JSON object, got list"):
        run(EvalConfig(data=str(tasks), env_kwargs=["prompt_style"]))  # type: ignore[arg-type]
    with pytest.raises(
        EvaluateError,
        match=r"unknown key 'render_mode'; valid: constrained_modules, prompt_style, tool_kwargs",
    ):
        run(EvalConfig(data=str(tasks), env_kwargs={"render_mode": "ansi"}))


# --------------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "Nope-v0"], "unknown env id 'Nope-v0'"),
        (["--env", "CartPole-v1"], "is not an AgentFlow environment"),
        (["--data", "/no/such/file.json"], "no such file"),
        (["--data", "hf:nobody/nothing"], "--data 'hf:nobody/nothing': DatasetUnavailableError"),
        (["--planner", "gpt4"], "bad engine spec 'gpt4'"),
        (["--planner", "scripted:genius"], "unknown scripted planner; valid: scripted:oracle"),
        (["--planner", "magic:model"], "unknown engine kind 'magic'"),
        (["--planner", "python:no_such_module:fn"], "cannot import 'no_such_module'"),
        (["--judge", "judge-me"], "--judge: bad engine spec"),
        (["--verifier", "llm"], "--verifier llm needs --module-engine"),
        (["--tools", "Search_Tool"], "Search_Tool needs a corpus"),
        (["--tools", "Base_Generator_Tool"], "Base_Generator_Tool need --module-engine"),
        (["--query-analysis"], "--query-analysis and Base_Generator_Tool need --module-engine"),
        (["--tools", "Laser_Tool"], "unknown tool 'Laser_Tool'"),
        (["--episodes", "0"], "--episodes must be >= 1"),
        (["--corpus", "/no/corpus.jsonl"], "--corpus '/no/corpus.jsonl': no such file"),
        (
            ["--env-kwargs", '{"max_turns": 2}'],
            "--env-kwargs 'max_turns' has an option of its own: use --max-turns",
        ),
        (
            ["--env-kwargs", '{"engine": "hf:x"}'],
            "'engine' has an option of its own: use --module-engine",
        ),
        (
            ["--env-kwargs", '{"top_k": 1}'],
            "--env-kwargs: unknown key 'top_k'; valid: constrained_modules, prompt_style, "
            "tool_kwargs",
        ),
        (
            ["--env-kwargs", '{"prompt_style": "tiny"}'],
            "--env-kwargs: prompt_style: Input should be 'full', 'compact' or 'paper' (got 'tiny')",
        ),
        (
            ["--env-kwargs", '{"num_tasks": "5"}'],
            "num_tasks: Input should be a valid integer (got '5')",
        ),
        (
            ["--env-kwargs", '{"tool_kwargs": {"Search_Tool": 1}}'],
            "tool_kwargs.Search_Tool: Input should be a valid dictionary (got 1)",
        ),
        (
            ["--env-kwargs", '{"tool_kwargs": {"Search_Tool": {"top_k": 1}}}'],
            "tool_kwargs names 'Search_Tool', not a tool of this run (no tools) "
            "(Search_Tool needs --corpus",
        ),
        (
            [
                "--corpus",
                "CORPUS",
                "--tools",
                "Python_Coder_Tool",
                "--env-kwargs",
                '{"tool_kwargs": {"Search_Tool": {"top_k": 1}}}',
            ],
            "not a tool of this run (Python_Coder_Tool)\n",
        ),
        (
            ["--env-kwargs", '{"num_tasks": 5}'],
            "num_tasks / task_kwargs shape the generated task set",
        ),
        (
            [
                "--corpus",
                "CORPUS",
                "--env-kwargs",
                '{"tool_kwargs": {"Search_Tool": {"top_k": 0}}}',
            ],
            "could not build AgentFlow-Search-v0: ValueError: "
            "top_k must be an integer in [1, 50], got 0",
        ),
        (
            ["--corpus", "CORPUS", "--env-kwargs", '{"tool_kwargs": {"Search_Tool": {"topk": 1}}}'],
            "TypeError: SearchTool.__init__() got an unexpected keyword argument 'topk'",
        ),
    ],
)
def test_bad_arguments_get_clear_errors(
    argv: list[str],
    message: str,
    item_data: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # no network attempt if `datasets` is installed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tasks, corpus = item_data
    argv = [str(corpus) if a == "CORPUS" else a for a in argv]
    args = ["--data", str(tasks), *argv] if "--data" not in argv else argv
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_malformed_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "answer": "a"}\nnot json\n')
    assert main(["--data", str(bad)]) == 2
    assert "line 2 is not JSON" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- helpers
def test_wilson_interval() -> None:
    low, high = wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert wilson_interval(0, 10)[0] == 0.0 and round(wilson_interval(0, 10)[1], 4) == 0.2775
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] > 0.69
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_kind_and_tool_choice() -> None:
    def tasks(
        scorer: str, source: str = "x.json", choices: tuple[str, ...] | None = None
    ) -> list[Task]:
        return [
            Task(id="a", question="q", answer="A", scorer=scorer, source=source, choices=choices)
        ]  # type: ignore[arg-type]

    assert infer_kind(tasks("math")) == infer_kind(tasks("game24")) == "math"
    assert infer_kind(tasks("mc", choices=("x", "y"))) == "science"
    assert infer_kind(tasks("exact", source="gaia.json")) == "agentic"
    assert infer_kind(tasks("f1")) == "search"
    assert choose_tools("agentic", None, None, False) == (
        ["Python_Coder_Tool"],
        ["Search_Tool left out: no corpus for this data (pass --corpus PATH.jsonl)"],
    )
    assert choose_tools("search", None, "c.jsonl", True) == (
        ["Search_Tool", "Base_Generator_Tool"],
        [],
    )
    names, notes = choose_tools("search", None, None, False)
    assert names == [] and notes[-1] == "no tools: the planner answers closed-book"
    assert choose_tools("math", ["Python_Coder_Tool"], None, False) == (["Python_Coder_Tool"], [])


def test_every_env_override_is_an_env_constructor_argument() -> None:
    """EnvOverrides must not drift from the env's constructor (build_flow's keyword arguments)."""
    import inspect

    from agentflow_env.env import build_flow

    params = inspect.signature(build_flow).parameters
    assert set(EnvOverrides.model_fields) <= set(params)
    for name in EnvOverrides.model_fields:
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
