"""Rule-based outcome scorers: exact match, token F1, math equivalence, multiple choice, Game of 24.

:func:`score` dispatches on ``Task.scorer`` and returns a float in [0, 1]. Scorers never raise
on what a policy writes (empty, megabytes, binary junk all score 0.0); they raise only for a
malformed :class:`~agentflow_env.tasks.base.Task` (:class:`TaskScoringError`) or for the
``judge`` scorer, which needs an LLM (:class:`JudgeRequiredError`).

Normalization follows HotpotQA / SQuAD: lowercase, drop punctuation and the articles a/an/the,
collapse whitespace.
"""

from __future__ import annotations

import ast
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from fractions import Fraction

from agentflow_env.format.labels import ANSWER_CLOSE, ANSWER_OPEN
from agentflow_env.tasks.base import Task

__all__ = [
    "extract_answer",
    "normalize_answer",
    "exact_match",
    "f1_score",
    "math_equal",
    "parse_number",
    "multiple_choice_correct",
    "check_game24",
    "score",
    "RULE_SCORERS",
    "TaskScoringError",
    "JudgeRequiredError",
]

_MAX_ANSWER_CHARS = 10_000
"""Longer extracted answers are cut before scoring (no gold answer is anywhere near this)."""
# Lowercase only the tag's letters, so lengths (and offsets) stay.
_TAG_CASE = str.maketrans(ANSWER_OPEN.upper(), ANSWER_OPEN)
_ANSWER_LINE = re.compile(
    r"^[ \t*#>\-]*(?:final[ \t]+)?answer[ \t*]*[:：][ \t]*(.+?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_ANSWER_IS = re.compile(r"\bthe (?:final |correct )?answer is[:\s]+(.+?)\s*$", re.IGNORECASE)
_LETTERS = string.ascii_uppercase


class TaskScoringError(ValueError):
    """The task itself cannot be scored (e.g. a Game of 24 task without its numbers)."""


class JudgeRequiredError(NotImplementedError):
    """The task's scorer is ``judge``: it needs an LLM judge, not a rule scorer."""


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def extract_answer(text: object) -> str:
    """The final answer in a model's output.

    In order: the content of the last ``<answer>...</answer>``; the text after an unclosed
    ``<answer>``; the last ``Answer: X`` / ``Final answer: X`` line; ``... the answer is X`` at
    the end; else the whole text stripped. Never raises (non-strings are converted).
    """
    text = _as_text(text)
    # rfind, not a regex: a lazy <answer>(.*?)</answer> scan is quadratic on junk full of
    # unclosed tags. Tags are ASCII, so offsets in the lowercased copy match the original.
    lowered = text.lower() if text.isascii() else text.translate(_TAG_CASE)
    end = lowered.rfind(ANSWER_CLOSE)
    start = lowered.rfind(ANSWER_OPEN, 0, end) if end >= 0 else -1
    if start >= 0:
        return text[start + len(ANSWER_OPEN) : end].strip()
    start = lowered.rfind(ANSWER_OPEN)
    if start >= 0:  # unclosed: the model stopped before the closing tag
        return text[start + len(ANSWER_OPEN) :].strip()
    lines = _ANSWER_LINE.findall(text)
    if lines:
        return lines[-1].strip().strip("*").strip()
    stripped = text.strip()
    last_line = stripped.rsplit("\n", 1)[-1][:1000]
    match = _ANSWER_IS.search(last_line)
    if match:
        return match.group(1).strip().rstrip(".").strip("*").strip()
    return stripped


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize_answer(text: object) -> str:
    """HotpotQA-style normalization: NFKC, lowercase, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFKC", _as_text(text)).lower()
    text = "".join(ch for ch in text if not _is_punct(ch))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _golds(ground_truth: str | Sequence[str]) -> list[str]:
    if isinstance(ground_truth, str):
        return [ground_truth]
    return [_as_text(g) for g in ground_truth]


def exact_match(prediction: object, ground_truth: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(bool(pred) and any(pred == normalize_answer(g) for g in _golds(ground_truth)))


def f1_score(prediction: object, ground_truth: str | Sequence[str]) -> float:
    """Token-level F1 between normalized prediction and the best-matching gold answer.

    As in HotpotQA, ``yes``/``no``/``noanswer`` only match themselves exactly.
    """
    pred = normalize_answer(prediction)
    best = 0.0
    for gold_text in _golds(ground_truth):
        gold = normalize_answer(gold_text)
        special = {"yes", "no", "noanswer"}
        if (pred in special or gold in special) and pred != gold:
            continue
        pred_tokens, gold_tokens = pred.split(), gold.split()
        common = Counter(pred_tokens) & Counter(gold_tokens)
        same = sum(common.values())
        if same == 0:
            continue
        precision, recall = same / len(pred_tokens), same / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


# ------------------------------------------------------------------ numbers and math


def _last_braced(text: str, command: str) -> str | None:
    """Content of the last ``\\command{...}`` with balanced braces (e.g. ``\\boxed``)."""
    start = text.rfind(command + "{")
    if start < 0:
        return None
    depth, i = 0, start + len(command)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


_LATEX_DROP = re.compile(
    r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad)|\\\(|\\\)|\\\[|\\\]|\$|~"
)
_LATEX_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname|mbox)\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_SCI = re.compile(r"\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,3})?"
_NUMERIC = re.compile(rf"({_NUMBER})(?:\s*/\s*({_NUMBER}))?\s*(%?)\s*((?:[A-Za-z°]+\.?\s*){{0,2}})")
_CONNECTIVES = {"or", "and", "to", "plus", "minus", "times", "over", "divided", "by", "not"}


def _clean_math(text: str) -> str:
    """Strip LaTeX decoration so that ``\\boxed{\\frac{3}{4}}`` reads ``3/4``."""
    boxed = _last_braced(text, "\\boxed") or _last_braced(text, "\\fbox")
    if boxed is not None:
        text = boxed
    text = unicodedata.normalize("NFKC", text).replace("−", "-").replace("\\%", "%")
    for _ in range(3):  # nested wrappers like \text{\textbf{5}}
        text = _LATEX_WRAP.sub(r"\1", text)
    text = re.sub(r"\^\s*\{?\\circ\}?|°", "", text)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    text = _FRAC_SHORT.sub(r"\1/\2", text)
    text = _SCI.sub(r"e\1", text)
    text = _LATEX_DROP.sub("", text)
    if "=" in text:  # "x = 5" -> "5"
        text = text.rsplit("=", 1)[1]
    text = text.strip().rstrip(".").strip()
    # "(3)/(4)" from a fraction of plain numbers -> "3/4"
    text = re.sub(rf"\(\s*({_NUMBER})\s*\)", r"\1", text)
    # thousands separators: 1,234,567 -> 1234567 (a "1,5" stays and does not parse)
    return re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)


def parse_number(text: object) -> tuple[Fraction, bool] | None:
    """``(value, is_percent)`` if ``text`` is one number (integer, decimal, fraction, LaTeX
    fraction, scientific notation, percentage, optionally followed by a unit word), else None."""
    text = _as_text(text)
    if len(text) > 400:
        return None
    cleaned = _clean_math(text)
    match = _NUMERIC.fullmatch(cleaned)
    if not match:
        return None
    units = match.group(4).lower().replace(".", " ").split()
    if any(u in _CONNECTIVES for u in units):
        return None
    try:
        value = Fraction(match.group(1))
        if match.group(2) is not None:
            value /= Fraction(match.group(2))
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value, bool(match.group(3))


def _candidates(parsed: tuple[Fraction, bool]) -> list[Fraction]:
    value, percent = parsed
    return [value, value / 100] if percent else [value]


def _close(a: Fraction, b: Fraction) -> bool:
    if a == b:
        return True
    # Decimals written for repeating fractions (0.3333333 vs 1/3): relative tolerance 1e-6.
    return abs(a - b) <= Fraction(1, 10**6) * max(abs(a), abs(b))


def _single_number(text: str) -> tuple[Fraction, bool] | None:
    """The number in a short sentence that contains exactly one ("The answer is 27 miles.")."""
    if len(text) > 300:
        return None
    found = re.findall(rf"{_NUMBER}(?:\s*/\s*{_NUMBER})?\s*%?", _clean_math(text))
    return parse_number(found[0]) if len(found) == 1 else None


def _math_string(text: str) -> str:
    return re.sub(r"\s+|\\,|\{|\}", "", _clean_math(text)).lower()


def math_equal(prediction: object, answer: object) -> bool:
    """Whether ``prediction`` and ``answer`` are the same number (or the same expression text).

    Handles integers, decimals, ``3/4``, ``\\frac{3}{4}``, ``\\boxed{...}``, ``1,234``,
    ``1.5e3`` / ``1.5 \\times 10^{3}``, units after a number, and percentages (``50%`` equals
    ``50`` and ``0.5``). Non-numeric answers are compared as LaTeX-stripped text.
    """
    pred_text, gold_text = _as_text(prediction)[:_MAX_ANSWER_CHARS], _as_text(answer)
    gold = parse_number(gold_text)
    pred = parse_number(pred_text) or (_single_number(pred_text) if gold is not None else None)
    if gold is not None and pred is not None:
        return any(_close(p, g) for p in _candidates(pred) for g in _candidates(gold))
    if gold is None and pred is None:
        return bool(_math_string(gold_text)) and _math_string(pred_text) == _math_string(gold_text)
    return False


# ------------------------------------------------------------------ multiple choice

_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Za-z])\s*[).:\]]\s+(.*)$", re.DOTALL)
_LETTER_ONLY = re.compile(r"^\s*[(\[]?\s*([A-Za-z])\s*[)\].:]?\s*$")
_LETTER_LEAD = re.compile(r"^\s*[(\[]?\s*([A-Za-z])\s*[)\].:]\s*(.*)$", re.DOTALL)
_LETTER_PHRASE = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is)?\s*[:\s]\s*\(?([A-Z])\)?(?![A-Za-z])"
)


def _option_text(choice: str) -> str:
    """An option without a leading ``A.`` / ``(A)`` label."""
    match = _OPTION_PREFIX.match(choice)
    return match.group(2) if match else choice


def _choice_index(text: str, choices: Sequence[str] | None) -> int | None:
    """Which option ``text`` designates: the option's text, a letter, ``(B)``, ``B) text``,
    an equal number (numeric options), or ``... answer is B ...``. None if it designates none."""
    n = len(choices) if choices else 26
    text = _clean_letters(text)
    if choices:
        norm = normalize_answer(text)
        texts = [normalize_answer(_option_text(c)) for c in choices]
        if norm and norm in texts:
            return texts.index(norm)
    match = _LETTER_ONLY.match(text) or _LETTER_LEAD.match(text)
    if match and _LETTERS.index(match.group(1).upper()) < n:
        return _LETTERS.index(match.group(1).upper())
    if choices and parse_number(text) is not None:
        hits = [i for i, c in enumerate(choices) if math_equal(text, _option_text(c))]
        if len(hits) == 1:
            return hits[0]
    match = _LETTER_PHRASE.search(text[:500])
    if match and _LETTERS.index(match.group(1)) < n:
        return _LETTERS.index(match.group(1))
    return None


def _clean_letters(text: str) -> str:
    boxed = _last_braced(text, "\\boxed")
    text = boxed if boxed is not None else text
    text = _LATEX_WRAP.sub(r"\1", text).replace("**", "").replace("$", "").strip()
    return re.sub(
        r"^(?:the\s+)?(?:final\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:\s]\s*",
        "",
        text,
        flags=re.IGNORECASE,
    )


def multiple_choice_correct(
    prediction: object, answer: str, choices: Sequence[str] | None = None
) -> bool:
    """Whether ``prediction`` picks the same option as ``answer``.

    ``answer`` is a letter (``"B"``), a labelled option (``"B. 0.7"``) or an option's text.
    The prediction may be ``B``, ``(B)``, ``B) text``, ``Answer: B``, ``\\boxed{B}``, the
    option's text, or (for numeric options) an equal number. Without ``choices`` only letters
    and texts are compared.
    """
    pred_text = _as_text(prediction)[:_MAX_ANSWER_CHARS]
    if not pred_text.strip():
        return False
    gold = _choice_index(answer, choices)
    if gold is None:
        if choices:
            raise TaskScoringError(f"answer {answer!r} is neither a letter nor one of the choices")
        return normalize_answer(pred_text) == normalize_answer(answer)
    return _choice_index(pred_text, choices) == gold


# ------------------------------------------------------------------ Game of 24

_G24_OPS = {
    ast.Add: Fraction.__add__,
    ast.Sub: Fraction.__sub__,
    ast.Mult: Fraction.__mul__,
    ast.Div: Fraction.__truediv__,
}
_G24_REPLACE = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\div", "/"),
    ("\\left", ""),
    ("\\right", ""),
    ("×", "*"),
    ("∗", "*"),
    ("·", "*"),
    ("x", "*"),
    ("X", "*"),
    ("÷", "/"),
    ("−", "-"),
    ("–", "-"),
    ("[", "("),
    ("]", ")"),
    ("{", "("),
    ("}", ")"),
    ("$", ""),
)


def _g24_expression(text: str) -> str:
    boxed = _last_braced(text, "\\boxed")
    text = boxed if boxed is not None else text
    for old, new in _G24_REPLACE:
        text = text.replace(old, new)
    if "=" in text:  # "(1+1+1)*8 = 24" or "24 = ..." -> the side that is not just 24
        sides = [s.strip() for s in text.split("=")]
        text = next((s for s in sides if s and s != "24"), "")
    return text.strip()


def _g24_eval(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _G24_OPS:
        left, right = _g24_eval(node.left, used), _g24_eval(node.right, used)
        return _G24_OPS[type(node.op)](left, right)
    raise ValueError(f"not allowed in Game of 24: {type(node).__name__}")


def check_game24(expression: object, numbers: Sequence[int], target: int = 24) -> bool:
    """Whether ``expression`` uses each of ``numbers`` exactly once with ``+ - * /`` and
    parentheses and equals ``target`` exactly (rational arithmetic).

    Accepts ``*``, ``x``, ``X``, ``×``, ``\\times`` for multiplication and ``/``, ``÷``, ``\\div``
    for division, and an ``= 24`` suffix. The text is parsed with :mod:`ast` and only integer
    literals, the four binary operators and parentheses are accepted: names, calls, unary
    minus, powers, floats are rejected, and nothing is ever evaluated by Python.
    """
    text = _g24_expression(_as_text(expression))
    if not text or len(text) > 200:
        return False
    try:
        tree = ast.parse(text, mode="eval")
        used: list[int] = []
        value = _g24_eval(tree.body, used)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError, TypeError):
        return False
    return sorted(used) == sorted(int(n) for n in numbers) and value == target


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


# ------------------------------------------------------------------ dispatch


def _gold_answers(task: Task) -> list[str]:
    aliases = task.metadata.get("aliases") or []
    return [task.answer, *[_as_text(a) for a in aliases if _as_text(a) != task.answer]]


def _score_exact(pred: str, task: Task) -> float:
    golds = _gold_answers(task)
    if exact_match(pred, golds):
        return 1.0
    numeric = [g for g in golds if parse_number(g) is not None]
    return float(any(parse_number(pred) is not None and math_equal(pred, g) for g in numeric))


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
    pred = extract_answer(prediction)[:_MAX_ANSWER_CHARS]
    return min(1.0, max(0.0, float(scorer(pred, task))))
