"""The reference's tool set, under the names its planner was trained on.

The released planner (``agentflow-planner-7b``) chooses among four tools by these names; here each
is this project's own tool behind that name, with a card carrying the same kinds of metadata
(inputs, output, demo commands, limitations, best practices):

- ``Generalist_Solution_Generator_Tool``: an LLM answers a sub-query
  (:class:`GeneralistSolutionGeneratorTool`, a :class:`~tools.generator.BaseGeneratorTool`);
- ``Python_Code_Generator_Tool``: takes a natural-language query; its own coder LLM writes the
  program and the sandbox runs it (:mod:`tools.sandbox`), never in-process
  (:class:`PythonCodeGeneratorTool`);
- ``Ground_Google_Search_Tool`` and ``Web_Search_Tool``: search through a web-search API
  (:class:`~tools.search.WebSearchTool`), or offline through the local BM25 index
  (:class:`~tools.search.SearchTool`), the card and :attr:`PaperSearchTool.backend` saying which
  (:func:`search_card`, :class:`PaperSearchTool`);
- ``Wikipedia_RAG_Search_Tool``: BM25 over a local Wikipedia-style dump, an LLM picks the relevant
  pages, the tool returns their best passages (:class:`WikipediaRAGSearchTool`).

LLM-backed tools take any :class:`~tools.base.TextGenerator` and a ``request_factory``, as
:class:`~tools.generator.BaseGeneratorTool` does (``tools`` never imports the engines).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from tools.base import TextGenerator, ToolCard, ToolDemo, ToolResult
from tools.generator import BaseGeneratorTool, RequestFactory
from tools.python_coder import PythonCoderTool
from tools.search.base import BaseSearchTool
from tools.search.format import render_selected_articles
from tools.search.local import WikipediaSearchTool
from tools.search.passages import SearchHit

__all__ = [
    "GENERALIST_CARD",
    "PAPER_TOOL_NAMES",
    "PYTHON_CODE_GENERATOR_CARD",
    "WIKIPEDIA_RAG_CARD",
    "GeneralistSolutionGeneratorTool",
    "PaperSearchTool",
    "PythonCodeGeneratorTool",
    "WikipediaRAGSearchTool",
    "parse_page_choice",
    "search_card",
]

PAPER_TOOL_NAMES = (
    "Generalist_Solution_Generator_Tool",
    "Python_Code_Generator_Tool",
    "Ground_Google_Search_Tool",
    "Wikipedia_RAG_Search_Tool",
)
"""the four tools the reference trained its planner with, in its order"""

GENERALIST_CARD = ToolCard(
    name="Generalist_Solution_Generator_Tool",
    description=(
        "A general-purpose language model that answers a query step by step from its own "
        "knowledge. It sees only the query: no search, no code execution, no earlier steps."
    ),
    input_types={
        "query": "str - the question or instruction, with every piece of context the model needs"
    },
    output_type="str - the model's answer",
    demo_commands=(
        ToolDemo(
            command="Summarize the following passage in two sentences: <passage>",
            description="condense text found in an earlier step",
        ),
        ToolDemo(
            command="What is the boiling point of water at sea level, in degrees Celsius?",
            description="answer a general-knowledge question",
        ),
    ),
    limitations=(
        "It may give wrong or invented answers with confidence.",
        "It cannot search, run code, or see earlier steps unless they are written in the query.",
    ),
    best_practices=(
        "Use it for general questions and for tasks no specialised tool covers.",
        "Write a clear, specific query that includes all the context it needs.",
        "Split a complex task into several smaller queries.",
        "Check important facts with a search tool.",
    ),
)


class GeneralistSolutionGeneratorTool(BaseGeneratorTool):
    """``Generalist_Solution_Generator_Tool``: an LLM answers a sub-query (same arguments as
    :class:`~tools.generator.BaseGeneratorTool`)."""

    card: ToolCard = GENERALIST_CARD


# ----------------------------------------------------------------------------- code tool
PYTHON_CODE_GENERATOR_CARD = ToolCard(
    name="Python_Code_Generator_Tool",
    description=(
        "Writes a short Python program for a calculation or math problem described in words, "
        "runs it in an isolated sandbox and returns the program with what it printed."
    ),
    input_types={
        "query": "str - a precise description of the calculation, with every number and value "
        "it needs"
    },
    output_type="str - the generated program, its printed output and simple variables, or the "
    "error",
    demo_commands=(
        ToolDemo(
            command="Find the sum of all prime numbers below 50",
            description="a program computes and prints the sum",
        ),
        ToolDemo(
            command="Given the list [3, 8, 1, 9], compute the mean of the squares of its items",
            description="all the data is in the query",
        ),
    ),
    limitations=(
        "A language model writes the program from the description and can misread the task.",
        "No network or files; only the standard library plus numpy and sympy; time, memory and "
        "output are limited.",
        "Only what the program prints (and simple top-level variables) comes back.",
    ),
    best_practices=(
        "Describe one calculation precisely and put every input value in the query.",
        "Ask for the result to be printed with a short label.",
        "Use it for arithmetic, counting, algebra and checking candidate answers, not for "
        "looking facts up.",
    ),
)

_CODER_PROMPT = (
    "Write a short Python 3 program that solves the task below. Work it out step by step in "
    "the code, print the final result with a short label saying what it is, and use only the "
    "standard library, numpy or sympy. Reply with the program in one ```python block.\n\n"
    "Task: {query}"
)
_CODE_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.I)


class PythonCodeGeneratorTool:
    """``Python_Code_Generator_Tool``: a coder LLM writes a program for a query; the sandbox
    runs it.

    Args:
        engine: the coder model (any :class:`~tools.base.TextGenerator`).
        sandbox: a :class:`~tools.python_coder.PythonCoderTool` to run the programs (not closed
            here); default: one built from ``sandbox_options`` and closed by :meth:`close`.
        request_factory, temperature, max_tokens: as :class:`~tools.generator.BaseGeneratorTool`
            (the coder runs greedy by default, as the reference's did).
        max_query_chars: longer queries get an error result.
    """

    card: ToolCard = PYTHON_CODE_GENERATOR_CARD

    def __init__(
        self,
        engine: TextGenerator,
        sandbox: PythonCoderTool | None = None,
        *,
        request_factory: RequestFactory | None = None,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        max_query_chars: int = 8_000,
        sandbox_options: dict[str, Any] | None = None,
    ) -> None:
        self._coder = BaseGeneratorTool(
            engine,
            request_factory=request_factory,
            temperature=temperature,
            max_tokens=max_tokens,
            max_query_chars=max_query_chars + len(_CODER_PROMPT),
            max_output_chars=200_000,
        )
        self.max_query_chars = max_query_chars
        self._owns_sandbox = sandbox is None
        self.sandbox = sandbox or PythonCoderTool(**(sandbox_options or {}))
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="code-gen")
        self._closed = False

    def execute(self, query: Any = None, **extra: Any) -> ToolResult:
        """Write and run a program for ``query``. Never raises."""
        if extra:
            return ToolResult.failure(
                f"unknown inputs {sorted(extra)}; {self.card.name} takes only 'query'"
            )
        return self.batch_execute([query])[0]

    def batch_execute(self, queries: Sequence[Any]) -> list[ToolResult]:
        """One coder call for the whole batch, then the programs run concurrently."""
        if self._closed:
            return [ToolResult.failure(f"{self.card.name} is closed") for _ in queries]
        results: list[ToolResult | None] = [None] * len(queries)
        asked: list[int] = []
        for i, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                results[i] = ToolResult.failure("query must be a non-empty description")
            elif len(query) > self.max_query_chars:
                results[i] = ToolResult.failure(
                    f"query is {len(query)} characters; the limit is {self.max_query_chars}"
                )
            else:
                asked.append(i)
        replies = self._coder.batch_execute([_CODER_PROMPT.format(query=queries[i]) for i in asked])
        runs = {}
        for i, reply in zip(asked, replies, strict=True):
            if not reply.ok:
                results[i] = ToolResult.failure(f"the coder model failed: {reply.error}")
                continue
            block = _CODE_BLOCK.search(reply.output)
            if block is None or not block.group(1).strip():
                results[i] = ToolResult.failure(
                    "the coder model wrote no ```python block", reply=reply.output[:2000]
                )
                continue
            runs[i] = self._pool.submit(self._run, block.group(1))
        for i, future in runs.items():
            results[i] = future.result()
        return [r if r is not None else ToolResult.failure("no result") for r in results]

    def _run(self, code: str) -> ToolResult:
        ran = self.sandbox.execute(code=code)
        shown = f"Generated code:\n```python\n{code.strip(chr(10))}\n```\n\n{ran.output}".rstrip()
        return ToolResult(
            ok=ran.ok, output=shown, error=ran.error, data={"code": code, "run": ran.data}
        )

    def close(self) -> None:
        """Stop the worker threads and, when this tool built it, the sandbox. Idempotent."""
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)
            if self._owns_sandbox:
                self.sandbox.close()


# ----------------------------------------------------------------------------- search tools
Backend = Literal["local", "web"]

_SEARCH_TEXT = {
    "Ground_Google_Search_Tool": "Searches for general information about a topic",
    "Web_Search_Tool": "Searches the web for pages about a query",
}
_BACKEND_TEXT = {
    "web": " through a web-search API and returns the top results with their titles, snippets "
    "and source URLs.",
    "local": " in a local document collection with BM25 keyword matching and returns the best "
    "passages with their titles. Offline stand-in for the reference's web search: it has no "
    "live web access.",
}
BACKEND_NOTES = {
    "web": "web-search API",
    "local": "local BM25 index (offline stand-in for web search)",
}
"""what :attr:`PaperSearchTool.backend` says, per backend"""


def search_card(name: str, backend: Backend) -> ToolCard:
    """The card of a paper search tool (``Ground_Google_Search_Tool`` or ``Web_Search_Tool``)
    for its backend: the description says whether it searches the web or a local index."""
    if name not in _SEARCH_TEXT or backend not in _BACKEND_TEXT:
        raise ValueError(
            f"no paper search tool {name!r} with backend {backend!r}: names "
            f"{sorted(_SEARCH_TEXT)}, backends {sorted(_BACKEND_TEXT)}"
        )
    inputs = {"query": "str - the search query: a question or the names and keywords to find"}
    demos = [
        ToolDemo(command="What is the capital of Australia?", description="a general question"),
        ToolDemo(command="2018 FIFA World Cup winner", description="a fact about an event"),
    ]
    if name == "Ground_Google_Search_Tool":
        inputs["add_citations"] = (
            "bool - accepted for compatibility; the results always name their sources (optional)"
        )
        demos[1] = demos[1].model_copy(update={"inputs": {"add_citations": False}})
    limitations = ["Best for general information; it holds little domain-specific knowledge."]
    if backend == "local":
        limitations.append("Only the local collection is searched, by keyword overlap.")
    else:
        limitations.append("Snippets are short and depend on a live external service.")
    return ToolCard(
        name=name,
        description=_SEARCH_TEXT[name] + _BACKEND_TEXT[backend],
        input_types=inputs,
        output_type="str - numbered results: 'Doc i (Title: ...) text [source: url]'",
        demo_commands=tuple(demos),
        limitations=tuple(limitations),
        best_practices=(
            "Ask one specific question or name the entities you are looking for.",
            "Use it for definitions, world knowledge and general facts; search one fact at a time.",
        ),
    )


class PaperSearchTool:
    """A paper search name (``Ground_Google_Search_Tool``, ``Web_Search_Tool``) over one of this
    project's search tools; results are the backend's, with ``data["backend"]`` set.

    Args:
        name: the tool name.
        search: the backend tool (a :class:`~tools.search.WebSearchTool` or a local
            :class:`~tools.search.SearchTool`); closed by :meth:`close`.
        backend: ``"web"`` or ``"local"``: chooses the card and :attr:`backend`.
    """

    def __init__(self, name: str, search: BaseSearchTool, backend: Backend) -> None:
        self.card = search_card(name, backend)
        self.search = search
        self.backend = BACKEND_NOTES[backend]
        """what answers this tool's queries (the env reports it in ``info``)"""
        # A local index answers inline (bounded, no external call); a web API does not.
        self.runs_inline = bool(getattr(search, "runs_inline", False))

    def execute(self, query: Any = None, add_citations: Any = None, **extra: Any) -> ToolResult:
        """Search for ``query``; ``add_citations`` is accepted and ignored (sources are always
        shown). Never raises."""
        if add_citations is not None and not isinstance(add_citations, bool):
            return ToolResult.failure(f"add_citations must be true or false, got {add_citations!r}")
        if extra:
            allowed = ", ".join(self.card.input_types)
            return ToolResult.failure(
                f"unexpected input(s) for {self.card.name}: {', '.join(sorted(extra))}; "
                f"expected: {allowed}"
            )
        return self.batch_execute([query])[0]

    def batch_execute(self, queries: Sequence[Any]) -> list[ToolResult]:
        results = self.search.batch_execute(queries)
        for result in results:
            result.data["backend"] = self.backend
        return results

    def close(self) -> None:
        self.search.close()


# ----------------------------------------------------------------------------- Wikipedia RAG
WIKIPEDIA_RAG_CARD = ToolCard(
    name="Wikipedia_RAG_Search_Tool",
    description=(
        "Searches a local Wikipedia-style dump, lets a language model pick the pages relevant to "
        "the query, and returns their most relevant passages; other matching page titles are "
        "listed too."
    ),
    input_types={"query": "str - the search query: a question or the subject to look up"},
    output_type="str - the relevant pages with their best passages, then other matching titles",
    demo_commands=(
        ToolDemo(command="mass of the Moon in kilograms", description="a fact from one page"),
        ToolDemo(command="function of the human kidney", description="a topic overview"),
        ToolDemo(command="When was the first crewed Moon landing?", description="a dated event"),
    ),
    limitations=(
        "Only the pages of the local dump are searched; it may be incomplete or out of date.",
        "Which pages count as relevant depends on the language model's choice.",
    ),
    best_practices=(
        "Use a specific query that names the subject.",
        "If the relevant pages miss something, the other matching titles suggest a follow-up "
        "query.",
        "Use it as one step of a multi-step search, not as the only source.",
    ),
)

_PICK_PROMPT = (
    "Which of these Wikipedia pages are most likely to contain the answer to the query? Pick "
    "at least one and at most {most}.\n\nQuery: {query}\n\nPages:\n{pages}\n\n"
    "Reply with the chosen page numbers as a JSON list, for example [0, 2]."
)
_INT_LIST = re.compile(r"\[\s*-?\d+(?:\s*,\s*-?\d+)*\s*,?\s*\]")


def parse_page_choice(text: str, count: int, most: int) -> list[int]:
    """The page numbers a selector model chose: its last JSON list of integers, else every
    integer in the reply; out-of-range and repeated numbers dropped, at most ``most`` kept."""
    lists = _INT_LIST.findall(text)
    numbers: list[int] = []
    if lists:
        numbers = [int(x) for x in json.loads(lists[-1])]
    else:
        numbers = [int(x) for x in re.findall(r"(?<![\w.])\d{1,4}(?![\w.])", text)]
    chosen: list[int] = []
    for n in numbers:
        if 0 <= n < count and n not in chosen:
            chosen.append(n)
    return chosen[:most]


class WikipediaRAGSearchTool:
    """``Wikipedia_RAG_Search_Tool``: retrieve pages by BM25, let an LLM pick the relevant
    ones, return their passages.

    Args:
        wiki: the local dump's :class:`~tools.search.WikipediaSearchTool` (closed by
            :meth:`close`); its ``passages_per_article`` sets the passages shown per page.
        engine: the selector model (any :class:`~tools.base.TextGenerator`).
        request_factory: as :class:`~tools.generator.BaseGeneratorTool`.
        max_pages: candidate pages retrieved per query (the reference: 10).
        max_selected: pages the selector may choose (the reference: 3).

    When the selector's reply names no valid page, the best BM25 page is used and
    ``data["selection"]`` says so (the reference then returned no relevant page at all); an
    engine failure is an error result.
    """

    card: ToolCard = WIKIPEDIA_RAG_CARD

    def __init__(
        self,
        wiki: WikipediaSearchTool,
        engine: TextGenerator,
        *,
        request_factory: RequestFactory | None = None,
        max_pages: int = 10,
        max_selected: int = 3,
        max_tokens: int = 256,
    ) -> None:
        if not 1 <= max_selected <= max_pages <= wiki.max_top_k:
            raise ValueError(
                f"need 1 <= max_selected ({max_selected}) <= max_pages ({max_pages}) <= "
                f"{wiki.max_top_k}"
            )
        self.wiki = wiki
        self.max_pages = max_pages
        self.max_selected = max_selected
        self._selector = BaseGeneratorTool(
            engine, request_factory=request_factory, max_tokens=max_tokens, max_query_chars=50_000
        )

    def execute(self, query: Any = None, **extra: Any) -> ToolResult:
        """Search, select and return the relevant pages. Never raises."""
        if extra:
            return ToolResult.failure(
                f"unknown inputs {sorted(extra)}; {self.card.name} takes only 'query'"
            )
        return self.batch_execute([query])[0]

    def batch_execute(self, queries: Sequence[Any]) -> list[ToolResult]:
        """One retrieval and one selector call for the whole batch."""
        found = self.wiki.batch_execute(queries, top_k=self.max_pages)
        pending = [i for i, r in enumerate(found) if r.ok and r.data.get("articles")]
        prompts = [self._pick_prompt(queries[i], found[i].data["articles"]) for i in pending]
        replies = dict(zip(pending, self._selector.batch_execute(prompts), strict=True))
        out = []
        for i, result in enumerate(found):
            if i not in replies:  # an error result, or no page matched: shown as it is
                out.append(result)
                continue
            out.append(self._answer(str(queries[i]), result.data["articles"], replies[i]))
        return out

    def _pick_prompt(self, query: Any, articles: list[dict[str, Any]]) -> str:
        pages = "\n".join(f"{k}. {a['title']}" for k, a in enumerate(articles))
        return _PICK_PROMPT.format(most=self.max_selected, query=query, pages=pages)

    def _answer(self, query: str, articles: list[dict[str, Any]], reply: ToolResult) -> ToolResult:
        if not reply.ok:
            return ToolResult.failure(f"page selection failed: {reply.error}", query=query)
        chosen = parse_page_choice(reply.output, len(articles), self.max_selected)
        selection = "model"
        if not chosen:
            chosen, selection = [0], "fallback: the selector named no valid page; best BM25 page"

        def hits(article: dict[str, Any]) -> list[SearchHit]:
            return [
                SearchHit(
                    rank=k,
                    id=p.get("id"),
                    title=article["title"],
                    text=p["text"],
                    score=float(p.get("score", 0.0)),
                )
                for k, p in enumerate(article["passages"], start=1)
            ]

        relevant = [(articles[k]["title"], hits(articles[k])) for k in chosen]
        others = [a["title"] for k, a in enumerate(articles) if k not in chosen]
        return ToolResult(
            ok=True,
            output=render_selected_articles(relevant, others, self.wiki.max_chars_per_passage),
            data={
                "query": query,
                "relevant_pages": [articles[k] for k in chosen],
                "other_pages": others,
                "selection": selection,
                "selector_reply": reply.output[:2000],
            },
        )

    def close(self) -> None:
        self.wiki.close()
