"""An LLM judge as a scorer: is the response equivalent to the ground truth?

The paper scored free-form answers with an LLM judge. :class:`LLMJudge` is a scorer
(``judge(prediction, task) -> float``, 1.0 or 0.0) usable wherever a rule scorer is::

    from agentflow_env.judge import LLMJudge
    env = gym.make(
        "AgentFlow-Search-v0", tasks="bamboogle.json", scorer=LLMJudge("openai:gpt-4o-mini@...")
    )

A judge failure (engine error, unparseable verdict) raises :class:`JudgeError`; the environment
ends the episode without an outcome (``info["infra_error"]`` of the error's
:attr:`JudgeError.kind`, ``info["score"] = nan``, reward NaN), never a silent 0. With
``fallback=`` a rule scorer answers instead, and the fallback is still
reported: logged at WARNING and recorded in :attr:`LLMJudge.fallbacks` (``evaluate`` counts them).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentflow_env.llm.base import Engine, GenerationRequest, GenerationResult, SamplingParams
from agentflow_env.tasks.base import Task

__all__ = ["JudgeError", "JudgeVerdict", "LLMJudge", "judge_prompt", "parse_verdict"]

logger = logging.getLogger(__name__)

_VERDICT = re.compile(r"verdict\W*\s*(correct|incorrect|true|false|yes|no)\b", re.IGNORECASE)
_POSITIVE = {"correct", "true", "yes"}


class JudgeError(RuntimeError):
    """The judge could not score a prediction (engine failure or unparseable verdict).

    ``kind`` is an :data:`agentflow_env.infra.InfraKind`: the engine's failure kind when its
    engine failed, else ``"judge"`` (the judge answered, but not with a verdict).
    """

    def __init__(self, message: str, kind: str = "judge") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class JudgeVerdict:
    """One judgement: ``correct`` and the judge's analysis text."""

    correct: bool
    analysis: str

    @property
    def score(self) -> float:
        return 1.0 if self.correct else 0.0


def judge_prompt(
    question: str, ground_truth: str, prediction: str, choices: Sequence[str] | None = None
) -> str:
    """The judge's instruction: compare meaning, not wording, and end with a verdict line."""
    options = ""
    if choices:
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        options = (
            "Options:\n" + "\n".join(f"{letters[i]}. {c}" for i, c in enumerate(choices)) + "\n"
        )
    return (
        "You grade an answer against the reference answer of a question. Judge whether the "
        "response means the same as the reference: ignore wording, formatting, units written out "
        "or abbreviated, and equivalent numeric forms (0.5 = 1/2 = 50%); a response that gives "
        "several conflicting answers, hedges, or only partly matches is incorrect. For a "
        "multiple-choice question, the option letter and the option text are equivalent.\n\n"
        f"Question: {question}\n"
        f"{options}"
        f"Reference answer: {ground_truth}\n"
        f"Response: {prediction}\n\n"
        "Write one or two sentences of analysis, then a last line exactly 'Verdict: CORRECT' "
        "or 'Verdict: INCORRECT'."
    )


def parse_verdict(text: str) -> JudgeVerdict:
    """The last ``Verdict: ...`` line; raises :class:`JudgeError` when there is none."""
    matches = _VERDICT.findall(text)
    if not matches:
        snippet = " ".join(text.split())[:200]
        raise JudgeError(
            f"unparseable judge verdict (no 'Verdict: CORRECT/INCORRECT'): {snippet!r}"
        )
    return JudgeVerdict(correct=matches[-1].lower() in _POSITIVE, analysis=text.strip())


class LLMJudge:
    """A scorer backed by any engine (or an engine spec string such as ``openai:MODEL@URL``).

    Args:
        engine: an :class:`~agentflow_env.llm.base.Engine` or an engine spec.
        sampling: the judge's sampling settings (default greedy, 256 tokens); ``n`` must be 1.
        fallback: optional rule scorer used when the judge fails; every use is logged and
            recorded in :attr:`fallbacks` (never silent). Without it a failure raises.
        max_prediction_chars: longer predictions are cut before judging (the prompt stays bounded).

    An empty prediction scores 0.0 without calling the engine (it cannot match a reference).
    Token usage reported by the engine accumulates in :attr:`prompt_tokens` and
    :attr:`completion_tokens`.
    """

    def __init__(
        self,
        engine: Engine | str | Callable[..., Any],
        sampling: SamplingParams | None = None,
        *,
        fallback: Callable[[str, Task], float] | None = None,
        max_prediction_chars: int = 4_000,
    ) -> None:
        if isinstance(engine, str) or not callable(getattr(engine, "generate", None)):
            from agentflow_env.llm import make_engine  # lazy: engines pull optional dependencies

            engine = make_engine(engine)
        self.engine: Engine = engine  # type: ignore[assignment]
        self.sampling = sampling or SamplingParams(temperature=0.0, max_tokens=256)
        if self.sampling.n != 1:
            raise ValueError(
                f"the judge needs one completion per request, got sampling.n={self.sampling.n}"
            )
        if max_prediction_chars < 1:
            raise ValueError(f"max_prediction_chars must be >= 1, got {max_prediction_chars}")
        self.fallback = fallback
        self.max_prediction_chars = max_prediction_chars
        self.fallbacks: list[tuple[str, str]] = []
        """(task id, judge error) for every prediction the fallback scored"""
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()

    def __call__(self, prediction: str, task: Task) -> float:
        """1.0 if the judge finds ``prediction`` equivalent to ``task.answer``, else 0.0."""
        return self.judge_many([(prediction, task)])[0]

    def judge_many(self, pairs: Sequence[tuple[str, Task]]) -> list[float]:
        """Score many (prediction, task) pairs with one batched engine call."""
        scores: list[float | None] = [None] * len(pairs)
        pending: list[int] = []
        for i, (prediction, _) in enumerate(pairs):
            if not isinstance(prediction, str):
                raise JudgeError(f"prediction must be a string, got {type(prediction).__name__}")
            if not prediction.strip():
                scores[i] = 0.0
            else:
                pending.append(i)
        if pending:
            verdicts = self._verdicts([pairs[i] for i in pending])
            for i, verdict in zip(pending, verdicts, strict=True):
                scores[i] = self._resolve(verdict, *pairs[i])
        return [float(s) for s in scores]  # type: ignore[arg-type]

    def verdicts(self, pairs: Sequence[tuple[str, Task]]) -> list[JudgeVerdict]:
        """The judge's verdicts (with analyses); raises :class:`JudgeError` on the first failure."""
        out = []
        for verdict in self._verdicts(pairs):
            if isinstance(verdict, JudgeError):
                raise verdict
            out.append(verdict)
        return out

    # -------------------------------------------------------------------------------- internals
    def _request(self, prediction: str, task: Task) -> GenerationRequest:
        if len(prediction) > self.max_prediction_chars:
            prediction = prediction[: self.max_prediction_chars] + " ...[truncated]"
        prompt = judge_prompt(task.question, task.answer, prediction, task.choices)
        return GenerationRequest.chat(prompt, **self.sampling.model_dump())

    def _verdicts(self, pairs: Sequence[tuple[str, Task]]) -> list[JudgeVerdict | JudgeError]:
        requests = [self._request(p, t) for p, t in pairs]
        try:
            results = list(self.engine.generate(requests))
        except Exception as exc:  # every engine failure is a judge failure, typed
            error = JudgeError(f"judge engine raised {type(exc).__name__}: {exc}", "engine")
            return [error] * len(pairs)
        if len(results) != len(pairs):
            error = JudgeError(
                f"judge engine returned {len(results)} results for {len(pairs)} requests",
                "engine_bad_response",
            )
            return [error] * len(pairs)
        self._count(results)
        out: list[JudgeVerdict | JudgeError] = []
        for result in results:
            if result.error:
                kind = result.error_kind or "engine"
                out.append(JudgeError(f"judge engine failed: {result.error}", kind))
                continue
            try:
                out.append(parse_verdict(result.text))
            except JudgeError as exc:
                out.append(exc)
        return out

    def _count(self, results: Sequence[GenerationResult]) -> None:
        with self._lock:
            self.calls += len(results)
            self.prompt_tokens += sum(r.prompt_tokens or 0 for r in results)
            self.completion_tokens += sum(r.completion_tokens or 0 for r in results)

    def _resolve(self, verdict: JudgeVerdict | JudgeError, prediction: str, task: Task) -> float:
        if isinstance(verdict, JudgeVerdict):
            return verdict.score
        if self.fallback is None:
            raise verdict
        logger.warning(
            "judge failed on task %s (%s); scoring with the fallback rule scorer", task.id, verdict
        )
        with self._lock:
            self.fallbacks.append((task.id, str(verdict)))
        return float(self.fallback(prediction, task))
