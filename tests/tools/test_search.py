"""SearchTool / WikipediaSearchTool / BM25Index over real bm25s indexes (no mocks)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.base import Tool, ToolResult
from tools.search import (
    BM25Index,
    IndexSettings,
    Passage,
    SearchTool,
    WikipediaSearchTool,
    load_corpus,
    main,
    numba_available,
)

REPO = Path(__file__).resolve().parents[2]

_SYL = ["ka", "lo", "mi", "ren", "tor", "vak", "sel", "dun", "pri", "zo", "gal", "fen", "ith"]


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYL) for _ in range(3)).capitalize()


def make_world(n: int = 200, seed: int = 7) -> list[dict[str, str]]:
    """Fictional people, each with a unique name, city and employer (deterministic)."""
    rng = random.Random(seed)
    names: set[tuple[str, str]] = set()
    docs: list[dict[str, str]] = []
    while len(docs) < n:
        first, last = _name(rng), _name(rng)
        if (first, last) in names:
            continue
        names.add((first, last))
        city, company = _name(rng), _name(rng) + " Industries"
        docs.append(
            {
                "id": f"p{len(docs)}",
                "title": f"{first} {last}",
                "text": f"{first} {last} was born in {city} and works for {company}.",
            }
        )
    return docs


@pytest.fixture(scope="module")
def world() -> list[dict[str, str]]:
    return make_world()


@pytest.fixture(scope="module")
def tool(world: list[dict[str, str]]) -> Iterator[SearchTool]:
    search = SearchTool(world, top_k=3)
    yield search
    search.close()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory, world: list[dict[str, str]]) -> Path:
    corpus = tmp_path_factory.mktemp("corpus") / "world.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in world), encoding="utf-8")
    out = tmp_path_factory.mktemp("index") / "idx"
    # the real CLI, in a subprocess, as a user would run it
    proc = subprocess.run(
        [sys.executable, "-m", "tools.search", "index", str(corpus), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "indexed" in proc.stdout and "200 passages" in proc.stdout
    return out


# ----------------------------------------------------------------------------- contract


def test_card_and_protocol(tool: SearchTool) -> None:
    assert isinstance(tool, Tool)
    assert tool.card.name == "Search_Tool"
    assert tool.card.primary_input == "query"
    assert set(tool.card.input_types) == {"query"}
    assert "Search_Tool" in tool.card.render()


def test_finds_the_right_passage_for_every_entity(
    tool: SearchTool, world: list[dict[str, str]]
) -> None:
    for doc in world:
        result = tool.execute(query=doc["title"])
        assert result.ok, result.error
        assert result.data["hits"][0]["id"] == doc["id"], doc["title"]


def test_output_lists_numbered_titled_passages(
    tool: SearchTool, world: list[dict[str, str]]
) -> None:
    doc = world[5]
    result = tool.execute(query=f"where was {doc['title']} born")
    lines = result.output.splitlines()
    assert lines[0] == f"Doc 1 (Title: {doc['title']}) {doc['text']}"
    assert [line.split(" ", 2)[1] for line in lines] == [str(i) for i in range(1, len(lines) + 1)]
    hits = result.data["hits"]
    assert len(hits) == len(lines) <= 3
    assert set(hits[0]) >= {"title", "text", "score", "id", "rank"}
    assert hits[0]["text"] == doc["text"]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0


def test_top_k_argument_and_clamping(world: list[dict[str, str]]) -> None:
    small = SearchTool(world[:4], top_k=2)
    shared = "Industries"  # every document contains it
    assert len(small.execute(query=shared).data["hits"]) == 2
    assert len(small.execute(query=shared, top_k=4).data["hits"]) == 4
    # more than the corpus holds: clamped, not an error
    assert len(small.execute(query=shared, top_k=40).data["hits"]) == 4
    assert small.execute(query=shared, top_k="3").ok  # planners write numbers as text


def test_deterministic_across_instances(world: list[dict[str, str]], index_dir: Path) -> None:
    queries = [d["title"].split()[0] + " Industries born" for d in world[:40]]
    first = SearchTool(world).batch_execute(queries)
    second = SearchTool(list(reversed(list(reversed(world))))).batch_execute(queries)
    with SearchTool(index_dir=index_dir) as disk:
        from_disk = disk.batch_execute(queries)
    assert [r.output for r in first] == [r.output for r in second] == [r.output for r in from_disk]


def test_no_match_is_ok_with_no_hits(tool: SearchTool) -> None:
    for query in ("qwxzv plokj", "the of and", "!!! ???"):
        result = tool.execute(query=query)
        assert result.ok and result.data["hits"] == []
        assert result.output == "No passages matched the query."


def test_stemming_matches_word_forms() -> None:
    search = SearchTool(
        [
            {"title": "A", "text": "the industries of Quenport"},
            {"title": "B", "text": "a river in Mardale"},
        ]
    )
    assert search.execute(query="industry").data["hits"][0]["title"] == "A"
    plain = SearchTool(
        [
            {"title": "A", "text": "the industries of Quenport"},
            {"title": "B", "text": "a river in Mardale"},
        ],
        settings=IndexSettings(stemmer=None),
    )
    assert plain.execute(query="industry").data["hits"] == []


def test_long_passages_are_clipped_in_output_only() -> None:
    text = "alpha " * 500
    search = SearchTool([{"title": "Long", "text": text}], max_chars_per_passage=100)
    result = search.execute(query="alpha")
    line = result.output
    assert len(line) <= len("Doc 1 (Title: Long) ") + 100 and line.endswith("...")
    assert result.data["hits"][0]["text"] == text


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"query": ""}, "empty"),
        ({"query": "   \n\t"}, "empty"),
        ({"query": None}, "must be a string"),
        ({"query": 42}, "must be a string"),
        ({"query": b"bytes"}, "must be a string"),
        ({"query": ["a", "b"]}, "must be a string"),
        ({"query": "x" * 2001}, "too long"),
        ({"query": "ok", "top_k": 0}, "top_k"),
        ({"query": "ok", "top_k": 51}, "top_k"),
        ({"query": "ok", "top_k": "many"}, "top_k"),
        ({"query": "ok", "top_k": True}, "top_k"),
        ({"query": "ok", "filter": "x"}, "unexpected input"),
        ({}, "must be a string"),
    ],
)
def test_bad_input_gives_error_result(tool: SearchTool, inputs: dict, message: str) -> None:
    result = tool.execute(**inputs)
    assert isinstance(result, ToolResult)
    assert not result.ok and message in (result.error or "")
    assert result.as_text().startswith("Error: ")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
        st.integers(),
        st.none(),
    )
)
def test_fuzzed_queries_never_raise(tool: SearchTool, query: object) -> None:
    result = tool.execute(query=query)
    assert isinstance(result, ToolResult)
    assert result.ok or result.error


def test_constructor_errors(world: list[dict[str, str]], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        SearchTool()
    with pytest.raises(ValueError, match="exactly one"):
        SearchTool(world, corpus_path=tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="empty corpus"):
        SearchTool([])
    with pytest.raises(TypeError, match="corpus_path"):
        SearchTool("corpus.jsonl")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mapping or a Passage"):
        SearchTool(["just a string"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="neither 'text' nor 'contents'"):
        SearchTool([{"title": "no text"}])
    with pytest.raises(FileNotFoundError, match="not a search index"):
        SearchTool(index_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        SearchTool(corpus_path=tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="top_k"):
        SearchTool(world, top_k=0)
    with pytest.raises(ValueError, match="stemmer language"):
        SearchTool(world, settings=IndexSettings(stemmer="klingon"))


def test_closed_tool_returns_errors(world: list[dict[str, str]]) -> None:
    search = SearchTool(world[:10])
    search.close()
    search.close()  # idempotent
    result = search.execute(query="Industries")
    assert not result.ok and "closed" in (result.error or "")


# ----------------------------------------------------------------------------- batching


def test_batch_matches_single_and_uses_one_retrieval(world: list[dict[str, str]]) -> None:
    search = SearchTool(world)
    queries = [d["title"] for d in world[:30]] + ["", 7, "qwxzv"]
    singles = [search.execute(query=q) for q in queries]
    calls = []
    real_retrieve = search.index._retriever.retrieve

    def counting_retrieve(*args, **kwargs):  # a spy around the real bm25s call
        calls.append(len(args[0]))
        return real_retrieve(*args, **kwargs)

    search.index._retriever.retrieve = counting_retrieve
    batch = search.batch_execute(queries)
    assert calls == [30]  # one call; invalid and no-known-word queries never reach bm25s
    assert [r.model_dump() for r in batch] == [r.model_dump() for r in singles]
    assert [r.ok for r in batch[-3:]] == [False, False, True]


def test_concurrent_callers_get_serial_results(
    tool: SearchTool, world: list[dict[str, str]]
) -> None:
    queries = [d["title"] + " born" for d in world[:60]]
    expected = [tool.execute(query=q).output for q in queries]
    got: dict[int, str] = {}

    def worker(offset: int) -> None:
        for i in range(offset, len(queries), 4):
            got[i] = tool.execute(query=queries[i]).output

    threads = [threading.Thread(target=worker, args=(o,)) for o in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [got[i] for i in range(len(queries))] == expected


# ----------------------------------------------------------------------------- index on disk


def test_saved_index_is_memory_mapped(index_dir: Path, world: list[dict[str, str]]) -> None:
    files = {p.name for p in index_dir.iterdir()}
    assert {
        "agentflow_search.json",
        "passages.jsonl",
        "passages.offsets.npy",
        "data.csc.index.npy",
        "vocab.index.json",
    } <= files
    search = SearchTool(index_dir=index_dir)
    assert isinstance(search.index._retriever.scores["data"], np.memmap)
    assert search.num_passages == len(world)
    assert search.index.passage(3) == Passage(**world[3])
    assert search.execute(query=world[9]["title"]).data["hits"][0]["id"] == world[9]["id"]
    search.close()


def test_build_index_api_and_search_r1_contents(tmp_path: Path) -> None:
    corpus = tmp_path / "wiki.jsonl"
    rows = [
        {"id": 0, "contents": '"Orvessa Lake"\nOrvessa Lake lies in Belvaria.'},
        {"id": "1", "contents": '"Tosk"\nTosk is a river.\nIt is long.'},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    passages = load_corpus(corpus)
    assert passages[0] == Passage(
        id="0", title="Orvessa Lake", text="Orvessa Lake lies in Belvaria."
    )
    assert passages[1].text == "Tosk is a river.\nIt is long."
    out = SearchTool.build_index(corpus, tmp_path / "idx")
    search = SearchTool(index_dir=out, top_k=1)
    assert (
        search.execute(query="river").output == "Doc 1 (Title: Tosk) Tosk is a river. It is long."
    )
    search.close()
    assert SearchTool(corpus_path=corpus).execute(query="Belvaria").data["hits"][0]["id"] == "0"


def test_corpus_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "a", "text": "b"}\n{not json}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        load_corpus(bad)
    bad.write_text('{"title": "a", "text": "b"}\n{"title": "c"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*neither"):
        load_corpus(bad)


def test_cli_query_and_errors(
    index_dir: Path, world: list[dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["query", str(index_dir), world[0]["title"], "--top-k", "1"]) == 0
    assert world[0]["text"] in capsys.readouterr().out
    assert main(["index", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "corpus file not found" in capsys.readouterr().err


def test_index_format_version_is_checked(index_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(index_dir, copy)
    meta = json.loads((copy / "agentflow_search.json").read_text())
    meta["format_version"] = 99
    (copy / "agentflow_search.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format 99"):
        BM25Index.load(copy)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_numba_backend_agrees_with_numpy(index_dir: Path, world: list[dict[str, str]]) -> None:
    # compiles bm25s's numba kernels (~5 s): the auto backend only does this for large corpora
    queries = [d["title"] + " Industries" for d in world[:50]] + ["qwxzv"]
    with (
        SearchTool(index_dir=index_dir, backend="numba") as fast,
        SearchTool(index_dir=index_dir, backend="numpy") as plain,
    ):
        assert fast.index.backend == "numba" and plain.index.backend == "numpy"
        for a, b in zip(fast.batch_execute(queries), plain.batch_execute(queries), strict=False):
            assert a.output == b.output
            assert a.data["hits"] == b.data["hits"]


# ----------------------------------------------------------------------------- wikipedia


def test_wikipedia_groups_passages_by_article() -> None:
    dump = [
        {"title": "Orvessa", "text": "Orvessa is a lake in Belvaria."},
        {"title": "Orvessa", "text": "The lake Orvessa freezes in winter."},
        {"title": "Orvessa", "text": "Fishing on Orvessa lake is popular."},
        {"title": "Belvaria", "text": "Belvaria has many a lake, the largest is Orvessa."},
        {"title": "Mardale", "text": "Mardale is a town far from any lake."},
    ]
    wiki = WikipediaSearchTool(dump, top_k=2, passages_per_article=2)
    assert wiki.card.name == "Wikipedia_Search_Tool"
    result = wiki.execute(query="Orvessa lake")
    assert result.ok
    articles = result.data["articles"]
    assert [a["title"] for a in articles] == ["Orvessa", "Belvaria"]
    assert len(articles[0]["passages"]) == 2
    lines = result.output.splitlines()
    assert lines[0] == "Article 1: Orvessa" and lines[1].startswith("- ")
    assert "Article 2: Belvaria" in lines
    assert "Article 3" not in result.output
    assert not wiki.execute(query="").ok
    assert wiki.execute(query="qwxzv").output == "No articles matched the query."


def test_ties_are_broken_by_corpus_order() -> None:
    # 30 identical passages: every score ties, far beyond the candidate margin
    docs = [{"id": f"d{i}", "title": "Same", "text": "identical words here"} for i in range(30)]
    search = SearchTool(docs, top_k=3)
    assert [h["id"] for h in search.execute(query="identical").data["hits"]] == ["d0", "d1", "d2"]


def test_batch_execute_rejects_a_bare_string(tool: SearchTool) -> None:
    results = tool.batch_execute("Industries")  # type: ignore[arg-type]
    assert len(results) == 1 and not results[0].ok and "list of strings" in (results[0].error or "")
    assert tool.batch_execute([]) == []
