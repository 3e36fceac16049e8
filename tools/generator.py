"""``Base_Generator_Tool``: a language model answers the planner's query directly.

The paper's agent has a general-purpose LLM tool next to its search and code tools: the planner
hands it a self-contained question or instruction and reads back the model's answer.

Import direction: ``tools`` never imports ``agentflow_env``, so this tool cannot build the
engines' request objects itself. It builds each request as **plain data** with the fields of
``agentflow_env.llm.base.GenerationRequest``::

    {"messages": [{"role": "system", "content": ...},   # only when a system prompt is set
                  {"role": "user", "content": <query>}],
     "sampling": {"temperature": 0.0, "max_tokens": 1024}}

and passes it through ``request_factory`` before calling ``engine.generate([...])``. The
default factory is the identity (for engines that accept mappings, or a Python function engine);
code on the ``agentflow_env`` side passes ``request_factory=GenerationRequest.model_validate`` so
the engine receives real request objects::

    from agentflow_env.llm.base import GenerationRequest
    tool = BaseGeneratorTool(engine, request_factory=GenerationRequest.model_validate)

Results are read by duck typing: each result needs a ``.text`` and may carry ``.error`` (an
engine-reported failure), ``.prompt_tokens`` and ``.completion_tokens``. ``execute`` never
raises: bad input becomes ``ToolResult(ok=False, error=...)``, engine failures the same with
``infra="backend"`` (the tool could not run; not the caller's mistake). Timeouts are
the engine's (the OpenAI-compatible engine has request timeouts) and the environment's per-call
tool timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tools.base import TextGenerator, ToolCard, ToolDemo, ToolResult

__all__ = ["GENERATOR_CARD", "BaseGeneratorTool", "RequestFactory"]

logger = logging.getLogger(__name__)

RequestFactory = Callable[[dict[str, Any]], Any]
"""Turns the plain-data request (``messages`` + ``sampling``) into what the engine accepts."""

GENERATOR_CARD = ToolCard(
    name="Base_Generator_Tool",
    description=(
        "A general-purpose language model that answers a self-contained question or follows an "
        "instruction in one reply, reasoning step by step when useful. It has no access to "
        "search, files, code execution or earlier steps: put everything it needs in the query."
    ),
    input_types={"query": "str - the complete question or instruction, with any needed context"},
    output_type="str - the model's answer",
    primary_input="query",
    demo_commands=(
        ToolDemo(
            command="Summarize in one sentence: <paste the passage here>",
            description="condense text found in an earlier step",
        ),
        ToolDemo(
            command="What is the chemical symbol of tungsten?",
            description="ask a general-knowledge question",
        ),
    ),
    limitations=(
        "May state wrong facts confidently; verify important facts with a search tool.",
        "Unreliable at exact arithmetic; use Python_Coder_Tool for calculations.",
        "Sees only the query: it does not know the task or earlier results unless included.",
    ),
    best_practices=(
        "Write a specific, self-contained query and include the relevant context.",
        "Ask for a short, direct answer when one is needed.",
    ),
)


def _identity(request: dict[str, Any]) -> Any:
    return request


class BaseGeneratorTool:
    """An LLM answers the query directly (satisfies :class:`tools.base.Tool`).

    Args:
        engine: any :class:`~tools.base.TextGenerator` (an ``agentflow_env.llm`` engine).
        request_factory: maps the plain-data request to the engine's request type (see the
            module docstring); the default passes the dict unchanged.
        system_prompt: optional system message sent before every query.
        temperature, max_tokens: sampling settings put in every request.
        max_query_chars: longer queries are rejected with an error result.
        max_output_chars: longer answers are cut, with a ``...[truncated]`` marker.
    """

    card: ToolCard = GENERATOR_CARD

    def __init__(
        self,
        engine: TextGenerator,
        *,
        request_factory: RequestFactory | None = None,
        system_prompt: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 1024,
        max_query_chars: int = 20_000,
        max_output_chars: int = 8_000,
    ) -> None:
        if not callable(getattr(engine, "generate", None)):
            raise TypeError(
                f"engine must have a generate(requests) method, got {type(engine).__name__}"
            )
        if request_factory is not None and not callable(request_factory):
            raise TypeError(
                f"request_factory must be callable, got {type(request_factory).__name__}"
            )
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if max_query_chars < 1 or max_output_chars < 1:
            raise ValueError("max_query_chars and max_output_chars must be >= 1")
        self.engine = engine
        self.request_factory: RequestFactory = request_factory or _identity
        self.system_prompt = system_prompt
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.max_query_chars = max_query_chars
        self.max_output_chars = max_output_chars

    # ------------------------------------------------------------------------------ requests
    def build_request(self, query: str) -> dict[str, Any]:
        """The plain-data request for one query (before ``request_factory``)."""
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": query})
        return {
            "messages": messages,
            "sampling": {"temperature": self.temperature, "max_tokens": self.max_tokens},
        }

    def _check(self, query: Any) -> str | None:
        """An error message for a bad query, else None."""
        if not isinstance(query, str):
            return f"query must be a string, got {type(query).__name__}"
        if not query.strip():
            return "query is empty: write the question or instruction for the model"
        if len(query) > self.max_query_chars:
            return f"query is {len(query)} characters; the limit is {self.max_query_chars}"
        return None

    # ------------------------------------------------------------------------------ execution
    def execute(self, query: Any = None, **extra: Any) -> ToolResult:
        """Answer one query. Unknown inputs and engine failures give ``ok=False`` results."""
        if extra:
            return ToolResult.failure(
                f"unknown inputs {sorted(extra)}; {self.card.name} takes only 'query'"
            )
        return self.batch_execute([query])[0]

    def batch_execute(self, queries: Sequence[Any]) -> list[ToolResult]:
        """Answer many queries with one ``engine.generate`` call (the vector env batches here)."""
        results: list[ToolResult | None] = [None] * len(queries)
        valid: list[int] = []
        for i, query in enumerate(queries):
            problem = self._check(query)
            if problem:
                results[i] = ToolResult.failure(problem)
            else:
                valid.append(i)
        if valid:
            for i, result in zip(valid, self._generate([queries[i] for i in valid]), strict=True):
                results[i] = result
        return [r if r is not None else ToolResult.failure("no result") for r in results]

    def _generate(self, queries: list[str]) -> list[ToolResult]:
        try:
            requests = [self.request_factory(self.build_request(q)) for q in queries]
        except Exception as exc:  # a bad factory is a configuration error: show it, do not crash
            return [
                ToolResult.backend_failure(f"request_factory failed: {type(exc).__name__}: {exc}")
            ] * len(queries)
        try:
            outputs = list(self.engine.generate(requests))
        except Exception as exc:  # engine failures become error results the planner can see
            logger.warning("Base_Generator_Tool engine raised %s: %s", type(exc).__name__, exc)
            return [
                ToolResult.backend_failure(f"generator engine failed: {type(exc).__name__}: {exc}")
            ] * len(queries)
        if len(outputs) != len(queries):
            return [
                ToolResult.backend_failure(
                    f"engine returned {len(outputs)} results for {len(queries)} "
                    "requests (n must be 1)"
                )
            ] * len(queries)
        return [self._to_result(q, out) for q, out in zip(queries, outputs, strict=True)]

    def _to_result(self, query: str, output: Any) -> ToolResult:
        if isinstance(output, Mapping):  # plain-data results from function engines
            text, error = output.get("text"), output.get("error")
            usage = {k: output.get(k) for k in ("prompt_tokens", "completion_tokens")}
        else:
            text, error = getattr(output, "text", None), getattr(output, "error", None)
            usage = {k: getattr(output, k, None) for k in ("prompt_tokens", "completion_tokens")}
        data = {"query": query, **{k: v for k, v in usage.items() if v is not None}}
        if error:
            return ToolResult.backend_failure(f"generator engine failed: {error}", **data)
        if not isinstance(text, str):
            return ToolResult.backend_failure(
                f"engine result has no text (got {type(output).__name__})", **data
            )
        answer = text.strip()
        if not answer:
            return ToolResult.failure("the model returned an empty answer", **data)
        if len(answer) > self.max_output_chars:
            answer = answer[: self.max_output_chars] + " ...[truncated]"
        return ToolResult(ok=True, output=answer, data=data)

    def close(self) -> None:
        """Nothing to release: the engine belongs to the caller, who closes it."""
