"""Constrained planning: ``evaluate --planner-constrained`` holds the planner to the action grammar
(fields in order, Tool Name from the episode's tools), with a function planner and with a real
instruct model (training refuses ``rollout.constrained``: tests/learners/test_config.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agentflow_env.eval import EvalConfig, EvaluateError, RunStopped, run
from agentflow_env.eval.cli import build_parser
from agentflow_env.format import finish_action, split_observation
from agentflow_env.llm import CallableEngine, GenerationRequest
from agentflow_env.llm.structured import match_text
from agentflow_env.planners.batch import EngineBatchPlanner, PlannerSpecError, make_batch_planner

FIELDS = {"sub_goal": "answer", "justification": "known", "context": "None"}


def _tool_names(request: GenerationRequest) -> list[str]:
    """The tools the request's prompt offers: the raw observation's, or (chat input) those the
    system message's action format lists."""
    if not request.messages:
        return split_observation(str(request.prompt)).tool_names
    listed = re.search(r"Tool Name: <one of: (.*?)>", request.messages[0].content)
    assert listed is not None, request.messages[0].content
    return [name for name in listed.group(1).split(", ") if name != "Finish"]


@pytest.fixture
def one_thread() -> Iterator[None]:
    # a shared 2-core machine: competing torch threads slow every small op (tests/conftest.py)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_request_carries_the_grammar_of_its_episodes_tools() -> None:
    seen: list[GenerationRequest] = []

    def planner(request: GenerationRequest) -> str:
        seen.append(request)
        return finish_action("Lima", **FIELDS)

    report = run(
        EvalConfig(
            planner=CallableEngine(planner), episodes=2, max_turns=2, planner_constrained=True
        )
    )
    assert report["summary"]["errors"].get("parse", 0) == 0 and len(seen) == 2
    for request in seen:
        tools = _tool_names(request)
        assert tools and request.constraint is not None and request.constraint.kind == "grammar"
        for tool in tools:
            assert f'"{tool}"' in (request.constraint.grammar or "")
        assert match_text(request.constraint, finish_action("Lima", **FIELDS)) == "complete"


def test_a_planner_that_breaks_the_grammar_is_an_infrastructure_failure_not_an_answer() -> None:
    engine = CallableEngine(lambda r: "Tool Name: Finish\n<answer>Lima</answer>")  # no fields
    with pytest.raises(RunStopped, match="ConstraintViolationError.*not a prefix"):
        run(EvalConfig(planner=engine, episodes=2, max_turns=2, planner_constrained=True))
    unconstrained = run(EvalConfig(planner=engine, episodes=2, max_turns=2))
    assert unconstrained["summary"]["errors"].get("planner", 0) == 0  # the same text, accepted


def test_the_tool_names_come_from_the_observation_else_from_bind_tools() -> None:
    planner = EngineBatchPlanner(CallableEngine(lambda r: ""), constrained=True)
    with pytest.raises(ValueError, match="needs the episode's tool names"):
        planner.constraint("an observation without a tool list")
    planner.bind_tools(["Search_Tool"])
    grammar = planner.constraint("an observation without a tool list").grammar or ""
    assert '"Search_Tool"' in grammar and "Python_Coder_Tool" not in grammar


def test_scripted_planners_cannot_be_constrained() -> None:
    with pytest.raises(EvaluateError, match="--planner-constrained"):
        run(EvalConfig(planner="scripted:oracle", planner_constrained=True, episodes=1))
    with pytest.raises(PlannerSpecError, match="scripted planners write"):
        make_batch_planner("scripted:oracle", constrained=True)
    args = build_parser().parse_args(["--planner", "hf:x", "--planner-constrained"])
    assert args.planner_constrained is True
    assert build_parser().parse_args([]).planner_constrained is False


@pytest.mark.slow
def test_a_real_instruct_model_writes_only_parseable_actions(
    smollm2_dir: Path, one_thread: None
) -> None:
    report = run(
        EvalConfig(
            planner=f"hf:{smollm2_dir}",
            planner_constrained=True,
            episodes=2,
            concurrency=2,
            max_turns=1,
            max_tokens=300,
        )
    )
    summary = report["summary"]
    assert summary["episodes"] == 2
    assert summary["errors"].get("parse", 0) == 0 and summary["errors"].get("planner", 0) == 0
