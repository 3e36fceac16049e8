"""The search tools' text format: what the writers print, the readers read back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tools.search.format import (
    NO_ARTICLES,
    NO_PASSAGES,
    first_hit_title,
    passage_titles,
    render_articles,
    render_passages,
    top_passage,
)
from tools.search.passages import SearchHit

word = st.text(
    st.characters(blacklist_characters="()\n\r", blacklist_categories=("Cs",)), min_size=1
).filter(lambda w: w.strip() and "Title" not in w)
# Titles: words, optionally with one balanced parenthesis ("Mercury (planet)").
title = st.tuples(word, st.none() | word).map(lambda p: p[0] + (f" ({p[1]})" if p[1] else ""))
passage = st.text(max_size=80).filter(lambda t: "(Title" not in t)


def _read(title: str) -> str:
    """A title as the readers give it back: stripped; with line breaks, whitespace collapsed."""
    return (title if title.splitlines() == [title] else " ".join(title.split())).strip()


def _hits(titles: list[str], texts: list[str], urls: bool) -> list[SearchHit]:
    return [
        SearchHit(
            rank=i, id=str(i), title=t, text=x, score=1.0, url=f"https://x/{i}" if urls else None
        )
        for i, (t, x) in enumerate(zip(titles, texts, strict=False), start=1)
    ]


@settings(max_examples=200, deadline=None)
@given(
    titles=st.lists(title, min_size=1, max_size=5),
    texts=st.lists(passage, min_size=5, max_size=5),
    urls=st.booleans(),
)
def test_passages_read_back(titles: list[str], texts: list[str], urls: bool) -> None:
    hits = _hits(titles, texts, urls)
    out = render_passages(hits, max_chars=60)
    assert len(out.splitlines()) == len(hits), "one passage a line"
    assert passage_titles(out) == [_read(t) for t in titles]
    assert first_hit_title(out) == _read(titles[0])
    assert top_passage(out) == out.splitlines()[0]


@settings(max_examples=100, deadline=None)
@given(titles=st.lists(title, min_size=1, max_size=4), texts=st.lists(passage, min_size=4))
def test_articles_read_back(titles: list[str], texts: list[str]) -> None:
    hits = _hits(titles, texts, urls=False)
    out = render_articles([(h.title, [h, h]) for h in hits], max_chars=60)
    assert first_hit_title(out) == _read(titles[0])
    assert out.splitlines()[0].startswith("Article 1: ")


def test_nothing_found_and_foreign_listings() -> None:
    assert render_passages([], 10) == NO_PASSAGES and first_hit_title(NO_PASSAGES) is None
    assert render_articles([], 10) == NO_ARTICLES and passage_titles(NO_ARTICLES) == []
    assert first_hit_title("[1] Zorvan Kell: born in ...") == "Zorvan Kell"
    assert first_hit_title("1. Zorvan Kell: born") == "Zorvan Kell"
    assert first_hit_title("Doc 1 (Title: Foo (bar) text") == "Foo (bar", "unbalanced: to first )"
    hit = SearchHit(rank=1, id="1", title="Two\nlines", text="a\n b", score=1.0)
    assert render_passages([hit], 10) == "Doc 1 (Title: Two lines) a b"
