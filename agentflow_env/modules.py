"""Executor, Verifier and Generator: each has an offline mode and an LLM mode.

Every module works on a batch (the vector env calls each stage once per step for all its
episodes; the single env passes a batch of one), so both share one code path.

Offline modes (no model needed, the default):
- executor ``"direct"``: the planner's ``Command:`` (or its sub-goal) is the tool input;
- verifier ``"planner"``: the episode stops when the planner finishes (``Tool Name: Finish``);
- generator ``"planner"``: the answer is the ``<answer>`` of the planner's finishing step.

LLM modes (``"llm"``) reproduce the paper with any engine; an unparseable module output is an
error recorded in ``info`` and memory, never a crash and never silent. An engine that failed
after its retries is different: the output carries ``infra``
(:class:`~agentflow_env.infra.InfraError`) and the environment ends the episode unscored.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentflow_env import prompts
from agentflow_env.format.action import PlannerAction, last_answer, strip_code_fence
from agentflow_env.infra import InfraError, engine_error
from agentflow_env.llm.base import Engine, GenerationRequest, SamplingParams
from agentflow_env.memory import Memory
from tools.base import ToolCard

__all__ = [
    "ExecutorCall",
    "ExecutorOutput",
    "Executor",
    "DirectExecutor",
    "LLMExecutor",
    "VerifierCall",
    "VerifierOutput",
    "Verifier",
    "PlannerVerifier",
    "LLMVerifier",
    "GeneratorCall",
    "GeneratorOutput",
    "Generator",
    "PlannerGenerator",
    "LLMGenerator",
    "QueryAnalyzer",
    "parse_executor_output",
    "parse_verifier_output",
    "parse_generator_output",
]

# ---------------------------------------------------------------------------------- executor


@dataclass
class ExecutorCall:
    question: str
    action: PlannerAction
    card: ToolCard
    memory: Memory


@dataclass
class ExecutorOutput:
    inputs: dict[str, Any] = field(default_factory=dict)
    """keyword inputs for ``tool.execute``; empty when ``error`` is set"""
    error: str | None = None
    raw: str | None = None
    """the LLM's text (LLM mode)"""
    infra: InfraError | None = None
    """set when the executor's engine failed (infrastructure, not the planner's step)"""


class Executor:
    """Turns a planner step into tool inputs."""

    mode: str = "abstract"

    def commands(self, calls: Sequence[ExecutorCall]) -> list[ExecutorOutput]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (engines are owned by the caller and not closed here)."""


def _direct_input(call: ExecutorCall) -> str:
    text = call.action.tool_input
    # Code tools get the body of a fenced block; search tools get the text as written.
    return strip_code_fence(text) if "```" in text else text


class DirectExecutor(Executor):
    mode = "direct"

    def commands(self, calls: Sequence[ExecutorCall]) -> list[ExecutorOutput]:
        return [ExecutorOutput(inputs={c.card.primary_input: _direct_input(c)}) for c in calls]


_EXECUTE_CALL = re.compile(r"tool\.execute\s*\(", re.IGNORECASE)


def parse_executor_output(text: str, card: ToolCard) -> ExecutorOutput:
    """Parse ``tool.execute(key=value, ...)`` (the paper's form), else ``Command: ...``."""
    body = strip_code_fence(text) if "```" in text else text
    match = _EXECUTE_CALL.search(body)
    if match:
        start = match.start()
        for end in range(len(body), start, -1):
            if body[end - 1] != ")":
                continue
            try:
                node = ast.parse(body[start:end].strip(), mode="eval").body
            except SyntaxError:
                continue
            if isinstance(node, ast.Call):
                try:
                    inputs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
                    if not inputs and node.args:
                        inputs = {card.primary_input: ast.literal_eval(node.args[0])}
                except ValueError:
                    break
                unknown = set(inputs) - set(card.input_types) if card.input_types else set()
                if unknown:
                    return ExecutorOutput(
                        error=f"unknown inputs {sorted(unknown)} for {card.name}", raw=text
                    )
                if inputs:
                    return ExecutorOutput(inputs=inputs, raw=text)
            break
    command = re.search(
        r"^\s*\**command\**\s*:\s*(.+)", text, re.IGNORECASE | re.MULTILINE | re.DOTALL
    )
    if command and command.group(1).strip():
        value = command.group(1).strip()
        value = strip_code_fence(value) if "```" in value else value.strip("`").strip()
        return ExecutorOutput(inputs={card.primary_input: value}, raw=text)
    return ExecutorOutput(
        error="executor output has neither tool.execute(...) nor 'Command:'", raw=text
    )


class LLMExecutor(Executor):
    """The paper's executor: an LLM writes the concrete tool call."""

    mode = "llm"

    def __init__(self, engine: Engine, sampling: SamplingParams | None = None) -> None:
        self.engine = engine
        self.sampling = sampling or SamplingParams(temperature=0.0, max_tokens=512)

    def commands(self, calls: Sequence[ExecutorCall]) -> list[ExecutorOutput]:
        if not calls:
            return []
        requests = [
            GenerationRequest.chat(
                prompts.executor_prompt(c.question, c.action, c.card, c.memory.render()),
                **self.sampling.model_dump(),
            )
            for c in calls
        ]
        results = self.engine.generate(requests)
        outputs = []
        for call, result in zip(calls, results, strict=True):
            if result.error:
                error = f"executor engine failed: {result.error}"
                infra = engine_error("executor", result.error, result.error_kind)
                outputs.append(ExecutorOutput(error=error, infra=infra))
            else:
                outputs.append(parse_executor_output(result.text, call.card))
        return outputs


# ---------------------------------------------------------------------------------- verifier


@dataclass
class VerifierCall:
    question: str
    memory: Memory
    action: PlannerAction


@dataclass
class VerifierOutput:
    stop: bool
    analysis: str = ""
    error: str | None = None
    infra: InfraError | None = None
    """set when the verifier's engine failed"""

    @property
    def decision(self) -> Literal["STOP", "CONTINUE"]:
        return "STOP" if self.stop else "CONTINUE"


class Verifier:
    mode: str = "abstract"

    def decide(self, calls: Sequence[VerifierCall]) -> list[VerifierOutput]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""


class PlannerVerifier(Verifier):
    """Stop exactly when the planner finishes."""

    mode = "planner"

    def decide(self, calls: Sequence[VerifierCall]) -> list[VerifierOutput]:
        return [VerifierOutput(stop=c.action.is_finish) for c in calls]


_CONCLUSION = re.compile(r"conclusion\W*\s*(stop|continue)", re.IGNORECASE)
_DECISION = re.compile(r"\b(STOP|CONTINUE)\b")


def parse_verifier_output(text: str) -> VerifierOutput:
    """``Conclusion: STOP|CONTINUE`` (last one wins), else a lone STOP/CONTINUE word.

    Unparseable output continues the episode and is reported as an error.
    """
    matches = _CONCLUSION.findall(text) or _DECISION.findall(text)
    if not matches:
        return VerifierOutput(
            stop=False,
            analysis=text.strip(),
            error="verifier output has no STOP/CONTINUE conclusion; continuing",
        )
    return VerifierOutput(stop=matches[-1].upper() == "STOP", analysis=text.strip())


class LLMVerifier(Verifier):
    """The paper's verifier: an LLM reads query + memory and says STOP or CONTINUE.

    A planner ``Finish`` step always stops: the planner has committed to an answer.
    """

    mode = "llm"

    def __init__(self, engine: Engine, sampling: SamplingParams | None = None) -> None:
        self.engine = engine
        self.sampling = sampling or SamplingParams(temperature=0.0, max_tokens=512)

    def decide(self, calls: Sequence[VerifierCall]) -> list[VerifierOutput]:
        pending = [i for i, c in enumerate(calls) if not c.action.is_finish]
        outputs = [VerifierOutput(stop=True, analysis="planner finished") for _ in calls]
        if not pending:
            return outputs
        requests = [
            GenerationRequest.chat(
                prompts.verifier_prompt(calls[i].question, calls[i].memory.render()),
                **self.sampling.model_dump(),
            )
            for i in pending
        ]
        for i, result in zip(pending, self.engine.generate(requests), strict=True):
            if result.error:
                outputs[i] = VerifierOutput(
                    stop=False,
                    error=f"verifier engine failed: {result.error}",
                    infra=engine_error("verifier", result.error, result.error_kind),
                )
            else:
                outputs[i] = parse_verifier_output(result.text)
        return outputs


# --------------------------------------------------------------------------------- generator


@dataclass
class GeneratorCall:
    question: str
    memory: Memory
    action: PlannerAction
    """the last planner action of the episode"""
    answers: tuple[str, ...] = ()
    """every ``<answer>`` the planner wrote in this episode, in order"""


@dataclass
class GeneratorOutput:
    answer: str
    text: str = ""
    error: str | None = None
    infra: InfraError | None = None
    """set when the generator's engine failed"""


class Generator:
    mode: str = "abstract"

    def answer(self, calls: Sequence[GeneratorCall]) -> list[GeneratorOutput]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources."""


class PlannerGenerator(Generator):
    """The answer is the planner's last ``<answer>``; none at all is an empty answer."""

    mode = "planner"

    def answer(self, calls: Sequence[GeneratorCall]) -> list[GeneratorOutput]:
        outputs = []
        for c in calls:
            if c.answers:
                outputs.append(GeneratorOutput(answer=c.answers[-1], text=c.answers[-1]))
            else:
                outputs.append(GeneratorOutput(answer="", error="the planner gave no <answer>"))
        return outputs


def parse_generator_output(text: str) -> GeneratorOutput:
    """The last ``<answer>``; without one, the whole text, reported as an error."""
    answer = last_answer(text)
    if answer is not None:
        return GeneratorOutput(answer=answer, text=text)
    return GeneratorOutput(
        answer=text.strip(),
        text=text,
        error="generator output has no <answer> tag; scored the whole text",
    )


class LLMGenerator(Generator):
    """The paper's generator: an LLM writes the final answer from query + memory."""

    mode = "llm"

    def __init__(self, engine: Engine, sampling: SamplingParams | None = None) -> None:
        self.engine = engine
        self.sampling = sampling or SamplingParams(temperature=0.0, max_tokens=1024)

    def answer(self, calls: Sequence[GeneratorCall]) -> list[GeneratorOutput]:
        if not calls:
            return []
        requests = [
            GenerationRequest.chat(
                prompts.generator_prompt(c.question, c.memory.render()),
                **self.sampling.model_dump(),
            )
            for c in calls
        ]
        outputs = []
        for result in self.engine.generate(requests):
            if result.error:
                outputs.append(
                    GeneratorOutput(
                        answer="",
                        error=f"generator engine failed: {result.error}",
                        infra=engine_error("generator", result.error, result.error_kind),
                    )
                )
            else:
                outputs.append(parse_generator_output(result.text))
        return outputs


class QueryAnalyzer:
    """Optional query analysis at reset (the paper's first LLM call), shown in the header."""

    def __init__(self, engine: Engine, sampling: SamplingParams | None = None) -> None:
        self.engine = engine
        self.sampling = sampling or SamplingParams(temperature=0.0, max_tokens=512)

    def analyze(
        self, questions: Sequence[str], cards: Sequence[ToolCard]
    ) -> list[tuple[str, InfraError | None]]:
        """(analysis text, the engine's failure or None) per question."""
        if not questions:
            return []
        requests = [
            GenerationRequest.chat(
                prompts.query_analysis_prompt(q, cards), **self.sampling.model_dump()
            )
            for q in questions
        ]
        out: list[tuple[str, InfraError | None]] = []
        for result in self.engine.generate(requests):
            if result.error:
                out.append(("", engine_error("query_analysis", result.error, result.error_kind)))
            else:
                out.append((result.text.strip(), None))
        return out
