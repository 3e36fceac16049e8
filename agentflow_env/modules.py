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

The LLM executor's reply may hold a block of several ``execution = tool.execute(...)`` calls with
literal assignments (:mod:`agentflow_env.format.command`: evaluated, never executed); each call
runs in order and the step records every result. The LLM verifier reads the tools, their
metadata and the query analysis, and its reply is read with the reference's fallbacks
(:func:`parse_verifier_output`).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentflow_env import prompts
from agentflow_env.format.action import PlannerAction, last_answer, strip_code_fence
from agentflow_env.format.command import CommandError, extract_command, read_calls
from agentflow_env.format.modules import (
    executor_grammar,
    generator_grammar,
    query_analysis_grammar,
    verifier_grammar,
)
from agentflow_env.infra import InfraError, engine_error
from agentflow_env.llm.base import Engine, GenerationRequest, SamplingParams
from agentflow_env.llm.constraints import Constraint
from agentflow_env.memory import Memory
from agentflow_env.module_outputs import MODULE_BUDGETS, generate, supports_constraints
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
    "command_inputs",
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
    query_analysis: str | None = None


@dataclass
class ExecutorOutput:
    inputs: dict[str, Any] = field(default_factory=dict)
    """keyword inputs for ``tool.execute`` (the first call's); empty when ``error`` is set"""
    error: str | None = None
    raw: str | None = None
    """the LLM's text (LLM mode)"""
    calls: list[dict[str, Any]] = field(default_factory=list)
    """every call's inputs, in order, when the command held several; empty means one call,
    ``inputs``"""

    def all_calls(self) -> list[dict[str, Any]]:
        """The inputs of each call to run, in order (none when ``error`` is set)."""
        if self.error is not None:
            return []
        return list(self.calls) if self.calls else [self.inputs]

    infra: InfraError | None = None
    """set when the executor's engine failed (infrastructure, not the planner's step)"""


class Executor:
    """Turns a planner step into tool inputs."""

    mode: str = "abstract"

    def commands(self, calls: Sequence[ExecutorCall]) -> list[ExecutorOutput]:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (engines are owned by the caller and not closed here)."""


def command_inputs(card: ToolCard, text: str, raw: str | None = None) -> ExecutorOutput:
    """A command's tool inputs: the text itself for a tool that takes text
    (:meth:`ToolCard.text_input`), else the JSON object the command must be.

    Code tools get the body of a fenced block; search tools get the text as written. The JSON
    object is only parsed here: the tool checks it against its input schema. A tool without
    inputs takes any text (a planner's sub-goal fills an empty command) as no inputs.
    """
    body = strip_code_fence(text) if "```" in text else text
    key = card.text_input()
    if key is not None:
        return ExecutorOutput(inputs={key: body}, raw=raw)
    if not body.strip():
        return ExecutorOutput(inputs={}, raw=raw)
    try:
        inputs = json.loads(body)
    except json.JSONDecodeError as exc:
        inputs, problem = None, f"it is not JSON ({exc})"
    else:
        problem = None if isinstance(inputs, dict) else f"it is a JSON {type(inputs).__name__}"
    if problem is not None and not (card.input_schema or {}).get("properties"):
        return ExecutorOutput(inputs={}, raw=raw)  # a tool without inputs: nothing to fill
    if problem is not None:
        return ExecutorOutput(
            error=f"{card.name} takes a JSON object of its inputs, {card.input_template()}, "
            f"as the command; {problem}",
            raw=raw,
        )
    return ExecutorOutput(inputs=inputs, raw=raw)


class DirectExecutor(Executor):
    mode = "direct"

    def commands(self, calls: Sequence[ExecutorCall]) -> list[ExecutorOutput]:
        return [command_inputs(c.card, c.action.tool_input) for c in calls]


_EXECUTE_CALL = re.compile(r"tool\.execute\s*\(", re.IGNORECASE)


def _unknown_inputs(inputs: dict[str, Any], card: ToolCard) -> set[str]:
    known = set(card.input_types) or set((card.input_schema or {}).get("properties") or {})
    return set(inputs) - known if known else set()


def _block_output(block: str, card: ToolCard, text: str) -> ExecutorOutput:
    """The calls of a command block (several ``tool.execute`` calls and literal assignments)."""
    try:
        calls = read_calls(block, card.primary_input)
    except CommandError as exc:
        return ExecutorOutput(error=f"executor command: {exc}", raw=text)
    for k, call in enumerate(calls, start=1):
        unknown = _unknown_inputs(call.inputs, card)
        if unknown:
            where = f" (call {k})" if len(calls) > 1 else ""
            return ExecutorOutput(
                error=f"unknown inputs {sorted(unknown)} for {card.name}{where}", raw=text
            )
    inputs = [c.inputs for c in calls]
    return ExecutorOutput(inputs=inputs[0], calls=inputs if len(inputs) > 1 else [], raw=text)


def parse_executor_output(text: str, card: ToolCard) -> ExecutorOutput:
    """Read an executor's reply: a command block (JSON ``command``, the block after ``Generated
    Command:``, or a fenced block calling ``tool.execute``; one or more calls, see
    :mod:`agentflow_env.format.command`), else one ``tool.execute(key=value, ...)`` in the text,
    else ``Command: ...``."""
    block = extract_command(text) if ("```" in text or "{" in text) else None
    if block is not None:
        return _block_output(block, card, text)
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
                unknown = _unknown_inputs(inputs, card)
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
        value = value if "```" in value else value.strip("`").strip()
        return command_inputs(card, value, raw=text)
    return ExecutorOutput(
        error="executor output has neither tool.execute(...) nor 'Command:'", raw=text
    )


class LLMExecutor(Executor):
    """The paper's executor: an LLM writes the concrete tool call."""

    mode = "llm"

    def __init__(
        self, engine: Engine, sampling: SamplingParams | None = None, *, constrained: bool = True
    ) -> None:
        self.engine = engine
        self.constrained = constrained and supports_constraints(engine)
        self.sampling = sampling or MODULE_BUDGETS["executor"].sampling(self.constrained)
        self._grammars: dict[str, Constraint | None] = {}

    def constraint(self, card: ToolCard) -> Constraint | None:
        """The call grammar of ``card``'s tool (None: unconstrained, or inputs no call can be
        written for; see :func:`~agentflow_env.format.modules.executor_grammar`)."""
        if not self.constrained:
            return None
        schema = card.json_schema()
        key = json.dumps(schema, sort_keys=True, default=str)
        if key not in self._grammars:
            grammar = executor_grammar(schema)
            self._grammars[key] = None if grammar is None else Constraint.lark(grammar)
        return self._grammars[key]

    def commands(self, calls: Sequence[ExecutorCall]) -> list[ExecutorOutput]:
        if not calls:
            return []
        requests = [
            GenerationRequest.chat(
                prompts.executor_prompt(
                    c.question, c.action, c.card, c.memory.render(), c.query_analysis
                ),
                constraint=self.constraint(c.card),
                **self.sampling.model_dump(),
            )
            for c in calls
        ]
        results = generate(self.engine, requests, "executor")
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
    query_analysis: str | None = None
    """the episode's query analysis (the reference's verifier reads it)"""
    cards: Sequence[ToolCard] = ()
    """the env's tools (the reference's verifier reads their names and metadata)"""


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


_CONCLUSION = re.compile(r"conclusion\**[ \t]*:?\s*\**\s*(\w+)", re.IGNORECASE)
_DECISION = re.compile(r"\b(stop|continue)\b", re.IGNORECASE)


def _json_verdict(text: str) -> VerifierOutput | None:
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        return None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    signal = obj.get("stop_signal") if isinstance(obj, dict) else None
    if not isinstance(signal, bool):
        return None
    return VerifierOutput(stop=signal, analysis=str(obj.get("analysis", "")).strip())


def parse_verifier_output(text: str) -> VerifierOutput:
    """The verifier's decision, read with the reference's rules, in order:

    1. the reply is a JSON object with a boolean ``stop_signal`` (the reference's structured
       output; ``analysis`` is its analysis);
    2. the **last** ``Conclusion: <word>`` (any case, optional ``**`` and colon) decides when its
       word is STOP or CONTINUE;
    3. otherwise the word STOP or CONTINUE anywhere (any case) decides;
    4. otherwise the episode continues, and the reply is reported as an error.

    One deliberate difference in rule 3: the reference looked for the *substring* ``stop``
    first (so "nonstop", "stopped", or "do not stop; continue" all stopped); here whole words
    count and the last one wins.
    """
    if "{" in text:
        verdict = _json_verdict(text)
        if verdict is not None:
            return verdict
    analysis = text.strip()
    conclusions = _CONCLUSION.findall(text)
    if conclusions and conclusions[-1].upper() in ("STOP", "CONTINUE"):
        return VerifierOutput(stop=conclusions[-1].upper() == "STOP", analysis=analysis)
    words = _DECISION.findall(text)
    if words:
        return VerifierOutput(stop=words[-1].upper() == "STOP", analysis=analysis)
    return VerifierOutput(
        stop=False,
        analysis=analysis,
        error="verifier output has no STOP/CONTINUE conclusion; continuing",
    )


class LLMVerifier(Verifier):
    """The paper's verifier: an LLM reads query + memory and says STOP or CONTINUE.

    A planner ``Finish`` step always stops: the planner has committed to an answer.
    """

    mode = "llm"

    def __init__(
        self, engine: Engine, sampling: SamplingParams | None = None, *, constrained: bool = True
    ) -> None:
        self.engine = engine
        self.constrained = constrained and supports_constraints(engine)
        self.sampling = sampling or MODULE_BUDGETS["verifier"].sampling(self.constrained)
        self.constraint = Constraint.lark(verifier_grammar()) if self.constrained else None

    def decide(self, calls: Sequence[VerifierCall]) -> list[VerifierOutput]:
        pending = [i for i, c in enumerate(calls) if not c.action.is_finish]
        outputs = [VerifierOutput(stop=True, analysis="planner finished") for _ in calls]
        if not pending:
            return outputs
        requests = [
            GenerationRequest.chat(
                prompts.verifier_prompt(
                    calls[i].question,
                    calls[i].memory.render(),
                    calls[i].cards,
                    calls[i].query_analysis,
                ),
                constraint=self.constraint,
                **self.sampling.model_dump(),
            )
            for i in pending
        ]
        results = generate(self.engine, requests, "verifier")
        for i, result in zip(pending, results, strict=True):
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
    query_analysis: str | None = None
    cards: Sequence[ToolCard] = ()
    """the env's tools: the generator's prompt opens as the verifier's does (a shared prefix)"""


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

    def __init__(
        self, engine: Engine, sampling: SamplingParams | None = None, *, constrained: bool = True
    ) -> None:
        self.engine = engine
        self.constrained = constrained and supports_constraints(engine)
        self.sampling = sampling or MODULE_BUDGETS["generator"].sampling(self.constrained)
        self.constraint = Constraint.lark(generator_grammar()) if self.constrained else None

    def answer(self, calls: Sequence[GeneratorCall]) -> list[GeneratorOutput]:
        if not calls:
            return []
        requests = [
            GenerationRequest.chat(
                prompts.generator_prompt(c.question, c.memory.render(), c.cards, c.query_analysis),
                constraint=self.constraint,
                **self.sampling.model_dump(),
            )
            for c in calls
        ]
        outputs = []
        for result in generate(self.engine, requests, "generator"):
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

    def __init__(
        self, engine: Engine, sampling: SamplingParams | None = None, *, constrained: bool = True
    ) -> None:
        self.engine = engine
        self.constrained = constrained and supports_constraints(engine)
        self.sampling = sampling or MODULE_BUDGETS["query_analysis"].sampling(self.constrained)

    def analyze(
        self, questions: Sequence[str], cards: Sequence[ToolCard]
    ) -> list[tuple[str, InfraError | None]]:
        """(analysis text, the engine's failure or None) per question."""
        if not questions:
            return []
        grammar = query_analysis_grammar([c.name for c in cards]) if self.constrained else None
        requests = [
            GenerationRequest.chat(
                prompts.query_analysis_prompt(q, cards),
                constraint=None if grammar is None else Constraint.lark(grammar),
                **self.sampling.model_dump(),
            )
            for q in questions
        ]
        out: list[tuple[str, InfraError | None]] = []
        for result in generate(self.engine, requests, "query_analysis"):
            if result.error:
                out.append(("", engine_error("query_analysis", result.error, result.error_kind)))
            else:
                out.append((result.text.strip(), None))
        return out
