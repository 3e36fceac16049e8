"""WebSearchTool against local HTTP servers on 127.0.0.1 speaking each provider's shape.

Each fake provider answers from a real BM25 index, checks the provider's authentication header,
and can be scripted to fail, so the tool's request format, parsing and retries are exercised
over real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from tools.base import Tool
from tools.search import (
    BM25Index,
    MissingAPIKeyError,
    WebSearchConfig,
    WebSearchTool,
    serve_in_thread,
)

KEY = "test-key-123"
DOCS = [
    {
        "id": "w1",
        "title": "Varnok Industries - Company profile",
        "text": "Varnok Industries makes looms in Quenport.",
    },
    {
        "id": "w2",
        "title": "Elira Tosk biography",
        "text": "Elira Tosk founded Varnok Industries in 1952.",
    },
    {
        "id": "w3",
        "title": "Quenport travel guide",
        "text": "Quenport is a harbour city in Belvaria.",
    },
]
FAST = {"timeout": 2.0, "max_retries": 2, "backoff": 0.01}


class FakeProvider(BaseHTTPRequestHandler):
    """Serper / Tavily / generic response shapes over a real BM25 index."""

    index: BM25Index
    script: list[int] = []
    requests: list[dict[str, Any]] = []
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.script:
            self._send(self.script.pop(0), {"error": "scripted failure"})
            return
        provider = self.path.strip("/")
        auth_ok = (
            self.headers.get("X-API-KEY") == KEY
            if provider == "serper"
            else self.headers.get("Authorization") == f"Bearer {KEY}"
        )
        if not auth_ok:
            self._send(401, {"message": "Unauthorized"})
            return
        query = body.get("q") or body.get("query")
        k = body.get("num") or body.get("max_results") or body.get("top_k")
        hits = self.index.search([query], k)[0]
        if provider == "serper":
            self._send(
                200,
                {
                    "searchParameters": {"q": query},
                    "organic": [
                        {
                            "title": h.title,
                            "link": f"https://example.test/{h.id}",
                            "snippet": h.text,
                            "position": h.rank,
                        }
                        for h in hits
                    ],
                },
            )
        elif provider == "tavily":
            self._send(
                200,
                {
                    "query": query,
                    "answer": None,
                    "response_time": 0.1,
                    "results": [
                        {
                            "title": h.title,
                            "url": f"https://example.test/{h.id}",
                            "content": h.text,
                            "score": h.score,
                        }
                        for h in hits
                    ],
                },
            )
        else:
            self._send(
                200,
                {
                    "results": [
                        {"title": h.title, "url": f"https://example.test/{h.id}", "snippet": h.text}
                        for h in hits
                    ]
                },
            )


@pytest.fixture(scope="module")
def provider_server() -> Iterator[tuple[str, type[FakeProvider]]]:
    index = BM25Index.build(DOCS, backend="numpy")
    handler = type("P", (FakeProvider,), {"index": index, "script": [], "requests": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    serve_in_thread(srv)
    yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    srv.shutdown()
    srv.server_close()
    index.close()


@pytest.fixture()
def base_url(provider_server: tuple[str, type[FakeProvider]]) -> str:
    return provider_server[0]


@pytest.fixture()
def handler(provider_server: tuple[str, type[FakeProvider]]) -> type[FakeProvider]:
    h = provider_server[1]
    h.script.clear()
    h.requests.clear()
    return h


@pytest.mark.parametrize("provider", ["serper", "tavily", "generic"])
def test_providers_over_real_http(
    base_url: str, handler: type[FakeProvider], provider: str
) -> None:
    tool = WebSearchTool(
        provider=provider, url=f"{base_url}/{provider}", api_key=KEY, top_k=2, retry=FAST
    )
    assert isinstance(tool, Tool) and tool.card.name == "Web_Search_Tool"
    result = tool.execute(query="who founded Varnok Industries")
    assert result.ok, result.error
    first = result.output.splitlines()[0]
    assert first == (
        "Doc 1 (Title: Elira Tosk biography) Elira Tosk founded Varnok Industries "
        "in 1952. [source: https://example.test/w2]"
    )
    assert result.data["hits"][0]["url"] == "https://example.test/w2"
    assert len(result.data["hits"]) == 2
    sent = handler.requests[0]["body"]
    assert (
        sent
        == {
            "serper": {"q": "who founded Varnok Industries", "num": 2},
            "tavily": {"query": "who founded Varnok Industries", "max_results": 2},
            "generic": {"query": "who founded Varnok Industries", "top_k": 2},
        }[provider]
    )
    tool.close()


def test_key_from_environment_and_never_shown(
    base_url: str, handler: type[FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SEARCH_KEY", KEY)
    tool = WebSearchTool(
        {
            "provider": "tavily",
            "url": f"{base_url}/tavily",
            "api_key_env": "MY_SEARCH_KEY",
            "retry": FAST,
        }
    )
    results = tool.batch_execute(["Quenport harbour", "Elira Tosk", ""])
    tool.close()
    assert [r.ok for r in results] == [True, True, False]
    assert results[0].data["hits"][0]["title"] == "Quenport travel guide"
    assert len(handler.requests) == 2  # one request per valid query
    assert KEY not in repr(tool) and all(KEY not in r.model_dump_json() for r in results)


def test_missing_key_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="SERPER_API_KEY"):
        WebSearchTool(provider="serper")
    with pytest.raises(MissingAPIKeyError, match="TAVILY_API_KEY"):
        WebSearchTool(WebSearchConfig(provider="tavily"))


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="needs url"):
        WebSearchConfig(provider="generic")
    with pytest.raises(ValidationError):
        WebSearchConfig(provider="bing")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        WebSearchConfig(provider="serper", colour="blue")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="http"):
        WebSearchConfig(provider="generic", url="ftp://x")
    assert WebSearchConfig(provider="serper").url == "https://google.serper.dev/search"


def test_wrong_key_is_an_error_without_retry(base_url: str, handler: type[FakeProvider]) -> None:
    tool = WebSearchTool(provider="serper", url=f"{base_url}/serper", api_key="wrong", retry=FAST)
    result = tool.execute(query="Quenport")
    tool.close()
    assert not result.ok and "HTTP 401" in (result.error or "")
    assert len(handler.requests) == 1


def test_rate_limit_and_5xx_are_retried(base_url: str, handler: type[FakeProvider]) -> None:
    handler.script.extend([429, 503])
    tool = WebSearchTool(provider="serper", url=f"{base_url}/serper", api_key=KEY, retry=FAST)
    result = tool.execute(query="Quenport")
    tool.close()
    assert result.ok, result.error
    assert len(handler.requests) == 3


def test_unreachable_provider_is_a_clean_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tool = WebSearchTool(
        provider="generic",
        url=f"http://127.0.0.1:{port}/s",
        api_key=KEY,
        retry={"timeout": 1.0, "max_retries": 1, "backoff": 0.01},
    )
    start = time.monotonic()
    result = tool.execute(query="anything")
    assert not result.ok and "after 2 attempt(s)" in (result.error or "")
    assert result.infra == "backend"
    assert time.monotonic() - start < 5
    assert not tool.execute(query="x" * 401).ok  # web queries are kept short
    tool.close()


def test_concurrent_batch_keeps_order(base_url: str, handler: type[FakeProvider]) -> None:
    tool = WebSearchTool(
        provider="serper",
        url=f"{base_url}/serper",
        api_key=KEY,
        top_k=1,
        retry=FAST,
        max_concurrency=3,
    )
    queries = ["Quenport harbour", "Elira Tosk", "Varnok looms"] * 3
    results = tool.batch_execute(queries)
    titles = [r.data["hits"][0]["title"] for r in results]
    assert (
        titles
        == ["Quenport travel guide", "Elira Tosk biography", "Varnok Industries - Company profile"]
        * 3
    )
    assert threading.active_count() < 50
    tool.close()
