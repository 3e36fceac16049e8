"""Multiple choice: which option a prediction designates, and whether it is the gold one.

A prediction designates an option by (first that applies):

1. the option's text (``"Colorectal cancer"``, ``"0.7"``);
2. a leading letter in any common form: ``C``, ``(C)``, ``C)``, ``C.``, ``C:``, ``C, because``,
   ``C - text``, ``C (text)``, ``Answer: C``, ``The answer is (C)``, ``\\boxed{C}``, ``**C**``;
3. for numeric options, an equal number (``0.70`` for ``0.7``), alone or as the one number of
   a short sentence (``I would go with 4.``);
4. ``... answer is (C) ...`` / ``option C`` anywhere;
5. one option's text inside a sentence (``"the risk is colorectal cancer."``).

``(A) or (B)``, ``A, B`` and a sentence naming two options designate nothing. Option texts are
compared after a normalization that keeps what distinguishes options: signs and operators
(``-12`` vs ``12``, ``1-α`` vs ``1+α``), digits' commas (``2,6-diene``) and, when two options
differ only by case (``l`` vs ``L``), case. Options whose texts are identical (a defect in a
few GPQA items, reported by the loader) are the same answer: either letter is credited.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

from agentflow_env.rewards.errors import TaskScoringError
from agentflow_env.rewards.mathexpr import math_equal, number_in_sentence, parse_number
from agentflow_env.rewards.text import MAX_ANSWER_CHARS, as_text, last_braced, normalize_answer

__all__ = ["multiple_choice_correct", "designated_options", "option_keys"]

_LETTERS = string.ascii_uppercase
_MINUS = str.maketrans({"−": "-", "–": "-", "—": "-", "‒": "-", "﹣": "-", "－": "-"})
_LATEX_NOISE = re.compile(r"\$|\\left|\\right|\\displaystyle|\\[,;!]")
_LATEX_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|emph)\{([^{}]*)\}")
_ARTICLE = re.compile(r"\b(?:a|an|the)\b")
# Kept: symbols (arrows, operators), signs, brackets and LaTeX (they tell options apart); a
# comma or period only between digits ("2,6-diene", "0.7"). Other punctuation separates words.
_KEEP = set("+-*/^=<>()[]{}\\_|%'")
_INNER_MARK = re.compile(r"(?<=\d)[.,](?=\d)")
# Linear-time letter forms: no two quantifiers can share a run of blanks (each \s* is
# separated from the next by a required character).
_PREFIX = (
    r"(?:(?i:the\s+)?(?i:final\s+|correct\s+)?(?i:answer|option|choice)"
    r"(?:\s+(?i:is))?\s*(?::\s*)?)?"
)
_LETTER = r"(?:[(\[]\s*)?([A-Z])(?:\s*[)\]]|(?=\s*(?:[.:,;!\-(]|$)))"
_LEAD = re.compile(r"\s*" + _PREFIX + _LETTER)
_LEAD_SPACE_TEXT = re.compile(r"\s*([A-Z])\s+(?=\S)")
_LONE_LOWER = re.compile(r"\s*(?:[(\[]\s*)?([a-z])\s*[)\].]?\s*")
_PHRASE = re.compile(
    r"(?i:answer|option|choice)(?:\s+(?i:is))?\s*(?::\s*)?(?:[(\[]\s*)?([A-Z])(?![A-Za-z])"
)
_MORE = re.compile(r"\s*[)\]]?\s*(?:(?i:or|and)|[/&,])\s*(?:[(\[]\s*)?[A-Z](?![A-Za-z])")


def _is_separator(ch: str) -> bool:
    return ch not in _KEEP and unicodedata.category(ch).startswith("P")


def _base(text: str, keep_case: bool) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_MINUS)
    text = _LATEX_WRAP.sub(r"\1", _LATEX_NOISE.sub("", text)).replace("\\dfrac", "\\frac")
    text = text.replace("\\tfrac", "\\frac").replace("**", "")
    text = _INNER_MARK.sub(lambda m: "\0" if m.group(0) == "." else "\1", text)
    text = "".join(" " if _is_separator(ch) else ch for ch in text)
    text = text.replace("\0", ".").replace("\1", ",")
    text = _ARTICLE.sub(" ", text if keep_case else text.lower())
    return " ".join(text.split())


def _option_text(choice: str, index: int) -> str:
    """An option without its own leading label (``C.`` / ``(C)`` for the third option only:
    a roman-numeral start such as ``i)`` is part of the text)."""
    match = re.match(rf"\s*\(?{_LETTERS[index]}\s*[).:\]]\s+", choice) if index < 26 else None
    return choice[match.end() :] if match else choice


def option_keys(choices: Sequence[str]) -> tuple[list[str], bool]:
    """Each option's comparison key (spaced words) and whether case is kept (it is when two
    options differ only by case)."""
    texts = [_option_text(c, i) for i, c in enumerate(choices)]
    folded = [_base(t, False).replace(" ", "") for t in texts]
    exact = [_base(t, True).replace(" ", "") for t in texts]
    keep_case = len(set(folded)) < len(set(exact))
    return [_base(t, keep_case) for t in texts], keep_case


def _clean(text: str) -> str:
    boxed = last_braced(text, "\\boxed")
    text = boxed if boxed is not None else text
    return _LATEX_WRAP.sub(r"\1", text).replace("**", "").replace("$", "").strip()


def _by_text(text: str, keys: list[str], keep_case: bool) -> set[int]:
    key = _base(text, keep_case).replace(" ", "")
    return {i for i, k in enumerate(keys) if key and k.replace(" ", "") == key}


def _by_letter(text: str, keys: list[str], n: int) -> set[int] | None:
    """Options named by a leading letter form: a set (empty if none), or None if ambiguous."""
    match = _LEAD.match(text)
    if match is None:
        spaced = _LEAD_SPACE_TEXT.match(text)  # "C Colorectal cancer": letter, then its text
        if spaced and _LETTERS.index(spaced.group(1)) < n:
            index = _LETTERS.index(spaced.group(1))
            rest = _base(text[spaced.end() :], False).replace(" ", "")
            if keys and rest.startswith(keys[index].lower().replace(" ", "")):
                return {index}
        lone = _LONE_LOWER.fullmatch(text)
        if lone and _LETTERS.index(lone.group(1).upper()) < n:
            return {_LETTERS.index(lone.group(1).upper())}
        return set()
    index = _LETTERS.index(match.group(1))
    if index >= n:
        return set()
    return None if _MORE.match(text, match.end()) else {index}


def _by_number(text: str, choices: Sequence[str]) -> set[int]:
    """The one numeric option equal to the number ``text`` is, or states in a short sentence."""
    values = {i: parse_number(_option_text(c, i)) for i, c in enumerate(choices)}
    numeric = [i for i, v in values.items() if v is not None]
    if not numeric:
        return set()
    if parse_number(text) is not None:
        hits = {i for i in numeric if math_equal(text, _option_text(choices[i], i))}
    else:
        stated = number_in_sentence(text)
        hits = (
            set()
            if stated is None
            else {i for i in numeric if values[i] == (stated.value, stated.percent)}
        )
    return hits if len(hits) == 1 else set()


def _by_phrase(text: str, n: int) -> set[int] | None:
    last = None
    for match in _PHRASE.finditer(text):
        if match.group(1) == "A" and re.match(r"\s+[a-z]", text[match.end() : match.end() + 2]):
            continue  # "the answer is a ...": the article, not option A
        last = match
    if last is None or _LETTERS.index(last.group(1)) >= n:
        return set()
    return None if _MORE.match(text, last.end()) else {_LETTERS.index(last.group(1))}


def _in_sentence(text: str, keys: list[str], keep_case: bool) -> set[int]:
    """The one option whose words appear in ``text`` (an option contained in another that also
    appears, like "cancer" in "colorectal cancer", does not count)."""
    padded = f" {_base(text, keep_case)} "
    found = {k for k in set(keys) if len(k) >= 3 and f" {k} " in padded}
    found = {k for k in found if not any(k != other and k in other for other in found)}
    if len(found) != 1:
        return set()
    (key,) = found
    return {i for i, k in enumerate(keys) if k == key}


def designated_options(prediction: object, choices: Sequence[str] | None) -> set[int] | None:
    """Indices of the option(s) ``prediction`` designates (several only when their texts are
    identical); an empty set when it designates none; None when it names two different ones."""
    text = _clean(as_text(prediction)[:MAX_ANSWER_CHARS])
    if not text:
        return set()
    n = len(choices) if choices else 26
    keys, keep_case = option_keys(choices) if choices else ([], False)
    if choices:
        hits = _by_text(text, keys, keep_case)
        if hits:
            return hits
    by_letter = _by_letter(text, keys, n)
    if by_letter is None or by_letter:
        return by_letter
    if choices:
        by_number = _by_number(text, choices)
        if by_number:
            return by_number
    by_phrase = _by_phrase(text, n)
    if by_phrase is None or by_phrase:
        return by_phrase
    return _in_sentence(text, keys, keep_case) if choices else set()


def _same_text(indices: set[int], keys: list[str]) -> set[int]:
    """The given options and every option whose text is identical to one of them."""
    same = {keys[i] for i in indices}
    return {i for i, k in enumerate(keys) if k in same} | indices


def multiple_choice_correct(
    prediction: object, answer: str, choices: Sequence[str] | None = None
) -> bool:
    """Whether ``prediction`` picks the same option as ``answer``.

    ``answer`` is a letter (``"B"``), a labelled option (``"B. 0.7"``) or an option's text.
    See the module docstring for the prediction forms. Without ``choices`` only letters and
    normalized texts are compared.

    Raises:
        TaskScoringError: ``choices`` are given and ``answer`` designates none of them.
    """
    gold = designated_options(answer, choices)
    if not gold:
        if choices:
            raise TaskScoringError(f"answer {answer!r} is neither a letter nor one of the choices")
        pred = as_text(prediction)[:MAX_ANSWER_CHARS]
        return bool(pred.strip()) and normalize_answer(pred) == normalize_answer(answer)
    pred = designated_options(prediction, choices)
    if not pred:
        return False
    if choices:
        gold = _same_text(gold, option_keys(choices)[0])
    return pred <= gold
