"""Answer extraction and text answers: ``extract_answer``, HotpotQA normalization, EM and F1.

Normalization follows the official HotpotQA / SQuAD evaluation: lowercase, drop punctuation and
the articles a/an/the, collapse whitespace (plus NFKC, so full-width and composed characters
compare equal). Every regex here runs on model output and is linear-time: no pattern has two
quantifiers that can split the same run of characters between them.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

from agentflow_env.format.labels import ANSWER_CLOSE, ANSWER_OPEN

__all__ = ["extract_answer", "normalize_answer", "exact_match", "f1_score", "as_text"]

MAX_ANSWER_CHARS = 10_000
"""Longer extracted answers are cut before scoring (no gold answer is anywhere near this)."""
# Lowercase only the tag's letters, so lengths (and offsets) stay.
_TAG_CASE = str.maketrans(ANSWER_OPEN.upper(), ANSWER_OPEN)
# ``(.*)`` then strip in Python: a lazy ``(.+?)[ \t]*$`` re-scans the trailing blanks once per
# character it grows by, which is quadratic on "Answer: x" followed by a long run of spaces.
_ANSWER_LINE = re.compile(
    r"^[ \t*#>\-]*(?:final[ \t]+)?answer[ \t*]*[:：](.*)$", re.IGNORECASE | re.MULTILINE
)
_ANSWER_IS = re.compile(r"\bthe (?:final |correct )?answer is[:\s]+(.+?)\s*$", re.IGNORECASE)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def as_text(value: object) -> str:
    """Any prediction as text: bytes are decoded (invalid bytes replaced), None is empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def last_braced(text: str, command: str) -> str | None:
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


def extract_answer(text: object) -> str:
    """The final answer in a model's output.

    In order: the content of the last ``<answer>...</answer>``; the text after an unclosed
    ``<answer>``; the last ``Answer: X`` / ``Final answer: X`` line; ``... the answer is X`` at
    the end; else the whole text stripped. Never raises (non-strings are converted).
    """
    text = as_text(text)
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


class _DropPunctuation(dict):
    """``str.translate`` table deleting punctuation (ASCII and Unicode category P), filled in
    per distinct character on first sight: one C-speed pass over megabytes of output."""

    def __missing__(self, code: int) -> int | None:
        ch = chr(code)
        drop = ch in string.punctuation or unicodedata.category(ch).startswith("P")
        value = None if drop else code
        if len(self) < 65_536:  # bounded: junk cycling through all of Unicode stays small
            self[code] = value
        return value


_DROP_PUNCTUATION = _DropPunctuation()


def normalize_answer(text: object) -> str:
    """HotpotQA-style normalization: NFKC, lowercase, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFKC", as_text(text)).lower().translate(_DROP_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def golds(ground_truth: str | Sequence[str]) -> list[str]:
    """One gold answer or several, as a list of strings."""
    if isinstance(ground_truth, str):
        return [ground_truth]
    return [as_text(g) for g in ground_truth]


def exact_match(prediction: object, ground_truth: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(bool(pred) and any(pred == normalize_answer(g) for g in golds(ground_truth)))


def f1_score(prediction: object, ground_truth: str | Sequence[str]) -> float:
    """Token-level F1 between normalized prediction and the best-matching gold answer.

    As in HotpotQA, ``yes``/``no``/``noanswer`` only match themselves exactly.
    """
    pred = normalize_answer(prediction)
    best = 0.0
    special = {"yes", "no", "noanswer"}
    for gold_text in golds(ground_truth):
        gold = normalize_answer(gold_text)
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
