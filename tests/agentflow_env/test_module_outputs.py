"""Constrained LLM modules: the grammars of their replies (agentflow_env/format/modules.py), the
budgets and stop strings (agentflow_env/module_outputs.py), and the modules with a real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from agentflow_env.config import EnvConfig
from agentflow_env.eval import EvalConfig, run
from agentflow_env.format.action import parse_action
from agentflow_env.format.modules import (
    executor_grammar,
    generator_grammar,
    query_analysis_grammar,
    verifier_grammar,
)
from agentflow_env.llm import CallableEngine, Constraint, GenerationRequest, GenerationResult
from agentflow_env.llm.structured import check_constraint, match_text
from agentflow_env.memory import Memory
from agentflow_env.module_outputs import MODULE_BUDGETS, restore_format_end, supports_constraints
from agentflow_env.modules import (
    ExecutorCall,
    GeneratorCall,
    LLMExecutor,
    LLMGenerator,
    LLMVerifier,
    VerifierCall,
    parse_executor_output,
    parse_generator_output,
    parse_verifier_output,
)
from agentflow_env.planners.batch import CountingEngine
from tools.base import ToolCard

SEARCH = ToolCard(
    name="Search_Tool",
    description="search",
    input_types={"query": "str - the query", "top_k": "int - how many passages"},
)
MCP_ADD = ToolCard(
    name="add",
    description="adds",
    input_schema={
        "type": "object",
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": "number"},
            "loud": {"type": "boolean"},
        },
        "required": ["a", "b"],
    },
)


def _matches(grammar: str, text: str) -> bool:
    return match_text(Constraint.lark(grammar), text) == "complete"


@pytest.mark.parametrize(
    "text, inputs",
    [
        (
            'Generated Command:\n```python\nexecution = tool.execute(query="capital of Peru")\n```',
            {"query": "capital of Peru"},
        ),
        (
            'Look it up.\nGenerated Command:\n```python\nexecution = tool.execute(query="a \\"b\\"'
            '\\\\n", top_k=3)\n```',
            {"query": 'a "b"\\n', "top_k": 3},
        ),
    ],
)
def test_executor_grammar_admits_calls_that_read_back(text: str, inputs: dict) -> None:
    grammar = executor_grammar(SEARCH.json_schema())
    assert grammar is not None and _matches(grammar, text)
    out = parse_executor_output(text, SEARCH)
    assert out.error is None and out.all_calls() == [inputs]


@pytest.mark.parametrize(
    "text",
    [
        "execution = tool.execute(query='x')",  # no label, no block
        'Generated Command:\n```python\nexecution = tool.execute(q="x")\n```',  # not an input
        "Generated Command:\n```python\nexecution = tool.execute(top_k=3)\n```",  # query missing
        'Generated Command:\n```python\nexecution = tool.execute(query="")\n```',  # empty
        'Generated Command:\n```python\nexecution = tool.execute(query=" x")\n```',  # blank first
        'Generated Command:\n```python\nexecution = tool.execute(query="x", top_k="3")\n```',
        'Generated Command:\n```python\nexecution = tool.execute(query="x")\n```\nmore',
        'Generated Command:\n```python\nimport os\nexecution = tool.execute(query="x")\n```',
    ],
)
def test_executor_grammar_refuses_other_replies(text: str) -> None:
    assert not _matches(executor_grammar(SEARCH.json_schema()) or "", text)


def test_executor_grammar_types_each_input_from_the_schema() -> None:
    grammar = executor_grammar(MCP_ADD.json_schema())
    assert grammar is not None
    good = "Generated Command:\n```python\nexecution = tool.execute(a=-2, b=1.5, loud=True)\n```"
    assert _matches(grammar, good)
    assert parse_executor_output(good, MCP_ADD).all_calls() == [{"a": -2, "b": 1.5, "loud": True}]
    assert not _matches(grammar, good.replace("a=-2", 'a="2"'))
    assert not _matches(grammar, good.replace("a=-2, b=1.5", "b=1.5, a=-2"))
    # a required input no literal grammar covers: the call stays free rather than wrong
    listing = {"properties": {"items": {"type": "array"}}, "required": ["items"]}
    assert executor_grammar(listing) is None
    assert executor_grammar({"properties": {}}) is None
    with pytest.raises(ValueError, match="bound"):
        executor_grammar(SEARCH.json_schema(), max_string_chars=0)


def test_verifier_generator_and_query_analysis_grammars_read_back() -> None:
    verdicts = {"Conclusion: STOP": True, "The memory has it.\nConclusion: CONTINUE": False}
    for text, stop in verdicts.items():
        assert _matches(verifier_grammar(), text)
        out = parse_verifier_output(text)
        assert out.error is None and out.stop is stop
    for text in ("Conclusion: MAYBE", "STOP", "a\nb\nConclusion: STOP", "Conclusion: STOP\n"):
        assert not _matches(verifier_grammar(), text)

    assert _matches(generator_grammar(), "Lima is the capital.\n<answer>Lima</answer>")
    assert parse_generator_output("x <answer>Lima</answer>").answer == "Lima"
    for text in ("Lima", "<answer></answer>", "<answer> Lima</answer>", "<answer>Lima</answer> ok"):
        assert not _matches(generator_grammar(), text)

    grammar = query_analysis_grammar(["Search_Tool", "Python_Coder_Tool"])
    good = (
        "Summary: a capital\nSkills: lookup\nRelevant tools: Search_Tool, Python_Coder_Tool\n"
        "Considerations: none"
    )
    assert _matches(grammar, good)
    assert not _matches(grammar, good.replace("Python_Coder_Tool", "Web_Tool"))
    assert not _matches(grammar, good.replace("Skills", "Skill"))
    with pytest.raises(ValueError, match="one non-blank line"):
        query_analysis_grammar(["a\nb"])
    for g in (
        verifier_grammar(),
        generator_grammar(),
        grammar,
        executor_grammar(SEARCH.json_schema()),
    ):
        check_constraint(Constraint.lark(g or ""))  # llguidance compiles every one


def test_restore_format_end_only_where_the_text_shows_the_cut() -> None:
    stop = MODULE_BUDGETS["generator"].stop
    assert restore_format_end("so <answer>Lima", stop) == "so <answer>Lima</answer>"
    assert restore_format_end("<answer>Lima</answer> done", stop) == "<answer>Lima</answer> done"
    assert restore_format_end("no tag at all", stop) == "no tag at all"
    fence = MODULE_BUDGETS["executor"].stop
    assert restore_format_end("G:\n```python\nx = 1\n", fence) == "G:\n```python\nx = 1\n```"
    assert restore_format_end("```python\nx\n```", fence) == "```python\nx\n```"


def test_budgets_are_sized_per_module_and_free_text_keeps_the_paper_budgets() -> None:
    for name, budget in MODULE_BUDGETS.items():
        assert 64 <= budget.constrained_tokens < budget.free_tokens, name
        assert budget.sampling(True).max_tokens == budget.constrained_tokens
        assert budget.sampling(False).temperature == 0.0


def test_constraints_only_on_engines_that_enforce_them() -> None:
    echo = CallableEngine(lambda r: "Conclusion: STOP")
    assert not supports_constraints(echo)
    verifier = LLMVerifier(echo)
    assert verifier.constraint is None and verifier.sampling.max_tokens == 512
    echo.supports_constraints = True  # type: ignore[attr-defined]
    assert supports_constraints(CountingEngine(echo))  # evaluate's wrapper says what it wraps
    verifier = LLMVerifier(echo)
    assert verifier.constraint is not None
    assert verifier.sampling.max_tokens == MODULE_BUDGETS["verifier"].constrained_tokens
    assert LLMVerifier(echo, constrained=False).constraint is None
    assert EnvConfig().constrained_modules is True


def test_an_engine_that_ignores_the_constraint_is_an_infrastructure_failure() -> None:
    seen: list[GenerationRequest] = []

    def free_text(request: GenerationRequest) -> GenerationResult:
        seen.append(request)
        return GenerationResult(text="I think we should search more.")

    engine = CallableEngine(free_text)
    engine.supports_constraints = True  # type: ignore[attr-defined]  # claims it, then does not
    memory = Memory()
    action = parse_action("Tool Name: Search_Tool\nCommand: x", ["Search_Tool"])
    out = LLMVerifier(engine).decide([VerifierCall("q?", memory, action)])[0]
    assert out.infra is not None and "ConstraintViolationError" in (out.error or "")
    assert "constrained_modules=False" in (out.error or "")
    assert seen[0].constraint is not None
    gen = LLMGenerator(engine).answer([GeneratorCall("q?", memory, action)])[0]
    assert gen.infra is not None and gen.answer == ""
    # unconstrained, the same text is the module's own (format) error, as in the paper setting
    free = LLMVerifier(engine, constrained=False).decide([VerifierCall("q?", memory, action)])[0]
    assert free.infra is None and free.error is not None and "no STOP/CONTINUE" in free.error


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_executor_sends_each_tools_own_call_grammar(smollm2_dir: Path) -> None:
    from agentflow_env.llm import make_engine

    engine = make_engine(f"hf:{smollm2_dir}")
    try:
        executor = LLMExecutor(engine)
        assert executor.constrained
        assert executor.sampling.max_tokens == MODULE_BUDGETS["executor"].constrained_tokens
        action = parse_action(
            "Tool Name: Search_Tool\nSub-Goal: find the capital of Peru", ["Search_Tool"]
        )
        calls = [ExecutorCall("What is the capital of Peru?", action, SEARCH, Memory())]
        (out,) = executor.commands(calls)
        assert out.error is None, out.raw
        assert set(out.inputs) <= {"query", "top_k"} and isinstance(out.inputs["query"], str)
    finally:
        engine.close()


@pytest.mark.slow
def test_a_small_model_writes_every_module_reply_in_its_format(
    smollm2_dir: Path, one_thread: None
) -> None:
    """Oracle planner + SmolLM2-135M as executor, verifier and generator: no format errors."""
    cfg = dict(
        planner="scripted:oracle",
        executor="llm",
        verifier="llm",
        generator="llm",
        module_engine=f"hf:{smollm2_dir}",
        episodes=3,
        concurrency=3,
        max_turns=3,
    )
    report = run(EvalConfig(**cfg))  # type: ignore[arg-type]
    errors = report["summary"]["errors"]
    assert errors["executor"] == errors["verifier"] == errors["generator"] == 0, errors
    assert report["summary"]["episodes"] == 3


def test_the_longest_reply_each_grammar_admits_fits_its_budget_at_a_character_per_token() -> None:
    """A reply can be cut by max_tokens only if it is longer than its budget in characters."""
    schema = ToolCard(
        name="Search_Tool", description="d", input_types={"query": "str - q"}, output_type="str"
    ).json_schema()

    def executor(x: int) -> str:
        call = '\nGenerated Command:\n```python\nexecution = tool.execute(query="'
        return "a" * (160 + x) + call + "q" * 239 + '")\n```'

    def query_analysis(x: int) -> str:
        return (
            "Summary: " + "s" * (110 + x) + "\nSkills: " + "k" * 110 + "\nRelevant tools: "
            "Search_Tool\nConsiderations: " + "c" * 110
        )

    longest = {  # the reply with every free part at its bound, plus x characters
        "executor": (executor_grammar(schema), executor),
        "verifier": (verifier_grammar(), lambda x: "a" * (240 + x) + "\nConclusion: CONTINUE"),
        "generator": (
            generator_grammar(),
            lambda x: "r" * (200 + x) + "<answer>" + "x" * 80 + "</answer>",
        ),
        "query_analysis": (query_analysis_grammar(["Search_Tool"]), query_analysis),
    }
    for name, (grammar, reply) in longest.items():
        constraint = Constraint.lark(grammar)
        assert match_text(constraint, reply(0)) == "complete", name
        assert match_text(constraint, reply(1)) == "mismatch", name  # one more is refused
        assert len(reply(0)) <= MODULE_BUDGETS[name].constrained_tokens, (name, len(reply(0)))
