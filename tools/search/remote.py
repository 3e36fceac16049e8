"""Network search backends: a Search-R1 retrieval-server client and a web-search API tool.

- :class:`RetrievalServerSearchTool` (``Retrieval_Search_Tool``) sends a batch of queries in one
  ``POST /retrieve`` to a server speaking Search-R1's protocol (:mod:`tools.search.protocol`;
  :mod:`tools.search.server` serves a local index that way).
- :class:`WebSearchTool` (``Web_Search_Tool``) calls an HTTP search API chosen by
  :class:`WebSearchConfig`: ``serper`` (Google results via serper.dev), ``tavily``, or
  ``generic`` (POST ``{"query", "top_k"}`` -> ``{"results": [{"title", "url", "snippet"}]}``);
  this module owns those providers' request and response shapes.

Every network call (:func:`post_json`) has a timeout and bounded retries with exponential backoff
on connection errors, timeouts, HTTP 429 and 5xx. Failures become
``ToolResult(ok=False, error=...)``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.base import ToolCard, ToolDemo
from tools.search.base import BaseSearchTool, SearchBackendError
from tools.search.passages import SearchHit
from tools.search.protocol import RETRIEVE_PATH, parse_retrieve_response, retrieve_request

__all__ = [
    "RetryPolicy",
    "MissingAPIKeyError",
    "post_json",
    "RetrievalServerSearchTool",
    "WebSearchConfig",
    "WebSearchTool",
]

_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class MissingAPIKeyError(ValueError):
    """A web-search provider was configured without an API key."""


class RetryPolicy(BaseModel):
    """Timeout and retry settings for one HTTP backend."""

    model_config = ConfigDict(frozen=True)

    timeout: float = Field(default=10.0, gt=0)
    """seconds allowed for each of connect / read / write of one attempt"""
    max_retries: int = Field(default=2, ge=0, le=10)
    """extra attempts after the first on connection errors, timeouts, 429 and 5xx"""
    backoff: float = Field(default=0.5, ge=0)
    """sleep before retry i is ``backoff * 2**i`` seconds, capped at ``max_backoff``"""
    max_backoff: float = Field(default=4.0, ge=0)


def post_json(
    client: httpx.Client,
    url: str,
    payload: Mapping[str, Any],
    policy: RetryPolicy,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """POST ``payload`` as JSON and return the decoded JSON body.

    Retries (bounded by ``policy``) on connection errors, timeouts, 429 and 5xx; raises
    :class:`SearchBackendError` with the last cause when attempts run out, at once for other
    HTTP errors, and for a body that is not JSON.
    """
    attempts = policy.max_retries + 1
    last = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(policy.backoff * 2 ** (attempt - 1), policy.max_backoff))
        try:
            response = client.post(
                url, json=payload, headers=dict(headers or {}), timeout=policy.timeout
            )
        except httpx.TimeoutException as exc:
            last = f"timed out after {policy.timeout:g} s ({type(exc).__name__})"
            continue
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        if response.status_code in _RETRYABLE_STATUS:
            last = f"HTTP {response.status_code}: {response.text[:200]}"
            continue
        if response.status_code >= 400:
            raise SearchBackendError(
                f"{url} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise SearchBackendError(
                f"{url} returned a body that is not JSON: {response.text[:100]!r}"
            ) from exc
    raise SearchBackendError(f"{url} failed after {attempts} attempt(s): {last}")


# --------------------------------------------------------------------------- retrieval server


class RetrievalServerSearchTool(BaseSearchTool):
    """Client for a Search-R1 style retrieval server (``POST /retrieve``).

    Args:
        url: the server's base address (``http://host:port``) or its full ``/retrieve`` URL.
        name: the tool name the planner sees.
        top_k, max_chars_per_passage, max_query_chars, max_top_k: as in ``SearchTool``.
        retry: timeout and retry policy for every request.

    ``batch_execute`` sends all queries in one request.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "Retrieval_Search_Tool",
        top_k: int = 3,
        max_chars_per_passage: int = 1000,
        max_query_chars: int = 2000,
        max_top_k: int = 50,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            top_k=top_k,
            max_chars_per_passage=max_chars_per_passage,
            max_query_chars=max_query_chars,
            max_top_k=max_top_k,
        )
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        base = url.rstrip("/")
        self.url = base if base.endswith(RETRIEVE_PATH) else base + RETRIEVE_PATH
        self.retry = retry or RetryPolicy()
        self.card = ToolCard(
            name=name,
            description=(
                "Retrieves the most relevant passages for a query from a document "
                "collection served by a retrieval server; each passage has a title."
            ),
            input_types={"query": "str - the search query (keywords or a short question)"},
            output_type="str - numbered passages, one per line: 'Doc i (Title: ...) text'",
            primary_input="query",
            demo_commands=(
                ToolDemo(command="who wrote the novel Dune", description="look up a single fact"),
            ),
            limitations=("Only searches the server's collection.",),
            best_practices=("Search for one fact at a time, naming the entity you need.",),
        )
        self._client = httpx.Client()

    def _search_batch(self, queries: list[str], k: int) -> list[list[SearchHit] | Exception]:
        try:
            body = post_json(self._client, self.url, retrieve_request(queries, k), self.retry)
            return parse_retrieve_response(body, len(queries), k)
        except SearchBackendError as exc:
            return [exc] * len(queries)

    def close(self) -> None:
        if not self._closed:
            self._client.close()
        super().close()


# --------------------------------------------------------------------------- web search API

_PROVIDERS: dict[str, tuple[str | None, str]] = {
    # provider -> (default URL, default API-key environment variable)
    "serper": ("https://google.serper.dev/search", "SERPER_API_KEY"),
    "tavily": ("https://api.tavily.com/search", "TAVILY_API_KEY"),
    "generic": (None, "WEB_SEARCH_API_KEY"),
}


class WebSearchConfig(BaseModel):
    """Which web-search API to call and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["serper", "tavily", "generic"] = "serper"
    url: str | None = None
    """endpoint; defaults to the provider's public one (required for ``generic``)"""
    api_key_env: str | None = None
    """environment variable holding the key; defaults to SERPER_API_KEY / TAVILY_API_KEY /
    WEB_SEARCH_API_KEY"""
    top_k: int = Field(default=3, ge=1, le=20)
    max_chars_per_passage: int = Field(default=1000, ge=20)
    max_query_chars: int = Field(default=400, ge=1)
    retry: RetryPolicy = RetryPolicy()

    @model_validator(mode="after")
    def _fill_defaults(self) -> WebSearchConfig:
        default_url, default_env = _PROVIDERS[self.provider]
        url = self.url or default_url
        if url is None:
            raise ValueError("provider 'generic' needs url= (the search endpoint to POST to)")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "api_key_env", self.api_key_env or default_env)
        return self


class WebSearchTool(BaseSearchTool):
    """Web search through an HTTP API: ``Web_Search_Tool``.

    ``WebSearchTool(provider="tavily")``, ``WebSearchTool({"provider": "generic", "url": ...})``
    or ``WebSearchTool(WebSearchConfig(...))``; the key comes from ``api_key=`` or the
    configured environment variable. Without a key, construction raises
    :class:`MissingAPIKeyError` (not a failure in the middle of an episode).
    """

    card = ToolCard(
        name="Web_Search_Tool",
        description="Searches the web and returns the top results with title, snippet and URL.",
        input_types={"query": "str - the web search query"},
        output_type="str - numbered results: 'Doc i (Title: ...) snippet [source: url]'",
        primary_input="query",
        demo_commands=(
            ToolDemo(
                command="2024 Nobel Prize in Physics winners", description="look up a recent fact"
            ),
        ),
        limitations=("Snippets are short; results depend on a live external service.",),
        best_practices=("Use specific keywords and names; search one fact at a time.",),
    )

    def __init__(
        self,
        config: WebSearchConfig | Mapping[str, Any] | None = None,
        *,
        api_key: str | None = None,
        max_concurrency: int = 4,
        **fields: Any,
    ) -> None:
        data = config.model_dump() if isinstance(config, WebSearchConfig) else dict(config or {})
        cfg = WebSearchConfig.model_validate({**data, **fields})
        super().__init__(
            top_k=cfg.top_k,
            max_chars_per_passage=cfg.max_chars_per_passage,
            max_query_chars=cfg.max_query_chars,
            max_top_k=20,
        )
        key = api_key or os.environ.get(cfg.api_key_env or "")
        if not key:
            raise MissingAPIKeyError(
                f"Web_Search_Tool (provider {cfg.provider!r}) needs an API key: set "
                f"{cfg.api_key_env} in the environment or pass api_key="
            )
        self.config = cfg
        self._key = key  # never logged or shown in results
        self._client = httpx.Client()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, max_concurrency), thread_name_prefix="web-search"
        )

    def __repr__(self) -> str:
        return f"WebSearchTool(provider={self.config.provider!r}, url={self.config.url!r})"

    def _request(self, query: str, k: int) -> tuple[dict[str, Any], dict[str, str]]:
        provider = self.config.provider
        if provider == "serper":
            return {"q": query, "num": k}, {"X-API-KEY": self._key}
        if provider == "tavily":
            return {"query": query, "max_results": k}, {"Authorization": f"Bearer {self._key}"}
        return {"query": query, "top_k": k}, {"Authorization": f"Bearer {self._key}"}

    def _search_one(self, query: str, k: int) -> list[SearchHit] | Exception:
        payload, headers = self._request(query, k)
        try:
            body = post_json(
                self._client, str(self.config.url), payload, self.config.retry, headers
            )
            return _parse_web_results(self.config.provider, body, k)
        except (SearchBackendError, TypeError, ValueError, KeyError) as exc:
            return (
                exc
                if isinstance(exc, SearchBackendError)
                else SearchBackendError(f"malformed {self.config.provider} response: {exc}")
            )

    def _search_batch(self, queries: list[str], k: int) -> list[list[SearchHit] | Exception]:
        # the APIs take one query per request; run them concurrently, bounded by the pool
        return list(self._pool.map(lambda q: self._search_one(q, k), queries))

    def close(self) -> None:
        if not self._closed:
            self._pool.shutdown(wait=True)
            self._client.close()
        super().close()


def _parse_web_results(provider: str, body: Any, k: int) -> list[SearchHit]:
    if not isinstance(body, dict):
        raise TypeError(f"expected a JSON object, got {type(body).__name__}")
    if provider == "serper":
        items, text_key, url_key = body.get("organic", []), "snippet", "link"
    elif provider == "tavily":
        items, text_key, url_key = body.get("results", []), "content", "url"
    else:
        items, text_key, url_key = body.get("results", []), "snippet", "url"
    if not isinstance(items, list):
        raise TypeError(f"expected a list of results, got {type(items).__name__}")
    hits: list[SearchHit] = []
    for item in items[:k]:
        if not isinstance(item, dict):
            raise TypeError(f"expected result objects, got {type(item).__name__}")
        text = item.get(text_key) or item.get("content") or item.get("text") or ""
        score = item.get("score")
        hits.append(
            SearchHit(
                rank=len(hits) + 1,
                id=item.get(url_key),
                title=str(item.get("title") or ""),
                text=str(text),
                score=float(score) if score is not None else 0.0,
                url=item.get(url_key),
            )
        )
    return hits
