"""Rule-based outcome scorers: exact match, token F1, math equivalence, multiple choice, Game of 24.

:func:`score` dispatches on ``Task.scorer`` and returns a float in [0, 1]. Scorers never raise
on what a policy writes (empty, megabytes, binary junk all score 0.0, in linear time); they
raise only for a malformed :class:`~agentflow_env.tasks.base.Task` (:class:`TaskScoringError`)
or for the ``judge`` scorer, which needs an LLM (:class:`JudgeRequiredError`).

- ``exact``: HotpotQA-normalized exact match (:mod:`.text`), or the same quantity
  (:mod:`.quantity`: exact value; units, eras and magnitudes must agree).
- ``f1``: HotpotQA token F1.
- ``math``: :func:`math_equal` (:mod:`.mathexpr`: exact numbers; Math-Verify for expressions
  when the optional ``[math]`` extra is installed, :mod:`.symbolic`).
- ``mc``: :func:`multiple_choice_correct` (:mod:`.choice`).
- ``game24``: :func:`check_game24` (:mod:`.game24`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agentflow_env.rewards.choice import designated_options, multiple_choice_correct
from agentflow_env.rewards.errors import JudgeRequiredError, TaskScoringError
from agentflow_env.rewards.game24 import check_game24
from agentflow_env.rewards.mathexpr import math_equal, parse_number
from agentflow_env.rewards.quantity import Quantity, parse_quantity, same_quantity
from agentflow_env.rewards.symbolic import symbolic_available
from agentflow_env.rewards.text import (
    MAX_ANSWER_CHARS,
    as_text,
    exact_match,
    extract_answer,
    f1_score,
    normalize_answer,
)
from agentflow_env.tasks.base import Task

__all__ = [
    "extract_answer",
    "normalize_answer",
    "exact_match",
    "f1_score",
    "math_equal",
    "parse_number",
    "parse_quantity",
    "same_quantity",
    "Quantity",
    "multiple_choice_correct",
    "designated_options",
    "check_game24",
    "symbolic_available",
    "score",
    "RULE_SCORERS",
    "TaskScoringError",
    "JudgeRequiredError",
]


def _task_numbers(task: Task) -> list[int]:
    numbers = task.metadata.get("numbers")
    if numbers is None:
        match = re.search(r"\[\s*(\d+(?:\s*,\s*\d+)+)\s*\]", task.question)
        if match is None:
            raise TaskScoringError(
                f"Game of 24 task {task.id!r} has no metadata['numbers'] and no "
                "'[a, b, c, d]' list in its question"
            )
        numbers = [int(n) for n in match.group(1).split(",")]
    try:
        return [int(n) for n in numbers]
    except (TypeError, ValueError) as exc:
        raise TaskScoringError(f"task {task.id!r}: metadata['numbers'] must be integers") from exc


def _gold_answers(task: Task) -> list[str]:
    aliases = task.metadata.get("aliases") or []
    return [task.answer, *[as_text(a) for a in aliases if as_text(a) != task.answer]]


def _score_exact(pred: str, task: Task) -> float:
    golds = _gold_answers(task)
    return float(bool(exact_match(pred, golds)) or any(same_quantity(pred, g) for g in golds))


def _score_f1(pred: str, task: Task) -> float:
    return f1_score(pred, _gold_answers(task))


def _score_math(pred: str, task: Task) -> float:
    return float(any(math_equal(pred, g) for g in _gold_answers(task)))


def _score_mc(pred: str, task: Task) -> float:
    return float(multiple_choice_correct(pred, task.answer, task.choices))


def _score_game24(pred: str, task: Task) -> float:
    return float(check_game24(pred, _task_numbers(task)))


def _score_judge(pred: str, task: Task) -> float:
    raise JudgeRequiredError(
        f"task {task.id!r} uses the 'judge' scorer, which needs an LLM judge; "
        "the rule scorers cannot score it (pass an LLM-judge scorer)"
    )


RULE_SCORERS: dict[str, Callable[[str, Task], float]] = {
    "exact": _score_exact,
    "f1": _score_f1,
    "math": _score_math,
    "mc": _score_mc,
    "game24": _score_game24,
    "judge": _score_judge,
}
"""scorer name -> function(extracted prediction, task) -> float in [0, 1]"""


def score(prediction: object, task: Task) -> float:
    """Score a model's final output against ``task`` with the rule named by ``task.scorer``.

    The answer is first taken out of ``<answer>`` tags (:func:`extract_answer`). Returns a
    float in [0, 1]; junk predictions score 0.0.

    Raises:
        TypeError: ``task`` is not a :class:`Task`.
        TaskScoringError: the task is malformed (unknown scorer, missing Game of 24 numbers,
            a multiple-choice answer that is not an option).
        JudgeRequiredError: ``task.scorer == "judge"``.
    """
    if not isinstance(task, Task):
        raise TypeError(f"score() needs a Task, got {type(task).__name__}")
    scorer = RULE_SCORERS.get(task.scorer)
    if scorer is None:
        raise TaskScoringError(
            f"task {task.id!r} has unknown scorer {task.scorer!r}; valid: {sorted(RULE_SCORERS)}"
        )
    pred = extract_answer(prediction)[:MAX_ANSWER_CHARS]
    return min(1.0, max(0.0, float(scorer(pred, task))))
