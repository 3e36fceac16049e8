"""LLMJudge: prompt, verdict parsing, batching, and failures that are reported, never a silent 0."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import pytest

from agentflow_env import AgentFlowEnv
from agentflow_env.judge import JudgeError, LLMJudge, judge_prompt, parse_verdict
from agentflow_env.llm.base import GenerationRequest, GenerationResult, SamplingParams
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.tasks.base import Task
from tests.agentflow_env.helpers import finish_action

TASK = Task(id="q1", question="Who wrote Hamlet?", answer="William Shakespeare", scorer="f1")


def _field(prompt: str, name: str) -> str:
    match = re.search(rf"^{name}: (.*)$", prompt, re.MULTILINE)
    assert match, prompt
    return match.group(1)


def lenient_grader(request: GenerationRequest) -> str:
    """A rule-based grader speaking the judge's protocol: correct when the surnames agree."""
    prompt = request.messages[-1].content  # type: ignore[index]
    reference, response = _field(prompt, "Reference answer"), _field(prompt, "Response")
    same = reference.split()[-1].lower().strip(".") == response.split()[-1].lower().strip(".")
    return (
        "Both name the same person.\nVerdict: CORRECT"
        if same
        else "They differ.\nVerdict: INCORRECT"
    )


def engine_of(fn: Callable[[GenerationRequest], str]) -> CallableEngine:
    return CallableEngine(fn)


def test_prompt_carries_question_reference_response_and_choices() -> None:
    prompt = judge_prompt("Pick one", "B", "the second", choices=["red", "blue"])
    assert "Question: Pick one" in prompt and "Reference answer: B" in prompt
    assert "Response: the second" in prompt and "A. red\nB. blue" in prompt
    assert "Verdict: CORRECT" in prompt and "Verdict: INCORRECT" in prompt


@pytest.mark.parametrize(
    ("text", "correct"),
    [
        ("Same meaning.\nVerdict: CORRECT", True),
        ("**Verdict:** incorrect", False),
        ("verdict - True", True),
        ("Verdict: CORRECT\nOn reflection...\nVerdict: INCORRECT", False),
        ("Verdict: yes", True),
    ],
)
def test_parse_verdict(text: str, correct: bool) -> None:
    assert parse_verdict(text).correct is correct


@pytest.mark.parametrize("text", ["", "I think it is right.", "Verdict: maybe", "CORRECT"])
def test_unparseable_verdict_raises_typed_error(text: str) -> None:
    with pytest.raises(JudgeError, match="unparseable judge verdict"):
        parse_verdict(text)


def test_judge_scores_equivalent_and_different_answers() -> None:
    judge = LLMJudge(engine_of(lenient_grader))
    assert judge("Shakespeare", TASK) == 1.0
    assert judge("Christopher Marlowe", TASK) == 0.0
    assert judge("   ", TASK) == 0.0  # empty: no engine call
    assert judge.calls == 2


def test_judge_many_is_one_batched_call_with_the_sampling_settings() -> None:
    batches: list[list[GenerationRequest]] = []

    class Recording:
        def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            batches.append(list(requests))
            return [
                GenerationResult(text=lenient_grader(r), prompt_tokens=10, completion_tokens=3)
                for r in requests
            ]

        def close(self) -> None:
            pass

    judge = LLMJudge(Recording())
    scores = judge.judge_many([("W. Shakespeare", TASK), ("", TASK), ("Ben Jonson", TASK)])
    assert scores == [1.0, 0.0, 0.0]
    assert len(batches) == 1 and len(batches[0]) == 2
    assert batches[0][0].sampling.temperature == 0.0 and batches[0][0].sampling.max_tokens == 256
    assert (judge.prompt_tokens, judge.completion_tokens) == (20, 6)


def test_engine_failures_raise_judge_error() -> None:
    def broken(request: GenerationRequest) -> str:
        raise ConnectionError("judge server unreachable")

    with pytest.raises(JudgeError, match="judge server unreachable"):
        LLMJudge(engine_of(broken))("Shakespeare", TASK)

    class Reporting:
        def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            return [GenerationResult(text="", error="HTTP 429 after 4 retries") for _ in requests]

        def close(self) -> None:
            pass

    with pytest.raises(JudgeError, match="HTTP 429"):
        LLMJudge(Reporting())("Shakespeare", TASK)
    with pytest.raises(JudgeError, match="unparseable"):
        LLMJudge(engine_of(lambda r: "looks fine to me"))("Shakespeare", TASK)


def test_fallback_is_used_and_recorded(caplog: pytest.LogCaptureFixture) -> None:
    from agentflow_env.rewards import score

    judge = LLMJudge(engine_of(lambda r: "no idea"), fallback=score)
    exact = Task(id="q2", question="2+2?", answer="4", scorer="exact")
    with caplog.at_level("WARNING"):
        assert judge("4", exact) == 1.0
    assert (
        judge.fallbacks and judge.fallbacks[0][0] == "q2" and "unparseable" in judge.fallbacks[0][1]
    )
    assert "fallback" in caplog.text


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="n=2"):
        LLMJudge(engine_of(lenient_grader), SamplingParams(n=2))
    with pytest.raises(JudgeError, match="string"):
        LLMJudge(engine_of(lenient_grader))(None, TASK)  # type: ignore[arg-type]


def _env(scorer: Callable[[str, Task], float]) -> AgentFlowEnv:
    return AgentFlowEnv(tasks=[TASK], tools=[], scorer=scorer, max_turns=2)


def test_env_reports_judge_success() -> None:
    env = _env(LLMJudge(engine_of(lenient_grader)))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(finish_action("Shakespeare"))
    assert terminated and reward == 1.0 and info["score"] == 1.0 and info["score_error"] is None
    env.close()


def test_env_reports_judge_failure_not_a_silent_zero() -> None:
    env = _env(LLMJudge(engine_of(lambda r: "hmm")))
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(finish_action("Shakespeare"))
    assert terminated and math.isnan(reward)  # no outcome, never a 0
    assert math.isnan(info["score"]) and info["infra_error"]["kind"] == "judge"
    assert info["score_error"].startswith("JudgeError: unparseable judge verdict")
    env.close()


@pytest.mark.slow
def test_a_real_model_that_cannot_judge_is_reported(tiny_model_dir: object) -> None:
    """The tiny model writes planner-like text, not verdicts: a real unparseable-verdict failure."""
    from agentflow_env.llm import make_engine

    engine = make_engine(f"hf:{tiny_model_dir}")
    try:
        judge = LLMJudge(engine, SamplingParams(max_tokens=16))
        with pytest.raises(JudgeError, match="unparseable judge verdict"):
            judge("Shakespeare", TASK)
        assert judge.calls == 1 and judge.completion_tokens > 0
    finally:
        engine.close()
