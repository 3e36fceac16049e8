"""The reference's tool set under its names (tools.paper): real sandboxes, real BM25 indexes, a
real local HTTP search provider, and Python functions as the tools' language models."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from agentflow_env.format import read_calls
from tests.tools.test_web_search import DOCS, KEY, FakeProvider
from tools.base import Tool
from tools.paper import (
    GENERALIST_CARD,
    PYTHON_CODE_GENERATOR_CARD,
    WIKIPEDIA_RAG_CARD,
    GeneralistSolutionGeneratorTool,
    PaperSearchTool,
    PythonCodeGeneratorTool,
    WikipediaRAGSearchTool,
    parse_page_choice,
    search_card,
)
from tools.python_coder import PythonCoderTool
from tools.search import BM25Index, SearchTool, WebSearchTool, WikipediaSearchTool, serve_in_thread
from tools.search.format import NO_ARTICLES

WIKI = [
    {"title": "Moon", "text": "The Moon is Earth's only natural satellite."},
    {"title": "Moon", "text": "The mass of the Moon is about 7.35e22 kilograms."},
    {"title": "Moon landing", "text": "The first crewed Moon landing was Apollo 11 in 1969."},
    {"title": "Kidney", "text": "The kidneys filter blood and make urine."},
    {"title": "Planetary mass", "text": "Planetary mass is the mass of a planet or moon."},
]


@dataclass
class Reply:
    text: str
    error: str | None = None


class Model:
    """A language model as a Python function; records the prompts of every batch."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.batches: list[list[str]] = []

    def generate(self, requests: Sequence[dict[str, Any]]) -> list[Reply]:
        prompts = [r["messages"][-1]["content"] for r in requests]
        self.batches.append(prompts)
        return [self.answer(p) if callable(self.answer) else self.answer for p in prompts]


def test_every_card_carries_the_reference_metadata() -> None:
    cards = [
        GENERALIST_CARD,
        PYTHON_CODE_GENERATOR_CARD,
        WIKIPEDIA_RAG_CARD,
        search_card("Ground_Google_Search_Tool", "local"),
        search_card("Web_Search_Tool", "web"),
    ]
    for card in cards:
        meta = card.metadata()
        assert meta["tool_name"] == card.name and meta["input_types"] and meta["output_type"]
        assert meta["user_metadata"]["limitations"] and meta["user_metadata"]["best_practices"]
        assert len(meta["demo_commands"]) >= 2
        for demo in meta["demo_commands"]:  # the executor's reader takes every demo back
            [call] = read_calls(demo["command"], card.primary_input)
            assert card.primary_input in call.inputs
    assert "no live web access" in search_card("Ground_Google_Search_Tool", "local").description
    assert "web-search API" in search_card("Ground_Google_Search_Tool", "web").description
    with pytest.raises(ValueError, match="no paper search tool"):
        search_card("Bing_Tool", "local")


def test_the_generalist_answers_through_its_model() -> None:
    model = Model(lambda p: Reply(f"answer: {p}"))
    tool = GeneralistSolutionGeneratorTool(model)
    assert isinstance(tool, Tool) and tool.card.name == "Generalist_Solution_Generator_Tool"
    assert tool.execute(query="capital of France?").output == "answer: capital of France?"
    assert not tool.execute(query="").ok


@pytest.fixture(scope="module")
def sandbox() -> Iterator[PythonCoderTool]:
    with PythonCoderTool(timeout_s=5, pool_size=2) as tool:
        yield tool


def test_the_code_generator_writes_and_the_sandbox_runs(sandbox: PythonCoderTool) -> None:
    def coder(prompt: str) -> Reply:
        if "primes" in prompt:
            code = "import sympy\nprint('sum =', sum(sympy.primerange(50)))"
        else:
            code = "import os\nprint('pid', os.getpid())"
        return Reply(f"Here you go:\n```python\n{code}\n```\nDone.")

    model = Model(coder)
    tool = PythonCodeGeneratorTool(model, sandbox)
    assert isinstance(tool, Tool)
    primes, pid = tool.batch_execute(["Sum the primes below 50", "Print your process id"])
    assert len(model.batches) == 1 and len(model.batches[0]) == 2  # one coder call per batch
    assert (
        primes.ok
        and "sum = 328" in primes.output
        and primes.output.startswith("Generated code:\n```python\nimport sympy")
    )
    assert primes.data["code"].startswith("import sympy")
    # The program ran in the sandbox's process, not in this one.
    assert pid.ok and f"pid {os.getpid()}\n" not in pid.output + "\n"
    tool.close()
    assert not sandbox._closed  # a sandbox passed in belongs to the caller


def test_the_code_generator_reports_what_went_wrong(sandbox: PythonCoderTool) -> None:
    replies = iter(
        [
            Reply("I would just add them up."),
            Reply("", error="HTTP 503"),
            Reply("```python\nraise ValueError('bad input')\n```"),
        ]
    )
    tool = PythonCodeGeneratorTool(Model(lambda p: next(replies)), sandbox)
    no_code, engine_down, raised = tool.batch_execute(["a", "b", "c"])
    assert not no_code.ok and "no ```python block" in (no_code.error or "")
    assert not engine_down.ok and "coder model failed" in (engine_down.error or "")
    assert not raised.ok and "ValueError: bad input" in (raised.error or "")
    assert "Generated code" in raised.output
    assert not tool.execute(query=3).ok and not tool.execute(query="x", code="y").ok
    tool.close()
    assert "closed" in (tool.execute(query="x").error or "")


def test_a_local_search_name_says_it_is_local() -> None:
    tool = PaperSearchTool("Ground_Google_Search_Tool", SearchTool(WIKI), "local")
    assert tool.runs_inline and "local BM25" in tool.backend
    result = tool.execute(query="mass of the Moon", add_citations=False)
    assert result.ok and result.output.startswith("Doc 1 (Title: ")
    assert "(Title: Moon) The mass of the Moon is about 7.35e22 kilograms." in result.output
    assert result.data["backend"] == tool.backend
    assert "add_citations must be true or false" in (
        tool.execute(query="x", add_citations="y").error or ""
    )
    assert "unexpected input(s)" in (tool.execute(query="x", url="u").error or "")
    tool.close()


def test_a_web_search_name_over_a_real_http_provider() -> None:
    index = BM25Index.build(DOCS, backend="numpy")
    handler = type("P", (FakeProvider,), {"index": index, "script": [], "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    serve_in_thread(server)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/generic"
        web = WebSearchTool(provider="generic", url=url, api_key=KEY)
        tool = PaperSearchTool("Web_Search_Tool", web, "web")
        assert not tool.runs_inline and tool.backend == "web-search API"
        [a, b] = tool.batch_execute(["who founded Varnok Industries", "Quenport"])
        assert "Elira Tosk" in a.output and "[source: https://example.test/" in a.output
        assert b.ok and a.data["backend"] == "web-search API"
        tool.close()
    finally:
        server.shutdown()
        server.server_close()
        index.close()


def test_wikipedia_rag_picks_pages_and_returns_their_passages() -> None:
    def pick_moon(prompt: str) -> Reply:  # a selector that reads the numbered candidates
        numbers = {
            line.split(". ", 1)[1]: line.split(".")[0]
            for line in prompt.splitlines()
            if line[:1].isdigit()
        }
        return Reply(f"The relevant ones: [{numbers['Moon']}, {numbers['Planetary mass']}]")

    selector = Model(pick_moon)
    tool = WikipediaRAGSearchTool(WikipediaSearchTool(WIKI), selector, max_pages=4)
    result = tool.execute(query="mass of the Moon")
    assert len(selector.batches) == 1 and "Query: mass of the Moon" in selector.batches[0][0]
    assert result.ok and result.data["selection"] == "model"
    assert [p["title"] for p in result.data["relevant_pages"]] == ["Moon", "Planetary mass"]
    lines = result.output.splitlines()
    assert lines[:2] == ["Relevant pages:", "Article 1: Moon"]
    assert "- The mass of the Moon is about 7.35e22 kilograms." in lines
    assert "Article 2: Planetary mass" in lines
    assert lines[-1] == "Other pages (may be irrelevant): Moon landing"
    tool.close()


def test_wikipedia_rag_falls_back_and_reports_failures() -> None:
    replies = iter([Reply("I cannot decide."), Reply("", error="timeout after 30 s")])
    tool = WikipediaRAGSearchTool(WikipediaSearchTool(WIKI), Model(lambda p: next(replies)))
    undecided, down, nothing = tool.batch_execute(["Moon landing", "kidney", "zzzz qqqq"])
    assert undecided.ok and undecided.data["selection"].startswith("fallback")
    assert undecided.output.startswith("Relevant pages:\nArticle 1: Moon landing")
    assert not down.ok and "page selection failed: " in (down.error or "")
    assert nothing.ok and nothing.output == NO_ARTICLES  # no candidate, no selector call
    assert "unknown inputs" in (tool.execute(query="x", top_k=2).error or "")
    with pytest.raises(ValueError, match="max_selected"):
        WikipediaRAGSearchTool(WikipediaSearchTool(WIKI), Model(""), max_pages=2, max_selected=3)
    tool.close()


@pytest.mark.parametrize(
    ("reply", "chosen"),
    [
        ("- Matched Queries: Moon\n- Matched Query IDs: [1]", [1]),
        ("[9, 0, 0, 2, 3]", [0, 2, 3]),  # out of range and repeated ids dropped, at most 3
        ("pages 2 and 1", [2, 1]),
        ("[0] first, then [4]", [4]),  # the last list
        ("none of them", []),
    ],
)
def test_page_choices(reply: str, chosen: list[int]) -> None:
    assert parse_page_choice(reply, count=5, most=3) == chosen
