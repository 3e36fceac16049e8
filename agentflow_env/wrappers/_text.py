"""Reading the planner observation back into parts, and small text utilities for the wrappers.

The observation layout is fixed by :mod:`agentflow_env.prompts` (both prompt styles)::

    ... Query: <question> ...            (header)
    ### Step 1
    <action as written>
    Result: <tool output or error>

    ### Step 2
    ...
    ### Step n                            (the open slot the planner writes into)

Proposers and featurizers only receive the observation text, so they recover the question, the
tool names and the finished steps from it with :func:`split_observation`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise

__all__ = [
    "ObservationView",
    "StepView",
    "extract_names",
    "normalize",
    "split_observation",
    "tokens",
]

_STEP = re.compile(r"^### Step (\d+)\n", re.MULTILINE)
_QUERY = re.compile(r"^Query: (.*)$", re.MULTILINE)
_TOOLS_COMPACT = re.compile(r"^Tools: (.*)$", re.MULTILINE)
_TOOLS_FULL = re.compile(r"Tool Name: <one of: ([^>\n]*)>")
_TOKEN = re.compile(r"[0-9a-z]+")
# A name: capitalized words (optionally joined by a few lowercase particles), or a 2-4 digit number.
_NAME = re.compile(
    r"\b[A-Z][\w'\-]*(?:\s+(?:of|the|de|da|van|von|del|la|le)?\s*[A-Z][\w'\-]*)*|\b\d{2,4}\b"
)
_TITLE_OR_NAME = re.compile(r"\(Title: ([^)\n]+)\)|" + _NAME.pattern)
# Capitalized words that start sentences or label output; never useful as names on their own.
_NOT_NAMES = frozenset(
    [
        "a",
        "an",
        "and",
        "as",
        "at",
        "by",
        "doc",
        "for",
        "from",
        "he",
        "her",
        "his",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "she",
        "that",
        "the",
        "their",
        "there",
        "they",
        "this",
        "to",
        "was",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "how",
        "error",
        "result",
        "title",
        "no",
        "none",
        "finished",
        "source",
        "query",
    ]
)


@dataclass
class StepView:
    """One finished step as it appears in the observation."""

    action: str
    result: str


@dataclass
class ObservationView:
    """The parts of a planner observation (see the module docstring for the layout)."""

    question: str
    tool_names: list[str]
    """tool names offered to the planner, without ``Finish``"""
    steps: list[StepView] = field(default_factory=list)
    """finished steps, oldest first"""

    @property
    def turn(self) -> int:
        """1-based index of the step the planner writes next."""
        return len(self.steps) + 1

    @property
    def last_result(self) -> str:
        return self.steps[-1].result if self.steps else ""


def split_observation(observation: str) -> ObservationView:
    """Split an observation into question, tool names and finished steps.

    Step headers count only when they are numbered 1, 2, 3, ... in order, so a tool result that
    happens to contain ``### Step 7`` does not split a step. Never raises: a text that does not
    follow the layout yields an empty question and no steps.
    """
    headers = []
    expected = 1
    for match in _STEP.finditer(observation):
        if int(match.group(1)) == expected:
            headers.append(match)
            expected += 1
    head = observation[: headers[0].start()] if headers else observation
    query = _QUERY.search(head)
    question = query.group(1).strip() if query else ""
    tools_match = _TOOLS_COMPACT.search(head) or _TOOLS_FULL.search(head)
    names = [t.strip() for t in tools_match.group(1).split(",")] if tools_match else []
    tool_names = [n for n in names if n and n.lower() != "finish"]
    steps = []
    for this, nxt in pairwise(headers):
        body = observation[this.end() : nxt.start()]
        action, sep, result = body.partition("\nResult: ")
        steps.append(StepView(action=action, result=result.rstrip("\n") if sep else ""))
    return ObservationView(question=question, tool_names=tool_names, steps=steps)


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
            words and words[0].lower() in _NOT_NAMES
        ):  # "The Hague" keeps "Hague"; "In Paris" -> "Paris"
            words = words[1:]
        cleaned = " ".join(words).strip(" '-")
        key = normalize(cleaned)
        if cleaned and key and key not in seen and key not in _NOT_NAMES:
            seen.add(key)
            found.append(cleaned)

    # Titles and names in order of appearance: the best-matching passage comes first.
    for match in _TITLE_OR_NAME.finditer(text):
        add(match.group(1) or match.group(0))
        if len(found) >= limit:
            break
    return found[:limit]
