"""Infrastructure failures: the third outcome of an episode, never a right or a wrong answer.

An episode ends in one of three ways (DESIGN.md, section 9): an answer that is right, an answer
that is wrong (including the policy's own malformed output, bad tool call or bad code), or **no
answer because infrastructure failed**. This module owns the vocabulary of the third outcome:
:data:`InfraKind` (what failed) and :class:`InfraError` (kind, the part of the system that met it,
and the message), which the environment puts in ``info["infra_error"]``, the trajectory record in
:attr:`~agentflow_env.trajectory.EpisodeRecord.infra_error`, evaluation reports count by kind and
the learners exclude from group statistics.

What counts as infrastructure:

- an engine request that still fails after the engine's retries (:data:`ENGINE_KINDS`): a 5xx, a
  persistent 429, a timeout, a refused or dropped connection, a response that is not a completion
  (invalid JSON, no choices, ``content: null``), a request the server rejected (another 4xx);
- a tool that could not run: its backend failed after its retries (a retrieval server, a web
  API, the generator tool's engine), its code sandbox broke, it raised or hung past the
  environment's tool timeout (``tool`` / ``sandbox``);
- a scorer (an LLM judge) that could not score (``judge``).

What does not: anything the policy caused. Unparseable text, an unknown tool, bad tool inputs,
code that raises or runs past its time limit are results of the policy's actions and are scored.

This module imports nothing from the package: engines (``agentflow_env.llm``) classify their
failures with these names, and ``tools`` (which never imports ``agentflow_env``) marks its own
with :attr:`tools.base.ToolResult.infra`, which :func:`tool_kind` maps here.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict

__all__ = ["ENGINE_KINDS", "INFRA_KINDS", "InfraError", "InfraKind", "engine_error", "tool_kind"]

InfraKind = Literal[
    "engine_server_error",  # HTTP 5xx after retries
    "engine_rate_limited",  # HTTP 429 after retries (Retry-After honoured)
    "engine_timeout",  # no response within the request timeout, after retries
    "engine_connection",  # connection refused, reset or dropped, after retries
    "engine_bad_response",  # invalid JSON, no choices, null content, wrong result count
    "engine_rejected",  # a 4xx other than 408/429 (not retried): the request cannot be served
    "engine",  # an engine failure it did not classify (e.g. an engine object that raised)
    "tool",  # a tool's backend failed, the tool raised, or it hung past the tool timeout
    "sandbox",  # the code sandbox itself failed (not the code it ran)
    "judge",  # the scorer (an LLM judge) could not score the answer
]
INFRA_KINDS: tuple[str, ...] = get_args(InfraKind)
ENGINE_KINDS: tuple[str, ...] = tuple(k for k in INFRA_KINDS if k.startswith("engine"))


class InfraError(BaseModel):
    """Why an episode has no outcome: what failed (``kind``), where (``source``), and how."""

    model_config = ConfigDict(frozen=True)

    kind: InfraKind
    source: str
    """the part that met the failure: ``planner``, ``executor``, ``verifier``, ``generator``,
    ``query_analysis``, ``tool:<name>`` or ``judge``"""
    message: str

    def __str__(self) -> str:
        where = "" if self.source == self.kind else f" in {self.source}"
        return f"{self.kind}{where}: {self.message}"


def engine_error(source: str, message: str, kind: str | None) -> InfraError:
    """An engine failure met by ``source``; an unknown or missing ``kind`` becomes ``engine``."""
    known = kind if kind in ENGINE_KINDS else "engine"
    return InfraError(kind=known, source=source, message=message)  # type: ignore[arg-type]


def tool_kind(infra: Any) -> InfraKind:
    """The kind of a tool's own infrastructure mark (:attr:`tools.base.ToolResult.infra`)."""
    return "sandbox" if infra == "sandbox" else "tool"
