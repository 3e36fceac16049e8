"""Text utilities for the wrappers: tokens, candidate names, and the one stop-word list.

The wrappers read the observation with :func:`agentflow_env.format.split_observation` and search
results with :mod:`tools.search.format`; this module only adds what they need on top: lowercase
tokens, a name extractor, and :data:`STOP_WORDS` (with :data:`NOT_NAMES`, its extension for
names).
"""

from __future__ import annotations

import re

from tools.search.format import TITLE_PATTERN

__all__ = ["NOT_NAMES", "STOP_WORDS", "extract_names", "normalize", "tokens"]

_TOKEN = re.compile(r"[0-9a-z]+")
# A name: capitalized words (optionally joined by a few lowercase particles), or a 2-4 digit number.
_NAME = re.compile(
    r"\b[A-Z][\w'\-]*(?:\s+(?:of|the|de|da|van|von|del|la|le)?\s*[A-Z][\w'\-]*)*|\b\d{2,4}\b"
)
_TITLE_OR_NAME = re.compile(TITLE_PATTERN + "|" + _NAME.pattern)
STOP_WORDS = frozenset(
    "a an and are as at be by did do does for from has have how in is it its of on or that the "
    "this to was were what when where which who whom whose why with".split()
)
"""function words: never content (relation features) and never a name on their own"""
NOT_NAMES = STOP_WORDS | frozenset(
    "he her his she their there they no none doc error finished query result source title".split()
)
"""words dropped from the start of a candidate name and never names themselves: the stop words,
pronouns, and capitalized words that label the observation and tool output (``Result:``,
``Doc 1 (Title: ...)``, ``Error: ...``)"""


def normalize(text: str) -> str:
    """Lowercase alphanumeric tokens joined by spaces (for comparing names and commands)."""
    return " ".join(tokens(text))


def tokens(text: str) -> list[str]:
    """Lowercase alphanumeric tokens."""
    return _TOKEN.findall(text.lower())


def extract_names(text: str, limit: int = 32) -> list[str]:
    """Candidate entity names in ``text``: passage titles, capitalized spans and numbers.

    A heuristic meant for proposing actions (which names to search for or answer with), not NER:
    it keeps the order of first appearance, drops duplicates and function words such as ``The``.
    """
    found: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        words = name.split()
        while (
            words and words[0].lower() in NOT_NAMES
        ):  # "The Hague" keeps "Hague"; "In Paris" -> "Paris"
            words = words[1:]
        cleaned = " ".join(words).strip(" '-")
        key = normalize(cleaned)
        if cleaned and key and key not in seen and key not in NOT_NAMES:
            seen.add(key)
            found.append(cleaned)

    # Titles and names in order of appearance: the best-matching passage comes first.
    for match in _TITLE_OR_NAME.finditer(text):
        add(match.group(1) or match.group(0))
        if len(found) >= limit:
            break
    return found[:limit]
