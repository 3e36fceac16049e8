"""An LLM judge as a scorer: is the response equivalent to the ground truth?

The paper scored free-form answers with an LLM judge. :class:`LLMJudge` is a scorer
(``judge(prediction, task) -> float``, 1.0 or 0.0) usable wherever a rule scorer is::

    from agentflow_env.judge import LLMJudge
    env = gym.make(
        "AgentFlow-Search-v0", tasks="bamboogle.json", scorer=LLMJudge("openai:gpt-4o-mini@...")
    )

Two verdict formats: ``verdict="line"`` (default) asks for analysis then a last line
``Verdict: CORRECT`` / ``Verdict: INCORRECT`` (:func:`parse_verdict`); ``verdict="json"`` asks for
the reference's structured verdict, a JSON object ``{"analysis": str, "true_false": bool}``, read
strictly by :func:`parse_json_verdict` (the reference's training reward and evaluation scoring used
an API's structured output with those fields). With ``two_stage=True`` a task with choices is
scored as the reference scored GPQA and MedQA: the judge first extracts which option the response
chose (:func:`extraction_prompt`, JSON ``{"analysis", "extracted_option"}``: a letter, or
``NONE`` when the response chose none, which scores 0), then verifies that option against the
correct one (:func:`verification_prompt`, a JSON verdict). A task's ``metadata["aliases"]`` (other
accepted answers, e.g. NQ's golden answers) are shown with its reference answer.

A judge failure (engine error, unparseable verdict, an extracted option that is none of the
choices) raises :class:`JudgeError`; the environment ends the episode without an outcome
(``info["infra_error"]`` of the error's :attr:`JudgeError.kind`, ``info["score"] = nan``, reward
NaN), never a silent 0 (the reference turned a failed extraction into the response's first 50
characters fuzzily matched to an option, the first option as last resort, and a failed
verification into string equality). With ``fallback=`` a rule scorer answers instead, and the
fallback is still reported: logged at WARNING and recorded in :attr:`LLMJudge.fallbacks`
(``evaluate`` counts them).

Structured requests: engines do not yet take a constraint on the request (it is being added as
``GenerationRequest.constraint``); until then the JSON forms are asked for in the prompt and
parsed strictly, failing loudly. When constraints land, :meth:`LLMJudge._request` should attach
a JSON-schema constraint of :data:`VERDICT_SCHEMA` / :data:`EXTRACTION_SCHEMA`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agentflow_env.llm.base import Engine, GenerationRequest, GenerationResult, SamplingParams
from agentflow_env.tasks.base import Task

__all__ = [
    "EXTRACTION_SCHEMA",
    "VERDICT_SCHEMA",
    "JudgeError",
    "JudgeVerdict",
    "LLMJudge",
    "VerdictFormat",
    "extraction_prompt",
    "judge_prompt",
    "json_judge_prompt",
    "parse_extraction",
    "parse_json_verdict",
    "parse_verdict",
    "reference_text",
    "verification_prompt",
]

logger = logging.getLogger(__name__)

_VERDICT = re.compile(r"verdict\W*\s*(correct|incorrect|true|false|yes|no)\b", re.IGNORECASE)
_POSITIVE = {"correct", "true", "yes"}
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
NO_OPTION = "NONE"
"""what the extraction stage answers when the response chose no option"""

VerdictFormat = Literal["line", "json"]
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"analysis": {"type": "string"}, "true_false": {"type": "boolean"}},
    "required": ["analysis", "true_false"],
}
"""the JSON verdict (the reference's ``AnswerVerification``: analysis, true_false)"""
EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"analysis": {"type": "string"}, "extracted_option": {"type": "string"}},
    "required": ["analysis", "extracted_option"],
}
"""the extraction stage's answer (the reference's ``AnswerExtraction``)"""


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


def reference_text(task: Task) -> str:
    """The task's answer, with its other accepted answers (``metadata["aliases"]``) if any."""
    aliases = [str(a) for a in task.metadata.get("aliases") or () if str(a).strip()]
    if not aliases:
        return task.answer
    return f"{task.answer} (also accepted: {'; '.join(aliases)})"


def _options(choices: Sequence[str]) -> str:
    return "\n".join(f"{_LETTERS[i]}. {c}" for i, c in enumerate(choices))


def json_judge_prompt(
    question: str, ground_truth: str, prediction: str, choices: Sequence[str] | None = None
) -> str:
    """The structured-verdict instruction: decide equivalence, answer with one JSON object."""
    options = f"Options:\n{_options(choices)}\n" if choices else ""
    return (
        "You check a model's answer against the ground truth of a question. Find the model's "
        "final answer (ignore its reasoning), normalize both, and decide whether they are "
        "equivalent: mathematically equal for math (1/2 = 0.5), the same after ignoring case, "
        "formatting, thousands separators, currency and units for numbers and text, and for a "
        "multiple-choice question the option's letter, number or content naming the right "
        "option. Only an equivalent answer counts as true.\n\n"
        f"Question: {question}\n"
        f"{options}"
        f"Model response: {prediction}\n"
        f"Ground truth: {ground_truth}\n\n"
        'Reply with one JSON object and nothing else: {"analysis": "<one or two sentences>", '
        '"true_false": true} or with "true_false": false.'
    )


def extraction_prompt(question: str, prediction: str, choices: Sequence[str]) -> str:
    """Stage one of two-stage scoring: which option did the response settle on?"""
    return (
        "Read a model's response to a multiple-choice question and find the option it finally "
        "chose. A letter names that option; a number k names the k-th option (1 is A); written-"
        "out content names the option that contains it. Ignore reasoning, hedges and options "
        "it only considered.\n\n"
        f"Question: {question}\n\n"
        f"Options:\n{_options(choices)}\n\n"
        f"Model response: {prediction}\n\n"
        'Reply with one JSON object and nothing else: {"analysis": "<how you found it>", '
        f'"extracted_option": "<the letter of the chosen option, or {NO_OPTION} if it chose '
        'none>"}'
    )


def verification_prompt(correct: str, extracted: str) -> str:
    """Stage two of two-stage scoring: does the extracted option match the correct one?"""
    return (
        "Decide whether a model's chosen option matches the correct answer of a multiple-choice "
        "question. They match when the letter or the option's content is the same; small "
        "formatting differences (0.90 and 0.9) do not matter, a different meaning does.\n\n"
        f"Correct answer: {correct}\n"
        f"Chosen option: {extracted}\n\n"
        'Reply with one JSON object and nothing else: {"analysis": "<one sentence>", '
        '"true_false": true} or with "true_false": false.'
    )


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object in ``text`` (bare, fenced or inside prose), in order."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    position = text.find("{")
    while position != -1:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            position = text.find("{", position + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        position = text.find("{", end)
    return found


def _snippet(text: str) -> str:
    return repr(" ".join(text.split())[:200])


def parse_json_verdict(text: str) -> JudgeVerdict:
    """The last JSON object with a ``true_false`` key; it must be a JSON boolean (or the text
    ``"true"``/``"false"``, any case, as the reference's prompt spelled it). Anything else
    raises :class:`JudgeError`."""
    objects = [o for o in _json_objects(text) if "true_false" in o]
    if not objects:
        raise JudgeError(
            f"unparseable judge verdict (no JSON object with 'true_false'): {_snippet(text)}"
        )
    value = objects[-1]["true_false"]
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise JudgeError(f"unparseable judge verdict: 'true_false' is {value!r}, not a boolean")
    analysis = objects[-1].get("analysis")
    return JudgeVerdict(correct=value, analysis=analysis if isinstance(analysis, str) else text)


def parse_extraction(text: str, choices: Sequence[str]) -> int | None:
    """Stage one's answer: the chosen option's index, or None when the response chose none.

    ``extracted_option`` may be the letter (``"B"``, ``"B."``, ``"(B)"``), the letter and text
    (``"B. 0.9"``) or an option's exact text; anything else raises :class:`JudgeError`.
    """
    objects = [o for o in _json_objects(text) if "extracted_option" in o]
    if not objects:
        raise JudgeError(
            f"unparseable option extraction (no JSON object with 'extracted_option'): "
            f"{_snippet(text)}"
        )
    raw = objects[-1]["extracted_option"]
    value = str(raw).strip() if isinstance(raw, (str, int)) and not isinstance(raw, bool) else ""
    if isinstance(raw, str) and value.upper() in (NO_OPTION, "NO OPTION", "NULL", ""):
        return None
    letters = _LETTERS[: len(choices)]
    match = re.fullmatch(r"\(?([A-Za-z])\)?(?:[.):]\s*(.*))?", value, re.DOTALL)
    if match and match.group(1).upper() in letters:
        return letters.index(match.group(1).upper())
    texts = [" ".join(c.split()).lower() for c in choices]
    if " ".join(value.split()).lower() in texts:
        return texts.index(" ".join(value.split()).lower())
    raise JudgeError(
        f"unparseable option extraction: {raw!r} is none of the options "
        f"{', '.join(letters)} (nor {NO_OPTION})"
    )


@dataclass(frozen=True)
class _Extraction:
    """Stage one's result: the chosen option's index (None: no option) and the analysis."""

    index: int | None
    analysis: str


def _extractor(choices: Sequence[str]) -> Callable[[str], _Extraction]:
    def parse(text: str) -> _Extraction:
        index = parse_extraction(text, choices)
        found = [o for o in _json_objects(text) if "extracted_option" in o]
        analysis = found[-1].get("analysis") if found else None
        return _Extraction(index, analysis if isinstance(analysis, str) else text.strip())

    return parse


def _correct_option(task: Task) -> str:
    """``"B. text"`` for a letter answer among the task's choices, else the reference text."""
    choices = task.choices or ()
    if len(task.answer) == 1 and task.answer in _LETTERS[: len(choices)]:
        return f"{task.answer}. {choices[_LETTERS.index(task.answer)]}"
    return reference_text(task)


class LLMJudge:
    """A scorer backed by any engine (or an engine spec string such as ``openai:MODEL@URL``).

    Args:
        engine: an :class:`~agentflow_env.llm.base.Engine` or an engine spec.
        sampling: the judge's sampling settings (default greedy, 256 tokens; 512 with the JSON
            format, whose analysis sits inside the object); ``n`` must be 1.
        fallback: optional rule scorer used when the judge fails; every use is logged and
            recorded in :attr:`fallbacks` (never silent). Without it a failure raises.
        max_prediction_chars: longer predictions are cut before judging (the prompt stays bounded).
        verdict: ``"line"`` (a ``Verdict: CORRECT`` line) or ``"json"`` (the reference's
            structured verdict); see the module docstring.
        two_stage: score tasks with choices by extraction then verification (the reference's
            GPQA/MedQA scoring; JSON answers whatever ``verdict`` says).

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
        verdict: VerdictFormat = "line",
        two_stage: bool = False,
    ) -> None:
        if verdict not in ("line", "json"):
            raise ValueError(f"verdict must be 'line' or 'json', got {verdict!r}")
        if isinstance(engine, str) or not callable(getattr(engine, "generate", None)):
            from agentflow_env.llm import make_engine  # lazy: engines pull optional dependencies

            engine = make_engine(engine)
        self.engine: Engine = engine  # type: ignore[assignment]
        tokens = 512 if verdict == "json" or two_stage else 256
        self.sampling = sampling or SamplingParams(temperature=0.0, max_tokens=tokens)
        if self.sampling.n != 1:
            raise ValueError(
                f"the judge needs one completion per request, got sampling.n={self.sampling.n}"
            )
        if max_prediction_chars < 1:
            raise ValueError(f"max_prediction_chars must be >= 1, got {max_prediction_chars}")
        self.verdict: VerdictFormat = verdict
        self.two_stage = two_stage
        self.fallback = fallback
        self.max_prediction_chars = max_prediction_chars
        self.fallbacks: list[tuple[str, str]] = []
        """(task id, judge error) for every prediction the fallback scored"""
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        stages = ", two_stage=True" if self.two_stage else ""
        return f"LLMJudge({self.engine!r}, verdict={self.verdict!r}{stages})"

    def __call__(self, prediction: str, task: Task) -> float:
        """1.0 if the judge finds ``prediction`` equivalent to ``task.answer``, else 0.0."""
        return self.judge_many([(prediction, task)])[0]

    def judge_many(self, pairs: Sequence[tuple[str, Task]]) -> list[float]:
        """Score many (prediction, task) pairs with one batched engine call (per stage)."""
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
    def _cut(self, prediction: str) -> str:
        if len(prediction) > self.max_prediction_chars:
            return prediction[: self.max_prediction_chars] + " ...[truncated]"
        return prediction

    def _request(self, prompt: str) -> GenerationRequest:
        return GenerationRequest.chat(prompt, **self.sampling.model_dump())

    def _one_stage_prompt(self, prediction: str, task: Task) -> str:
        make = json_judge_prompt if self.verdict == "json" else judge_prompt
        return make(task.question, reference_text(task), self._cut(prediction), task.choices)

    def _verdicts(self, pairs: Sequence[tuple[str, Task]]) -> list[JudgeVerdict | JudgeError]:
        out: list[JudgeVerdict | JudgeError] = [JudgeError("not judged")] * len(pairs)
        staged = [i for i, (_, t) in enumerate(pairs) if self.two_stage and t.choices]
        single = [i for i in range(len(pairs)) if i not in set(staged)]
        if single:
            parse = parse_json_verdict if self.verdict == "json" else parse_verdict
            prompts = [self._one_stage_prompt(*pairs[i]) for i in single]
            for i, item in zip(single, self._ask(prompts, parse), strict=True):
                out[i] = item
        if staged:
            for i, item in zip(staged, self._two_stage([pairs[i] for i in staged]), strict=True):
                out[i] = item
        return out

    def _two_stage(self, pairs: Sequence[tuple[str, Task]]) -> list[JudgeVerdict | JudgeError]:
        """Extract each response's option, then verify the extracted ones (a response that
        chose no option is wrong without a second call)."""
        prompts = [extraction_prompt(t.question, self._cut(p), t.choices or ()) for p, t in pairs]
        parsers = [_extractor(t.choices or ()) for _, t in pairs]
        extracted = self._ask(prompts, parsers)
        out: list[JudgeVerdict | JudgeError] = []
        verify: list[tuple[int, str]] = []
        for k, ((_, task), item) in enumerate(zip(pairs, extracted, strict=True)):
            if isinstance(item, JudgeError):
                out.append(item)
            elif item.index is None:  # a wrong answer, not a judge failure
                out.append(JudgeVerdict(False, f"the response chose no option: {item.analysis}"))
            else:
                choices = task.choices or ()
                chosen = f"{_LETTERS[item.index]}. {choices[item.index]}"
                out.append(JudgeError("not verified"))  # replaced below
                verify.append((k, verification_prompt(_correct_option(task), chosen)))
        if verify:
            verdicts = self._ask([prompt for _, prompt in verify], parse_json_verdict)
            for (k, _), verdict in zip(verify, verdicts, strict=True):
                out[k] = verdict
        return out

    def _ask(
        self, prompts: Sequence[str], parse: Callable[[str], Any] | Sequence[Callable[[str], Any]]
    ) -> list[Any]:
        """One batched engine call; each reply parsed (by ``parse``, or its own parser when a
        list is given), or the :class:`JudgeError` it met."""
        parsers = list(parse) if isinstance(parse, Sequence) else [parse] * len(prompts)
        requests = [self._request(p) for p in prompts]
        try:
            results = list(self.engine.generate(requests))
        except Exception as exc:  # every engine failure is a judge failure, typed
            error = JudgeError(f"judge engine raised {type(exc).__name__}: {exc}", "engine")
            return [error] * len(prompts)
        if len(results) != len(prompts):
            error = JudgeError(
                f"judge engine returned {len(results)} results for {len(prompts)} requests",
                "engine_bad_response",
            )
            return [error] * len(prompts)
        self._count(results)
        out: list[Any] = []
        for result, parser in zip(results, parsers, strict=True):
            if result.error:
                kind = result.error_kind or "engine"
                out.append(JudgeError(f"judge engine failed: {result.error}", kind))
                continue
            try:
                out.append(parser(result.text))
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
