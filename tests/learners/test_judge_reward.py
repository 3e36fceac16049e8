"""algo.reward='judge': outcomes scored by an LLM judge's structured verdict; failures excluded."""

from __future__ import annotations

import re
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agentflow_env.judge import JudgeError, LLMJudge
from agentflow_env.llm.base import GenerationRequest
from agentflow_env.tasks.base import Task
from agentflow_env.trajectory import read_jsonl
from learners.flow_grpo.config import ConfigError, make_config
from learners.flow_grpo.runenv import make_judge, resolve_run_env

_RESPONSE = re.compile(r"Model response: (.*)\nGround truth: (.*)\n", re.DOTALL)
FAIR = "python:tests.learners.test_judge_reward:fair_judge"
FLAKY = "python:tests.learners.test_judge_reward:flaky_judge"


def _contains(prompt: str) -> bool:
    response, truth = _RESPONSE.search(prompt).groups()  # type: ignore[union-attr]
    return truth.strip().lower() in response.lower()


def _prompt(request: GenerationRequest) -> str:
    assert request.messages is not None
    return request.messages[-1].content


def fair_judge(request: GenerationRequest) -> str:
    """A judge engine: true when the response contains the ground truth (any case)."""
    verdict = "true" if _contains(_prompt(request)) else "false"
    return f'{{"analysis": "compared", "true_false": {verdict}}}'


def flaky_judge(request: GenerationRequest) -> str:
    """fair_judge, but one prompt in three (by its hash) gets prose instead of the JSON verdict."""
    prompt = _prompt(request)
    if zlib.crc32(prompt.encode()) % 3 == 0:
        return "I think the answer looks right."
    return fair_judge(request)


def test_the_judge_scores_with_the_structured_verdict() -> None:
    cfg = make_config("tiny", overrides={"algo.reward": "judge", "algo.judge_engine": FAIR})
    judge = make_judge(cfg)
    assert isinstance(judge, LLMJudge) and judge.verdict == "json" and not judge.two_stage
    assert judge.sampling.temperature == 0.0 and judge.sampling.max_tokens == 512
    task = Task(id="t", question="Capital of France?", answer="Paris")
    assert judge("It is paris.", task) == 1.0 and judge("Lyon", task) == 0.0
    run = resolve_run_env(cfg)
    assert run.env.scorer is run.judge and isinstance(run.judge, LLMJudge)
    flaky = LLMJudge(FLAKY, verdict="json")
    outcomes = []
    for guess in ("Paris", "Lyon", "paris!", "Nice", "Paris.", "Metz"):
        try:
            outcomes.append(flaky(guess, task))
        except JudgeError as exc:  # prose in place of the verdict: a typed failure, not a 0
            assert exc.kind == "judge"
            outcomes.append(None)
    assert None in outcomes and {0.0, 1.0} <= set(outcomes)


def test_the_presets_rewards() -> None:
    paper, tiny = make_config("paper"), make_config("tiny")
    assert (paper.algo.reward, paper.algo.judge_engine) == ("judge", "openai:gpt-4o")
    assert tiny.algo.reward == "rules" and make_judge(tiny) is None
    assert resolve_run_env(tiny).env.scorer is None  # the rule scorers
    with pytest.raises(ConfigError, match="needs an engine"):
        make_config("tiny", overrides={"algo.reward": "judge"})
    with pytest.raises(ConfigError, match="algo.judge_engine"):
        make_config("tiny", overrides={"algo.reward": "judge", "algo.judge_engine": "gpt4"})
    with pytest.raises(ConfigError, match="is not one of"):
        make_config("tiny", overrides={"algo.reward": "llm"})
    # without a judge engine of its own the judge uses env.engine
    cfg = make_config("tiny", overrides={"algo.reward": "judge", "env.engine": FAIR})
    assert make_judge(cfg)("paris", Task(id="t", question="q", answer="Paris")) == 1.0


def _run(out: Path, judge: str, **extra: Any) -> list[Any]:
    """One step of the tiny preset (its shipped warm start answers, so the judge is asked)."""
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    overrides = {
        "output_dir": str(out),
        "rollout.queries_per_step": 3,
        "rollout.group_size": 3,
        "rollout.infra_retries": 1,
        "env.num_tasks": 200,
        "env.eval_tasks": 4,
        "algo.reward": "judge",
        "algo.judge_engine": judge,
        "algo.skip_zero_variance_groups": False,
        "train.total_steps": 1,
        "train.eval_every": 0,
        "train.eval_samples": 1,
        "train.num_threads": 1,
        "train.progress": False,
        **extra,
    }
    trainer = FlowGRPOTrainer(make_config("tiny", overrides=overrides))
    try:
        trainer.train()
    finally:
        trainer.close()
    return list(read_jsonl(out / "trajectories.jsonl"))


@pytest.mark.slow
def test_training_with_a_flaky_judge_excludes_its_failures(tmp_path: Path) -> None:
    records = _run(tmp_path / "run", FLAKY)
    lost = [r for r in records if r.infra_error is not None]
    scored = [r for r in records if r.infra_error is None and r.answer]
    assert lost and scored, "the judge was asked and both failed and answered"
    for r in lost:  # the judge's failures: no score, no reward, never a 0
        assert r.infra_error.kind == "judge" and r.score is None
        assert r.turns[-1].reward is None
    for r in scored:  # the judge's verdict is the reward (containment, unlike the exact rule)
        expected = float(bool(r.answer) and r.ground_truth.lower() in r.answer.lower())
        assert r.score == expected
    kinds = Counter(r.infra_error.kind for r in lost)  # type: ignore[union-attr]
    assert set(kinds) <= {"judge"}


@pytest.mark.slow
def test_a_real_local_model_as_the_training_judge(smollm2_dir: Path, tmp_path: Path) -> None:
    """SmolLM2-135M-Instruct through an hf: spec: whatever it writes is either its verdict or a
    judge failure that training excludes; no episode is silently scored 0 for a bad verdict."""
    records = _run(
        tmp_path / "run",
        f"hf:{smollm2_dir}",
        **{"algo.judge_max_tokens": 24, "rollout.queries_per_step": 2, "rollout.group_size": 2},
    )
    assert any(r.answer for r in records), "the judge was never asked"
    for r in records:
        if r.infra_error is not None:
            assert r.infra_error.kind == "judge" and r.score is None
            assert "judge" in (r.score_error or "") or "verdict" in (r.score_error or "")
        else:
            assert r.score in (0.0, 1.0)
