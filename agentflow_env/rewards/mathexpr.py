"""Math answers: ``math_equal`` (numbers exactly, expressions symbolically) and ``parse_number``.

Order of checks, each decisive when it applies:

1. Both sides are one number (after LaTeX clean-up: ``\\boxed{\\frac{3}{4}}`` reads ``3/4``):
   compared exactly as rationals. An integer gold needs the exact integer (``808.9999`` is not
   ``809``); a gold whose decimal expansion does not stop may be written as a decimal of at
   least 3 places within the last written place (``0.333`` for ``1/3``). Percentages equal
   their value and their fraction (``50%`` is ``50`` and ``0.5``); magnitudes, units and eras
   follow :mod:`.quantity` (``2 million`` is not ``2``).
2. Equal after stripping LaTeX decoration and spaces (``2 \\sqrt{3}`` and ``2\\sqrt{3}``).
3. Math-Verify (optional ``[math]`` extra, :mod:`.symbolic`) on expressions: ``2^5+1`` is
   ``33``, ``\\sqrt{8}`` is ``2\\sqrt{2}``, ``\\{2,1\\}`` is ``\\{1,2\\}``. Skipped for prose
   (a prediction with words in it, such as ``27 or 28``) and without the library, where
   steps 1-2 are the whole check.
"""

from __future__ import annotations

import math
import re
import unicodedata
from fractions import Fraction

from agentflow_env.rewards.quantity import Quantity, parse_quantity, units_agree
from agentflow_env.rewards.symbolic import MAX_SYMBOLIC_CHARS, symbolic_equal
from agentflow_env.rewards.text import MAX_ANSWER_CHARS, as_text, last_braced

__all__ = ["math_equal", "parse_number", "clean_math", "number_in_sentence"]

_MAX_NUMBER_CHARS = 400
_LATEX_DROP = re.compile(
    r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad)|\\\(|\\\)|\\\[|\\\]|\$|~"
)
_LATEX_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname|mbox)\{([^{}]*)\}")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_SCI = re.compile(r"\s*(?:\\times|\\cdot|×|\*|x)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?")
_DEGREE = re.compile(r"\^\s*\{?\\circ\}?|°")
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,3})?"
_PAREN_NUMBER = re.compile(rf"\(\s*({_NUMBER})\s*\)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER_IN_TEXT = re.compile(rf"{_NUMBER}(?:\s*/\s*{_NUMBER})?\s*%?")
_SENTENCE_REST = re.compile(r"[A-Za-z\s.,:;!?'\"]*")
_NOT_A_UNIT = {"thousand", "million", "billion", "trillion", "bc", "bce"}
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[A-Za-z]{2,}")
_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "sqrt", "pi", "inf"}


def clean_math(text: str) -> str:
    """Strip LaTeX decoration so that ``\\boxed{\\frac{3}{4}}`` reads ``3/4``."""
    boxed = last_braced(text, "\\boxed") or last_braced(text, "\\fbox")
    if boxed is not None:
        text = boxed
    text = unicodedata.normalize("NFKC", text).replace("−", "-").replace("\\%", "%")
    for _ in range(3):  # nested wrappers like \text{\textbf{5}}
        text = _LATEX_WRAP.sub(r"\1", text)
    text = _DEGREE.sub("", text)
    text = _FRAC.sub(r"(\1)/(\2)", text)
    text = _FRAC_SHORT.sub(r"\1/\2", text)
    text = _SCI.sub(r"e\1", text)
    text = _LATEX_DROP.sub("", text)
    if "=" in text:  # "x = 5" -> "5"
        text = text.rsplit("=", 1)[1]
    text = text.strip().rstrip(".").strip()
    text = _PAREN_NUMBER.sub(r"\1", text)  # "(3)/(4)" from a fraction of plain numbers -> "3/4"
    # thousands separators: 1,234,567 -> 1234567 (a "1,5" stays and does not parse)
    return _THOUSANDS.sub("", text)


def _quantity(text: str) -> Quantity | None:
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    return parse_quantity(clean_math(text), fractions=True)


def parse_number(text: object) -> tuple[Fraction, bool] | None:
    """``(value, is_percent)`` if ``text`` is one number (integer, decimal, fraction, LaTeX
    fraction, scientific notation, percentage, magnitude word, optionally followed by a unit),
    else None."""
    found = _quantity(as_text(text))
    return None if found is None else (found.value, found.percent)


def number_in_sentence(text: str) -> Quantity | None:
    """The number in a short sentence that contains exactly one ("The answer is 27 miles.")
    and nothing else mathematical (no operators, no magnitude or era words)."""
    if len(text) > 300:
        return None
    cleaned = clean_math(text)
    found = _NUMBER_IN_TEXT.findall(cleaned)
    rest = _NUMBER_IN_TEXT.sub(" ", cleaned)
    if len(found) != 1 or not _SENTENCE_REST.fullmatch(rest):
        return None
    if _NOT_A_UNIT.intersection(rest.lower().replace(".", " ").split()):
        return None
    return parse_quantity(found[0], fractions=True)


def _candidates(q: Quantity) -> list[Fraction]:
    return [q.value, q.value / 100] if q.percent else [q.value]


def _as_rounded_decimal(pred: Quantity, gold: Fraction) -> bool:
    """``pred`` is ``gold`` rounded or truncated to ``pred.decimals`` places (>= 3), where
    ``gold`` cannot be written exactly in that many places (``0.333`` or ``0.6667`` for ``1/3``
    and ``2/3``; never ``0.3334``, and never ``0.999`` for ``1``)."""
    places = pred.decimals
    if places is None or places < 3 or (gold * 10**places).denominator == 1:
        return False
    if (pred.value < 0) != (gold < 0):
        return False
    written, exact = abs(pred.value) * 10**places, abs(gold) * 10**places
    return written in (math.floor(exact), math.floor(exact + Fraction(1, 2)))


def _numbers_match(pred: Quantity, gold: Quantity) -> bool:
    if not units_agree(pred, gold):
        return False
    if any(p == g for p in _candidates(pred) for g in _candidates(gold)):
        return True
    return not pred.percent and not gold.percent and _as_rounded_decimal(pred, gold.value)


def _math_string(text: str) -> str:
    if len(text) > _MAX_NUMBER_CHARS:
        return ""
    return re.sub(r"\s+|\\,|\{|\}", "", clean_math(text)).lower()


def _is_expression(text: str) -> bool:
    """No words outside LaTeX commands (a variable is one letter): prose is not parsed."""
    bare = _LATEX_COMMAND.sub(" ", _LATEX_WRAP.sub(" ", text))
    return not any(w.lower() not in _MATH_WORDS for w in _WORD.findall(bare))


def math_equal(prediction: object, answer: object) -> bool:
    """Whether ``prediction`` and ``answer`` are the same number or the same expression.

    Handles integers, decimals, ``3/4``, ``\\frac{3}{4}``, ``\\boxed{...}``, ``1,234``,
    ``1.5e3`` / ``1.5 \\times 10^{3}``, units after a number, percentages (``50%`` equals
    ``50`` and ``0.5``) and, with Math-Verify installed, symbolic equivalence. See the module
    docstring for the order of checks.
    """
    pred_text, gold_text = as_text(prediction)[:MAX_ANSWER_CHARS], as_text(answer)
    if not pred_text.strip() or not gold_text.strip():
        return False
    gold = _quantity(gold_text)
    pred = _quantity(pred_text) or (number_in_sentence(pred_text) if gold is not None else None)
    if gold is not None and pred is not None:
        return _numbers_match(pred, gold)
    gold_key = _math_string(gold_text)
    if gold_key and _math_string(pred_text) == gold_key:
        return True
    if len(pred_text) > MAX_SYMBOLIC_CHARS or not _is_expression(clean_math(pred_text)):
        return False
    return symbolic_equal(pred_text.strip(), gold_text.strip()) is True
