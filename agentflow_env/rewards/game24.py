"""Game of 24: does a written expression use each number exactly once and equal 24?

The prediction may wrap the expression in prose (``The expression is (1+1+1)*8.``), LaTeX
(``\\frac{8}{3-8/3}``, ``\\times``, ``\\div``, ``\\cdot``, ``$...$``, ``\\boxed{}``), unicode
operators (``×``, ``÷``, ``−``, en/em dashes) and an ``= 24`` either side. Every maximal run of
expression characters is a candidate; the prediction is correct if one candidate uses exactly
the given numbers and equals the target in exact rational arithmetic. Candidates are parsed
with :mod:`ast` and only integer literals, ``+ - * /``, parentheses and a leading minus are
accepted: nothing is ever evaluated by Python, and candidates are capped at
:data:`MAX_EXPRESSION_CHARS`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from fractions import Fraction

from agentflow_env.rewards.text import as_text, last_braced

__all__ = ["check_game24", "MAX_EXPRESSION_CHARS"]

MAX_EXPRESSION_CHARS = 200
_MAX_TEXT_CHARS = 20_000
_OPS = {
    ast.Add: Fraction.__add__,
    ast.Sub: Fraction.__sub__,
    ast.Mult: Fraction.__mul__,
    ast.Div: Fraction.__truediv__,
}
_REPLACE = (
    ("\\times", "*"),
    ("\\cdot", "*"),
    ("\\ast", "*"),
    ("\\div", "/"),
    ("\\left", ""),
    ("\\right", ""),
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("×", "*"),
    ("∗", "*"),
    ("·", "*"),
    ("⋅", "*"),
    ("÷", "/"),
    ("∕", "/"),
    ("−", "-"),
    ("–", "-"),
    ("—", "-"),
    ("[", "("),
    ("]", ")"),
    ("$", " "),
)
_X_TIMES = re.compile(r"(?<=[\d)\s])[xX](?=\s*[\d(])")
_FRAC = re.compile(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_MAX_FRAC_DEPTH = 4
_CANDIDATE = re.compile(r"[\d()+\-*/ .]+")
_DIGITS = re.compile(r"\d+")


def _normalize(text: str) -> str:
    boxed = last_braced(text, "\\boxed")
    text = boxed if boxed is not None else text
    for old, new in _REPLACE:
        text = text.replace(old, new)
    # \frac{a}{b} -> ((a)/(b)), innermost first; deeper nesting than this is not an answer.
    for _ in range(_MAX_FRAC_DEPTH):
        text, count = _FRAC.subn(r"((\1)/(\2))", text)
        if not count:
            break
    text = text.replace("{", "(").replace("}", ")")
    text = text.replace("\\", " ")
    return _X_TIMES.sub("*", text)


def _evaluate(node: ast.AST, used: list[int], leftmost: bool) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left = _evaluate(node.left, used, leftmost)
        right = _evaluate(node.right, used, False)
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and leftmost:
        # A leading minus ("-3 + 27", "-(3 - 27)") only; a minus inside is not an operation.
        return -_evaluate(node.operand, used, True)
    raise ValueError(f"not allowed in Game of 24: {type(node).__name__}")


def _trim(text: str) -> str:
    """Drop the prose's unmatched outer parentheses: "(e.g. (1+1+1)*8)" -> "(1+1+1)*8"."""
    text = text.strip(" .")
    if len(text) > MAX_EXPRESSION_CHARS:
        return ""
    while text.startswith("(") and text.count("(") > text.count(")"):
        text = text[1:].strip()
    while text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1].strip()
    return text


def _candidate_ok(candidate: str, wanted: list[int], target: int) -> bool:
    text = _trim(candidate)
    if not text or len(text) > MAX_EXPRESSION_CHARS or len(_DIGITS.findall(text)) < 2:
        return False
    try:
        tree = ast.parse(text, mode="eval")
        used: list[int] = []
        value = _evaluate(tree.body, used, True)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError, TypeError):
        return False
    return sorted(used) == wanted and value == target


def check_game24(expression: object, numbers: Sequence[int], target: int = 24) -> bool:
    """Whether ``expression`` (possibly inside prose or LaTeX) uses each of ``numbers`` exactly
    once with ``+ - * /`` and parentheses and equals ``target`` exactly (rational arithmetic).

    Accepts ``*``, ``x``, ``×``, ``\\times``, ``\\cdot`` for multiplication; ``/``, ``÷``,
    ``\\div``, ``\\frac{a}{b}`` for division; ``=`` 24 on either side. Names, calls, powers,
    floats and a minus that is not leading are rejected.
    """
    text = as_text(expression)[:_MAX_TEXT_CHARS]
    wanted = sorted(int(n) for n in numbers)
    for side in _normalize(text).split("="):
        for match in _CANDIDATE.finditer(side):
            if _candidate_ok(match.group(0), wanted, target):
                return True
    return False
