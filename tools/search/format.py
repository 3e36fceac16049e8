"""The text the search tools print, written and read in one place.

Passages (``Search_Tool``, the retrieval-server and web search tools), best first, one a line::

    Doc 1 (Title: <title>) <text> [source: <url>]

Articles (``Wikipedia_Search_Tool``), best first, each with its best passages::

    Article 1: <title>
    - <passage>

Selected articles (``Wikipedia_RAG_Search_Tool``): the chosen articles as above under a heading,
then the other candidates' titles on one line::

    Relevant pages:
    Article 1: <title>
    - <passage>
    Other pages (may be irrelevant): <title> | <title>

Writers: :func:`render_passages`, :func:`render_articles`, :func:`render_selected_articles`
(texts clipped to one line by :func:`clip`; :data:`NO_PASSAGES` / :data:`NO_ARTICLES` when
nothing matched). Readers:
:func:`passage_titles` (every ``(Title: ...)``, in order), :func:`top_passage` (the first line) and
:func:`first_hit_title`, which also reads other common listings (``[1] X: ...``, ``1. X: ...``,
``Title: X``) so that it works with foreign search tools. A title may contain balanced
parentheses one level deep (``Mercury (planet)``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tools.search.passages import SearchHit

__all__ = [
    "NO_ARTICLES",
    "NO_PASSAGES",
    "TITLE_PATTERN",
    "clip",
    "first_hit_title",
    "passage_titles",
    "render_articles",
    "render_passages",
    "render_selected_articles",
    "top_passage",
]

NO_PASSAGES = "No passages matched the query."
NO_ARTICLES = "No articles matched the query."
UNTITLED = "(untitled)"
TITLE_PATTERN = r"\(Title:\s*((?:[^()\n]|\([^()\n]*\))+|[^)\n]+)\)"
"""``(Title: X)`` with X in its only group: balanced parentheses one level deep, else up to the
first ``)``"""
_TITLE = re.compile(TITLE_PATTERN)
# Our own formats first, then listings of other search tools, in order of preference.
_HIT_PATTERNS = (
    re.compile(r"^\s*Doc\s*\d+\s*" + TITLE_PATTERN, re.IGNORECASE | re.MULTILINE),
    re.compile(r"^\s*\[\d+\]\s*(?:\(Title:\s*)?([^:\n()]+?)\s*[:)]", re.MULTILINE),
    re.compile(r"^\s*Article\s*\d+\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE),
    re.compile(r"^\s*\d+[.)]\s*([^:\n]+?)\s*:", re.MULTILINE),
    re.compile(r"Title:\s*\"?([^\"\n)]+?)\"?\s*(?:\)|$|\n)", re.IGNORECASE | re.MULTILINE),
)


# ----------------------------------------------------------------------------------- writers
def clip(text: str, limit: int) -> str:
    """Whitespace collapsed to single spaces, cut at ``limit`` characters with a marker."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(limit - 3, 0)].rstrip() + "..."


def _one_line(title: str) -> str:
    """A title with line breaks gets its whitespace collapsed (one passage a line)."""
    return title if title.splitlines() == [title] else " ".join(title.split())


def render_passages(hits: Sequence[SearchHit], max_chars: int) -> str:
    """One ``Doc i (Title: ...) text [source: url]`` line per hit (texts clipped to
    ``max_chars``), or :data:`NO_PASSAGES`."""
    if not hits:
        return NO_PASSAGES
    lines = []
    for hit in hits:
        title = f" (Title: {_one_line(hit.title)})" if hit.title else ""
        source = f" [source: {hit.url}]" if hit.url else ""
        lines.append(f"Doc {hit.rank}{title} {clip(hit.text, max_chars)}{source}")
    return "\n".join(lines)


def render_articles(articles: Sequence[tuple[str, Sequence[SearchHit]]], max_chars: int) -> str:
    """``Article i: title`` then one ``- passage`` line per hit, for each (title, hits), or
    :data:`NO_ARTICLES`."""
    if not articles:
        return NO_ARTICLES
    lines = []
    for i, (title, group) in enumerate(articles, start=1):
        lines.append(f"Article {i}: {_one_line(title) or UNTITLED}")
        lines.extend(f"- {clip(h.text, max_chars)}" for h in group)
    return "\n".join(lines)


RELEVANT_PAGES = "Relevant pages:"
OTHER_PAGES = "Other pages (may be irrelevant):"


def render_selected_articles(
    relevant: Sequence[tuple[str, Sequence[SearchHit]]], others: Sequence[str], max_chars: int
) -> str:
    """The articles a selector chose (as :func:`render_articles`) under ``Relevant pages:``,
    then the other candidates' titles on one ``Other pages (may be irrelevant):`` line."""
    text = f"{RELEVANT_PAGES}\n{render_articles(relevant, max_chars)}"
    if others:
        text += f"\n{OTHER_PAGES} " + " | ".join(_one_line(t) or UNTITLED for t in others)
    return text


# ----------------------------------------------------------------------------------- readers
def passage_titles(result: str) -> list[str]:
    """Every passage title (``(Title: X)``) in a search result, in order, stripped."""
    return [t.strip() for t in _TITLE.findall(result)]


def top_passage(result: str) -> str:
    """The first non-empty line of a result: the best hit (one passage a line)."""
    for line in result.splitlines():
        if line.strip():
            return line
    return ""


def first_hit_title(result: str) -> str | None:
    """The title of the first passage in a search result, parsed leniently; None if none."""
    for pattern in _HIT_PATTERNS:
        match = pattern.search(result or "")
        if match and match.group(1).strip():
            return match.group(1).strip()
    return None
