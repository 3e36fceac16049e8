"""LLMJudge: prompt, verdict parsing, batching, and failures that are reported, never a silent 0."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence

import pytest

from agentflow_env import AgentFlowEnv
from agentflow_env.judge import (
    JudgeError,
    LLMJudge,
    judge_prompt,
    parse_extraction,
    parse_json_verdict,
    parse_verdict,
    reference_text,
)
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


# ------------------------------------------------------------- the reference's structured forms
def _json_reply(correct: bool, analysis: str = "compared") -> str:
    return json.dumps({"analysis": analysis, "true_false": correct})


@pytest.mark.parametrize(
    ("text", "correct"),
    [
        ('{"analysis": "same city", "true_false": true}', True),
        ('```json\n{"analysis": "differs", "true_false": false}\n```', False),
        ('Let me check. {"analysis": "equal", "true_false": "True"} Done.', True),
        ('{"true_false": true} on reflection {"analysis": "no", "true_false": false}', False),
    ],
)
def test_parse_json_verdict(text: str, correct: bool) -> None:
    assert parse_json_verdict(text).correct is correct


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("The answer is: Paris", "no JSON object with 'true_false'"),
        ('{"analysis": "fine"}', "no JSON object with 'true_false'"),
        ('{"analysis": "hm", "true_false": "maybe"}', "not a boolean"),
        ('{"analysis": "hm", "true_false": 1}', "not a boolean"),
        ("Verdict: CORRECT", "no JSON object"),
    ],
)
def test_a_json_verdict_that_is_not_one_is_a_judge_error(text: str, message: str) -> None:
    with pytest.raises(JudgeError, match=message) as info:
        parse_json_verdict(text)
    assert info.value.kind == "judge"


@pytest.mark.parametrize(
    ("option", "index"),
    [("B", 1), ("b.", 1), ("(C)", 2), ("A. red", 0), ("blue", 1), ("NONE", None), ("", None)],
)
def test_parse_extraction(option: str, index: int | None) -> None:
    text = json.dumps({"analysis": "found it", "extracted_option": option})
    assert parse_extraction(text, ["red", "blue", "green"]) == index


@pytest.mark.parametrize(
    "text",
    [
        '{"analysis": "x", "extracted_option": "E"}',  # not one of the three options
        '{"analysis": "x", "extracted_option": "purple"}',
        '{"analysis": "x", "extracted_option": 2}',
        "I think B",
    ],
)
def test_an_extraction_naming_no_option_is_a_judge_error(text: str) -> None:
    with pytest.raises(JudgeError, match="option extraction"):
        parse_extraction(text, ["red", "blue", "green"])


def json_grader(request: GenerationRequest) -> str:
    """A rule-based judge speaking the structured protocol: the response (or an accepted alias)
    must equal the ground truth ignoring case."""
    prompt = request.messages[-1].content  # type: ignore[index]
    assert "true_false" in prompt and "Verdict:" not in prompt
    response = _field(prompt, "Model response").strip().lower()
    truth = _field(prompt, "Ground truth")
    accepted = re.split(r" \(also accepted: |; ", truth.rstrip(")"))
    return _json_reply(response in [a.strip().lower() for a in accepted])


def test_the_json_judge_scores_with_every_accepted_answer() -> None:
    nq = Task(
        id="nq-1",
        question="who sings does he love me with reba?",
        answer="Linda Davis",
        metadata={"aliases": ["Reba McEntire"]},
    )
    assert reference_text(nq) == "Linda Davis (also accepted: Reba McEntire)"
    judge = LLMJudge(engine_of(json_grader), verdict="json")
    assert judge.judge_many([("linda davis", nq), ("Reba McEntire", nq), ("Dolly", nq)]) == [
        1.0,
        1.0,
        0.0,
    ]
    assert judge.sampling.max_tokens == 512  # the analysis sits inside the object
    with pytest.raises(JudgeError, match="no JSON object"):
        LLMJudge(engine_of(lambda r: "Verdict: CORRECT"), verdict="json")("x", TASK)
    with pytest.raises(ValueError, match="verdict must be"):
        LLMJudge(engine_of(json_grader), verdict="xml")  # type: ignore[arg-type]


MC = Task(
    id="gpqa-1",
    question="Which colour is the sky?\nA. red\nB. blue\nC. green",
    answer="B",
    choices=("red", "blue", "green"),
    scorer="mc",
)


def two_stage_grader(request: GenerationRequest) -> str:
    """Stage one: the letter the response names (NONE if none); stage two: same letter."""
    prompt = request.messages[-1].content  # type: ignore[index]
    if "extracted_option" in prompt:
        response = _field(prompt, "Model response")
        found = re.search(r"\b([A-C])\b", response)
        option = found.group(1) if found else "NONE"
        if "sure" in response:  # a judge that names an option the question does not have
            option = "F"
        return json.dumps({"analysis": "read the response", "extracted_option": option})
    correct, chosen = _field(prompt, "Correct answer"), _field(prompt, "Chosen option")
    return _json_reply(correct[0] == chosen[0])


def test_two_stage_scoring_extracts_then_verifies_choice_tasks_only() -> None:
    calls: list[str] = []

    def recording(request: GenerationRequest) -> str:
        prompt = request.messages[-1].content  # type: ignore[index]
        calls.append("extract" if "extracted_option" in prompt else "verify")
        return (
            two_stage_grader(request)
            if "Options:" in prompt or "Chosen" in prompt
            else (json_grader(request))
        )

    judge = LLMJudge(engine_of(recording), verdict="json", two_stage=True)
    plain = Task(id="t", question="2+2?", answer="4")
    scores = judge.judge_many([("It is B.", MC), ("I pick A", MC), ("no idea", MC), ("4", plain)])
    assert scores == [1.0, 0.0, 0.0, 1.0]
    # one single-stage call (the plain task), three extractions, two verifications (no option: 0)
    assert calls == ["verify", "extract", "extract", "extract", "verify", "verify"]
    verdict = judge.verdicts([("no idea", MC)])[0]
    assert not verdict.correct and "chose no option" in verdict.analysis
    with pytest.raises(JudgeError, match="none of the options") as info:
        judge("I am sure", MC)
    assert info.value.kind == "judge"  # a failure of the judge, never the answer's 0


def test_a_failing_two_stage_judge_leaves_the_episode_unscored() -> None:
    env = AgentFlowEnv(
        tasks=[MC],
        tools=[],
        scorer=LLMJudge(engine_of(lambda r: "B, I think"), verdict="json", two_stage=True),
        max_turns=2,
    )
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(finish_action("B"))
    assert terminated and math.isnan(reward) and info["infra_error"]["kind"] == "judge"
    assert "option extraction" in info["score_error"]
    env.close()


@pytest.mark.slow
def test_a_real_instruct_model_as_json_judge_fails_loudly(smollm2_dir: object) -> None:
    """SmolLM2-135M answers the question instead of writing the JSON verdict: every such reply is
    a typed judge failure (what training excludes), never a score."""
    from agentflow_env.llm import make_engine

    engine = make_engine(f"hf:{smollm2_dir}")
    try:
        judge = LLMJudge(engine, SamplingParams(max_tokens=24), verdict="json")
        capital = Task(id="c", question="What is the capital of France?", answer="Paris")
        for prediction in ("Paris", "Berlin"):
            try:
                score = judge(prediction, capital)
            except JudgeError as exc:
                assert exc.kind == "judge" and "JSON" in str(exc)
            else:  # a model that does write the verdict is scored by it
                assert score == float(prediction == "Paris")
        assert judge.calls == 2 and judge.completion_tokens > 0
    finally:
        engine.close()
