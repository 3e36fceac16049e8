"""Labelled (prediction, gold) cases for the scorer benchmark, built from the ten files' golds.

Each gold answer is perturbed into correct restatements and wrong-but-close answers; the label
(right or wrong) and the class (``unit-changed``, ``letter-with-text``, ...) are assigned by
construction, not by running any scorer. Labels follow one principle: a prediction is right
when it states the same answer as the gold (the same quantity, the same option, an expression
with the gold's value), and wrong when it states a different one or hedges between two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agentflow_env.rewards.quantity import parse_quantities, parse_quantity
from agentflow_env.tasks.base import Task

__all__ = ["Case", "cases_for"]


@dataclass(frozen=True)
class Case:
    """One prediction for one task, with its label and the perturbation class that made it."""

    file: str
    task: Task
    prediction: str
    label: bool
    kind: str


_UNIT_SYNONYM = {"m": "metres", "km": "kilometres", "mi": "miles", "ft": "feet", "%": "percent"}
_UNIT_WRONG = {"m": "feet", "km": "miles", "mi": "km", "ft": "m", "year": "days"}
_UNIT_WORD = re.compile(r"(?<=\d)\s*([A-Za-z%/²]+)\s*$")
_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def _qa(file: str, task: Task) -> list[Case]:
    gold = task.answer
    out = [(gold, True, "as-is"), (gold.upper() + ".", True, "case-and-punctuation")]
    if not re.match(r"(?i)(the|a|an)\b", gold):
        out.append((f"The {gold}", True, "article-added"))
    words = gold.split()
    q = parse_quantity(gold)
    if len(words) >= 2 and not parse_quantities(gold):  # a quantity's number: see units below
        out.append((words[0], False, "first-word-only"))
    last = _LAST_INT.search(gold)
    if last:
        bumped = str(int(last.group(1)) + 1)
        out.append((gold[: last.start()] + bumped + gold[last.end() :], False, "number-off-by-one"))
    if q is not None and q.value.denominator == 1 and abs(q.value) >= 1000 and "," in gold:
        out.append((gold.replace(",", ""), True, "thousands-separator"))
    unit = _UNIT_WORD.search(gold)
    if q is not None and q.unit and q.known_unit and unit and q.unit in _UNIT_WRONG:
        number = gold[: unit.start()]
        if q.unit in _UNIT_SYNONYM:
            out.append((f"{number} {_UNIT_SYNONYM[q.unit]}", True, "unit-synonym"))
        out.append((number, True, "unit-left-to-question"))
        out.append((f"{number} {_UNIT_WRONG[q.unit]}".strip(), False, "unit-changed"))
    if q is not None and re.search(r"\bBC\b", gold):
        out.append((gold.replace("BC", "AD"), False, "era-changed"))
        out.append((gold.replace(" BC", ""), False, "era-dropped"))
    magnitude = re.search(r"\b(million|billion|thousand)\b", gold)
    if q is not None and magnitude:
        number = gold[: magnitude.start()].strip()
        out.append((number, False, "magnitude-dropped"))
        swapped = "billion" if magnitude.group(1) != "billion" else "million"
        out.append((gold.replace(magnitude.group(1), swapped), False, "magnitude-changed"))
        if re.fullmatch(r"\d+", number.split()[-1]):
            value = int(number.split()[-1]) * {"thousand": 10**3, "million": 10**6}.get(
                magnitude.group(1), 10**9
            )
            out.append((f"{value:,}", True, "magnitude-written-out"))
    if q is not None and q.unit and not q.known_unit:
        number = gold.split()[0]
        out.append((f"{number} Things", False, "title-words-changed"))
        out.append((number, False, "title-number-only"))
    # A "wrong" restatement that happens to be one of the gold's aliases is not wrong.
    aliases = {_norm(a) for a in [gold, *task.metadata.get("aliases", [])]}
    return [
        Case(file, task, p, label, kind)
        for p, label, kind in out
        if label or _norm(p) not in aliases
    ]


def _math(file: str, task: Task) -> list[Case]:
    g = int(task.answer)
    out = [
        (str(g), True, "as-is"),
        (f"\\boxed{{{g}}}", True, "boxed"),
        (f"{g}.0", True, "decimal-zero"),
        (f"\\frac{{{2 * g}}}{{2}}", True, "latex-fraction"),
        (f"The answer is {g}.", True, "sentence"),
        (f"{g - 1}+1", True, "expression"),
        (f"\\sqrt{{{g * g}}}", g >= 0, "root-expression"),
        (str(g + 1), False, "off-by-one"),
        (f"{g - 1}.9999", False, "near-decimal"),
        (f"{g}.003", False, "decimal-tail"),
        (f"{g} million", False, "magnitude-added"),
        (f"{g} or {g + 1}", False, "two-answers"),
    ]
    if g != 0:
        out.append((str(-g), False, "sign-flipped"))
    return [Case(file, task, p, label, kind) for p, label, kind in out]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", text.lower()).split())


def _mc(file: str, task: Task) -> list[Case]:
    assert task.choices is not None
    letters = "ABCDEFGHIJ"
    gi = letters.index(task.answer)
    wi = (gi + 1) % len(task.choices)
    L, W = letters[gi], letters[wi]  # noqa: N806 - option letters read best as capitals
    text, wrong = task.choices[gi], task.choices[wi]
    duplicated = {x for group in task.metadata.get("duplicate_options", []) for x in group}
    same_text = L in duplicated and W in duplicated and text == wrong
    out = [
        (L, True, "letter"),
        (f"({L})", True, "letter-in-parentheses"),
        (f"{L})", True, "letter-paren"),
        (f"Answer: {L}", True, "answer-colon-letter"),
        (f"The answer is ({L}).", True, "answer-is-letter"),
        (f"{L}, because the other options do not fit.", True, "letter-then-reason"),
        (f"{L} - {text}", True, "letter-dash-text"),
        (f"{L} ({text})", True, "letter-paren-text"),
        (text, True, "option-text"),
        (W, same_text, "duplicate-letter" if same_text else "wrong-letter"),
        (
            f"The answer is ({W}).",
            same_text,
            "duplicate-letter" if same_text else "wrong-answer-is",
        ),
        (f"({L}) or ({W})", False, "two-letters"),
    ]
    # An option of a letter or two ("c", "a,c") is no phrase to find in a sentence.
    if len(re.sub(r"\W", "", text)) >= 3 or re.fullmatch(r"-?\d+(\.\d+)?", text):
        out.append((f"I would go with {text} here.", True, "option-text-in-sentence"))
    for j, other in enumerate(task.choices):
        if j != gi and other != text and _norm(other) == _norm(text):
            out.append((other, False, "normalization-collision"))
    if not same_text:
        out.append((wrong, False, "wrong-option-text"))
    return [Case(file, task, p, label, kind) for p, label, kind in out]


def _game24(file: str, task: Task, references: list[str]) -> list[Case]:
    r = references[0]
    first = re.search(r"\d+", r)
    assert first is not None
    changed = r[: first.start()] + str(int(first.group(0)) + 1) + r[first.end() :]
    ascii_ops = r.replace("×", "*").replace("÷", "/")
    latex = ascii_ops.replace("*", " \\times ").replace("/", " \\div ")
    out = [
        (r, True, "as-is"),
        (f"{r} = 24", True, "equals-24"),
        (ascii_ops, True, "ascii-operators"),
        (f"{r}.", True, "trailing-period"),
        (f"The expression is {r}", True, "leading-prose"),
        (f"${latex}$", True, "latex-operators"),
        (f"\\boxed{{{r}}}", True, "boxed"),
        ("24", False, "just-24"),
        (changed, False, "number-changed"),
        (f"{r}+0", False, "extra-number"),
    ]
    out += [(ref, True, "other-reference") for ref in references[1:2]]
    return [Case(file, task, p, label, kind) for p, label, kind in out]


def cases_for(file: str, tasks: list[Task], raw: list[dict[str, Any]]) -> list[Case]:
    """Every case for one benchmark file (its tasks and raw records, in the same order)."""
    out: list[Case] = []
    for task, record in zip(tasks, raw, strict=True):
        if task.scorer == "exact":
            out += _qa(file, task)
        elif task.scorer == "math":
            out += _math(file, task)
        elif task.scorer == "mc":
            out += _mc(file, task)
        elif task.scorer == "game24":
            out += _game24(file, task, [str(a) for a in record["answer"]])
    return out
