"""What each LLM module may write: its token budget, stop strings and (optionally) constraint.

Small models drift out of a free-text format: an executor that never writes ``tool.execute``,
a verifier without a conclusion, a generator without ``<answer>``. With constraints on
(``EnvConfig.constrained_modules``, the default) and an engine that enforces them locally
(:func:`supports_constraints`), each module's reply is held to its grammar
(:mod:`agentflow_env.format.modules`) and its ``max_tokens`` is sized to the longest reply the
grammar admits, so a reply is never cut inside its format. With constraints off (or an engine that
cannot enforce them) the modules write free text under the unconstrained budgets, as in the paper.

Stop strings end a reply at the end of its format in both settings: the generator's at
``</answer>``, the executor's after its command block's closing fence; the cut part of the format
is put back (:func:`restore_format_end`), so readers see the whole form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentflow_env.format.labels import ANSWER_CLOSE, ANSWER_OPEN
from agentflow_env.llm.base import Engine, GenerationRequest, GenerationResult, SamplingParams
from agentflow_env.llm.common import (
    ConstraintUnsupportedError,
    ConstraintViolationError,
    InvalidConstraintError,
)

__all__ = [
    "MODULE_BUDGETS",
    "ModuleBudget",
    "generate",
    "restore_format_end",
    "supports_constraints",
]

_FENCE = "```"


@dataclass(frozen=True)
class ModuleBudget:
    """A module's generation settings: ``max_tokens`` constrained and free, and stop strings."""

    constrained_tokens: int
    """at least the grammar's longest reply in characters: every token of a byte-level BPE
    vocabulary decodes to at least one character of ASCII text, so no admissible reply is cut"""
    free_tokens: int
    """the unconstrained (paper) setting's budget"""
    stop: tuple[str, ...] = ()

    def sampling(self, constrained: bool) -> SamplingParams:
        """Greedy settings for this module."""
        tokens = self.constrained_tokens if constrained else self.free_tokens
        return SamplingParams(temperature=0.0, max_tokens=tokens, stop=self.stop)


MODULE_BUDGETS: dict[str, ModuleBudget] = {
    # analysis 160 + "\n" + the call's fixed text 65 + one string input 241 (a tool with more
    # inputs may need more: its grammar bounds each)
    "executor": ModuleBudget(472, 512, stop=(_FENCE + "\n\n",)),
    # analysis 240 + "\n" + "Conclusion: CONTINUE"
    "verifier": ModuleBudget(264, 512),
    # reasoning 200 + the tags 17 + answer 80 (a 256-token budget once cut a reply at 1.5
    # characters per token)
    "generator": ModuleBudget(300, 1024, stop=(ANSWER_CLOSE,)),
    # four lines of 110 + their labels 47 + 3 newlines
    "query_analysis": ModuleBudget(500, 512),
}


def supports_constraints(engine: Engine) -> bool:
    """Whether ``engine`` enforces a request's constraint itself (``supports_constraints``:
    the hf and vLLM engines). An OpenAI-compatible server's support is unknown until it answers
    (the engine raises on one that ignores constraints), so modules constrain it only when the
    engine says so (``engine.supports_constraints = True``)."""
    return bool(getattr(engine, "supports_constraints", False))


def restore_format_end(text: str, stop: Sequence[str]) -> str:
    """``text`` with the end of its format put back where a stop string cut it: the closing
    ``</answer>`` of an open answer tag, the closing fence of an open code block (only when the
    text itself shows the cut: an engine does not say which stop string it met)."""
    if ANSWER_CLOSE in stop and text.rfind(ANSWER_OPEN) > text.rfind(ANSWER_CLOSE):
        return text + ANSWER_CLOSE
    if any(s.startswith(_FENCE) for s in stop) and text.count(_FENCE) % 2 == 1:
        return text.rstrip("\n") + "\n" + _FENCE
    return text


def generate(
    engine: Engine, requests: Sequence[GenerationRequest], role: str
) -> list[GenerationResult]:
    """``engine.generate(requests)``, with a constraint the engine could not honour (a server
    that ignored or refused it, a grammar that does not compile) turned into a failed result per
    request, naming the way back (``constrained_modules=False``); stop-cut format ends restored."""
    try:
        results = engine.generate(list(requests))
    except (ConstraintViolationError, ConstraintUnsupportedError, InvalidConstraintError) as exc:
        message = (
            f"the {role}'s constraint could not be enforced ({type(exc).__name__}: {exc}); "
            "use an engine that enforces constraints or set constrained_modules=False"
        )
        return [GenerationResult(text="", error=message, error_kind="engine") for _ in requests]
    out = []
    for request, result in zip(requests, results, strict=True):
        stop = request.sampling.stop
        if result.error is None and stop and result.finish_reason == "stop":
            result = result.model_copy(update={"text": restore_format_end(result.text, stop)})
        out.append(result)
    return out
