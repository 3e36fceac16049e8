"""Base_Generator_Tool: requests as plain data, batching, error results, env integration."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tools.base import TextGenerator, Tool
from tools.generator import BaseGeneratorTool

_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}


def _arith(node: ast.AST) -> int:
    """Evaluate integer + - * expressions (anything else raises ValueError)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.left), _arith(node.right))
    raise ValueError("not arithmetic")


@dataclass
class _Result:
    text: str
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class ArithmeticEngine:
    """A real (deterministic) text generator: evaluates ``a + b`` style questions.

    Records every batch it receives so tests can check batching and the request contents.
    """

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def generate(self, requests: Sequence[Any]) -> list[_Result]:
        self.batches.append(list(requests))
        out = []
        for req in requests:
            # Plain dicts (the tool's default) or GenerationRequest objects (what the env passes).
            question = (
                req["messages"][-1]["content"]
                if isinstance(req, dict)
                else req.messages[-1].content
            )
            try:
                value = _arith(ast.parse(question.split(":")[-1].strip(), mode="eval").body)
            except (ValueError, SyntaxError):
                out.append(
                    _Result(text="I cannot compute that.", prompt_tokens=5, completion_tokens=4)
                )
                continue
            out.append(
                _Result(text=f"  The answer is {value}.  ", prompt_tokens=7, completion_tokens=5)
            )
        return out

    def close(self) -> None:
        pass


def test_card_and_protocols() -> None:
    engine = ArithmeticEngine()
    tool = BaseGeneratorTool(engine)
    assert isinstance(engine, TextGenerator)
    assert isinstance(tool, Tool)
    assert tool.card.name == "Base_Generator_Tool" and tool.card.primary_input == "query"
    assert "query" in tool.card.input_types and "Base_Generator_Tool" in tool.card.render()


def test_execute_builds_plain_data_request_and_strips_answer() -> None:
    engine = ArithmeticEngine()
    tool = BaseGeneratorTool(engine, system_prompt="Be brief.", temperature=0.3, max_tokens=64)
    result = tool.execute(query="Compute: 2 + 3")
    assert result.ok and result.output == "The answer is 5."
    assert result.data == {"query": "Compute: 2 + 3", "prompt_tokens": 7, "completion_tokens": 5}
    [[request]] = engine.batches
    assert request == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Compute: 2 + 3"},
        ],
        "sampling": {"temperature": 0.3, "max_tokens": 64},
    }


def test_request_factory_converts_to_engine_requests() -> None:
    from agentflow_env.llm.base import GenerationRequest

    seen: list[Any] = []

    class TypedEngine:
        def generate(self, requests: Sequence[GenerationRequest]) -> list[_Result]:
            seen.extend(requests)
            return [_Result(text=(r.messages or ())[-1].content.upper()) for r in requests]

    tool = BaseGeneratorTool(
        TypedEngine(), request_factory=GenerationRequest.model_validate, max_tokens=9
    )
    assert tool.execute(query="hello").output == "HELLO"
    assert isinstance(seen[0], GenerationRequest)
    assert seen[0].sampling.max_tokens == 9 and seen[0].sampling.temperature == 0.0


def test_batch_execute_is_one_engine_call_and_keeps_order() -> None:
    engine = ArithmeticEngine()
    tool = BaseGeneratorTool(engine)
    results = tool.batch_execute(["Compute: 1 + 1", "", "Compute: 10 * 3", 42])
    assert len(engine.batches) == 1 and len(engine.batches[0]) == 2  # bad inputs never reach it
    assert [r.ok for r in results] == [True, False, True, False]
    assert results[0].output == "The answer is 2." and results[2].output == "The answer is 30."
    assert "empty" in (results[1].error or "") and "string" in (results[3].error or "")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"query": None}, "string"),
        ({"query": "   "}, "empty"),
        ({"query": "x" * 101}, "limit is 100"),
        ({"query": "hi", "code": "1"}, "unknown inputs"),
    ],
)
def test_bad_input_gives_error_results(kwargs: dict[str, Any], match: str) -> None:
    engine = ArithmeticEngine()
    result = BaseGeneratorTool(engine, max_query_chars=100).execute(**kwargs)
    assert not result.ok and match in (result.error or "")
    assert engine.batches == []


def test_engine_failures_become_error_results() -> None:
    class Failing:
        def __init__(self, mode: str) -> None:
            self.mode = mode

        def generate(self, requests: Sequence[Any]) -> list[Any]:
            if self.mode == "raise":
                raise ConnectionError("server down")
            if self.mode == "error":
                return [_Result(text="", error="HTTP 503 after 3 retries") for _ in requests]
            if self.mode == "count":
                return []
            if self.mode == "notext":
                return [object() for _ in requests]
            return [_Result(text="   ") for _ in requests]

    expected = {
        "raise": "ConnectionError: server down",
        "error": "HTTP 503 after 3 retries",
        "count": "0 results for 1",
        "notext": "no text",
        "empty": "empty answer",
    }
    for mode, message in expected.items():
        result = BaseGeneratorTool(Failing(mode)).execute(query="q")
        assert not result.ok and message in (result.error or ""), (mode, result)
        # the engine failing is the tool's backend failing; an empty answer is the model's own
        assert result.infra == (None if mode == "empty" else "backend"), mode


def test_long_answers_are_truncated() -> None:
    class Verbose:
        def generate(self, requests: Sequence[Any]) -> list[_Result]:
            return [_Result(text="word " * 100) for _ in requests]

    result = BaseGeneratorTool(Verbose(), max_output_chars=50).execute(query="talk")
    assert result.ok and result.output.endswith("...[truncated]") and len(result.output) == 50 + 15


def test_constructor_validates() -> None:
    with pytest.raises(TypeError, match="generate"):
        BaseGeneratorTool(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="request_factory"):
        BaseGeneratorTool(ArithmeticEngine(), request_factory="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        BaseGeneratorTool(ArithmeticEngine(), temperature=-1)
    with pytest.raises(ValueError, match="max_tokens"):
        BaseGeneratorTool(ArithmeticEngine(), max_tokens=0)


def test_tools_package_does_not_import_agentflow_env() -> None:
    code = (
        "import sys, tools.generator; "
        "assert not any(m.startswith('agentflow_env') for m in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_in_the_env_through_tool_kwargs() -> None:
    """The env builds the tool from tool_kwargs; the planner's command reaches the engine."""
    from agentflow_env import AgentFlowEnv
    from agentflow_env.tasks.base import Task

    engine = ArithmeticEngine()
    env = AgentFlowEnv(
        tasks=[Task(id="a", question="What is 6 * 7?", answer="42")],
        tools=["Base_Generator_Tool"],
        tool_kwargs={"Base_Generator_Tool": {"engine": engine}},
        scorer=lambda prediction, task: float(prediction == task.answer),
        max_turns=2,
    )
    obs, _ = env.reset(seed=0)
    assert "Base_Generator_Tool" in obs
    obs, reward, terminated, truncated, info = env.step(
        "Sub-Goal: compute\nTool Name: Base_Generator_Tool\nCommand: Compute: 6 * 7"
    )
    assert info["tool_result"] == "The answer is 42." and "The answer is 42." in obs
    assert not (terminated or truncated) and reward == 0.0
    _, reward, terminated, _, info = env.step("Tool Name: Finish\n<answer>42</answer>")
    assert terminated and reward == 1.0 and info["score"] == 1.0
    env.close()


@pytest.mark.slow
def test_with_a_real_tiny_transformers_model(tiny_model_dir: Any) -> None:
    """A real local model behind the tool: one batched generate, sampling settings honoured."""
    from agentflow_env.llm import make_engine
    from agentflow_env.llm.base import GenerationRequest

    engine = make_engine(f"hf:{tiny_model_dir}")
    try:
        tool = BaseGeneratorTool(
            engine, request_factory=GenerationRequest.model_validate, max_tokens=8
        )
        results = tool.batch_execute(["What is the capital of France?", "Name a prime number."])
        assert all(r.ok and r.output for r in results), results
        assert all(r.data["completion_tokens"] <= 8 for r in results)
    finally:
        engine.close()
