"""Constraints without a model: building them, compiling them (llguidance), judging finished text,
the server dialects, and the planner's action grammar (every text it admits parses)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from agentflow_env.format import finish_action, parse_action, tool_action
from agentflow_env.format.action import action_grammar
from agentflow_env.llm import Constraint, InvalidConstraintError, lark_literal, regex_escape
from agentflow_env.llm.common import ConstraintUnsupportedError
from agentflow_env.llm.structured import (
    _byte_tokenizer,
    compile_constraint,
    constraint_fields,
    import_llguidance,
    match_text,
    violation,
)

TOOLS = ["Search_Tool", "Python_Coder_Tool", "Wikipedia_Search_Tool"]
VERDICT = Constraint.choice(["STOP", "CONTINUE"])


class Capital(BaseModel):
    city: str
    population: int


# ----------------------------------------------------------------------------- building
def test_constructors_keep_one_value_per_kind_and_are_hashable() -> None:
    constraints = [
        VERDICT,
        Constraint.regex(r"[0-9]{1,3}"),
        Constraint.json({"type": "object", "properties": {"a": {"type": "integer"}}}),
        Constraint.json(Capital),
        Constraint.lark('start: "yes" | "no"'),
    ]
    assert [c.kind for c in constraints] == ["choice", "regex", "json", "json", "grammar"]
    assert len({*constraints, Constraint.choice(["STOP", "CONTINUE"])}) == 5
    assert constraints[3].schema_dict["required"] == ["city", "population"]  # type: ignore[index]
    assert VERDICT.value == ["STOP", "CONTINUE"] and "choice" in VERDICT.describe()


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Constraint.choice([]), "one or more"),
        (lambda: Constraint.choice(["a", "a"]), "duplicate"),
        (lambda: Constraint.choice(["a", ""]), "non-empty"),
        (lambda: Constraint.regex(""), "cannot be empty"),
        (lambda: Constraint.lark(""), "cannot be empty"),
        (lambda: Constraint(kind="regex", pattern="a", grammar="b"), "exactly"),
        (lambda: Constraint(kind="json", json_schema="[1]"), "JSON schema is an object"),
    ],
)
def test_malformed_constraints_are_refused_when_built(build, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        build()


def test_wrong_argument_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="list of strings"):
        Constraint.choice("STOP")
    with pytest.raises(TypeError, match="JSON schema"):
        Constraint.json([{"type": "object"}])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        (Constraint.regex("(unclosed"), "unclosed group"),
        (Constraint.lark("start: undefined_rule"), "undefined_rule"),
        (Constraint.json({"type": "no-such-type"}), "no-such-type"),
    ],
)
def test_constraints_that_do_not_compile_raise_the_compilers_words(
    constraint: Constraint, message: str
) -> None:
    with pytest.raises(InvalidConstraintError, match=message):
        compile_constraint(constraint)


# ----------------------------------------------------------------------------- judging text
@pytest.mark.parametrize(
    ("constraint", "complete", "prefix", "mismatch"),
    [
        (VERDICT, "CONTINUE", "CONT", "CONTINUE!"),
        (Constraint.regex(r"[0-9]{1,3}"), "42", "", "4a"),
        (Constraint.json(Capital), '{"city": "Lima",\n "population": 9}', '{"city": "Li', '{"x"'),
        (Constraint.lark('start: "Tool: " ("A" | "B")'), "Tool: B", "Tool", "Tool: C"),
    ],
)
def test_text_is_judged_complete_prefix_or_mismatch(
    constraint: Constraint, complete: str, prefix: str, mismatch: str
) -> None:
    assert match_text(constraint, complete) == "complete"
    assert match_text(constraint, prefix) == "prefix"
    assert match_text(constraint, mismatch) == "mismatch"
    assert violation(constraint, complete, cut_short=False) is None
    assert violation(constraint, prefix, cut_short=True) is None
    assert "stops before the end" in (violation(constraint, prefix, cut_short=False) or "")
    assert "not a prefix" in (violation(constraint, mismatch, cut_short=True) or "")


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_escaped_text_matches_itself_in_llguidance_and_python(text: str) -> None:
    pattern = regex_escape(text)
    assert re.fullmatch(pattern, text)
    assert match_text(Constraint.regex(pattern), text) == "complete"
    assert match_text(Constraint.lark(f"start: {lark_literal(text)}"), text) == "complete"
    assert match_text(Constraint.regex(pattern), text + "x") == "mismatch"


# ----------------------------------------------------------------------------- dialects
def test_each_dialect_sends_the_constraint_in_its_own_fields() -> None:
    regex, schema = Constraint.regex("[a-z]+"), Constraint.json(Capital)
    assert constraint_fields(VERDICT, "vllm", chat=True) == (
        {},
        {"structured_outputs": {"choice": ["STOP", "CONTINUE"]}},
    )
    assert constraint_fields(regex, "vllm-guided", chat=False) == ({}, {"guided_regex": "[a-z]+"})
    assert constraint_fields(VERDICT, "sglang", chat=True) == ({}, {"regex": "(STOP)|(CONTINUE)"})
    assert constraint_fields(schema, "sglang", chat=True)[1]["json_schema"] == schema.json_schema
    params, extra = constraint_fields(schema, "openai", chat=True)
    assert extra == {} and params["response_format"]["json_schema"]["schema"]["required"] == [
        "city",
        "population",
    ]
    with pytest.raises(ConstraintUnsupportedError, match="only JSON-schema"):
        constraint_fields(regex, "openai", chat=True)
    with pytest.raises(ConstraintUnsupportedError, match="raw prompt"):
        constraint_fields(schema, "openai", chat=False)


# ----------------------------------------------------------------------------- action grammar
def random_texts(
    constraint: Constraint, count: int, seed: int, *, ascii_only: bool = False
) -> list[str]:
    """Texts the constraint admits, drawn by a random walk over its byte-level masks (a complete
    text ends the walk with probability 1/2 wherever one may end)."""
    llg = import_llguidance()
    rng = np.random.default_rng(seed)
    grammar = compile_constraint(constraint)
    texts = []
    for _ in range(count):
        matcher = llg.LLMatcher(_byte_tokenizer(), grammar, log_level=0)
        out = bytearray()
        while True:
            bits = np.unpackbits(
                np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little"
            )
            allowed = np.flatnonzero(bits[:256])
            if bits[256] and (len(allowed) == 0 or rng.random() < 0.5):
                break
            # mostly printable ASCII (short walks), sometimes any allowed byte
            ascii_ok = allowed[(allowed >= 32) & (allowed < 127)]
            pool = ascii_ok if len(ascii_ok) and (ascii_only or rng.random() < 0.9) else allowed
            byte = int(rng.choice(pool))
            assert matcher.consume_token(byte)
            out.append(byte)
        texts.append(out.decode("utf-8"))
    return texts


def test_every_action_the_grammar_admits_parses_with_its_tools() -> None:
    grammar = Constraint.lark(action_grammar(TOOLS, max_line_chars=12, max_command_chars=12))
    texts = random_texts(grammar, count=150, seed=0)
    kinds = set()
    for text in texts:
        action = parse_action(text, TOOLS)
        assert action.error is None, (text, action.error)
        kinds.add(action.tool_name)
    assert kinds == {*TOOLS, "Finish"}  # the walk reached every branch


def test_a_token_budget_bounds_each_free_field_in_tokens() -> None:
    """``max_tokens=64`` (byte-level tokens here): each prose line stops at 8 tokens and the
    command or answer at 24, every walk still parses, and one field's count is its own."""
    grammar = Constraint.lark(action_grammar(TOOLS, max_code_chars=12, max_tokens=64))
    # ASCII: a byte-level cap may end a field inside a multi-byte character (so may a subword
    # vocabulary's, rarely); the parse is what matters and is checked on ASCII walks
    for text in random_texts(grammar, count=120, seed=1, ascii_only=True):
        action = parse_action(text, TOOLS)
        assert action.error is None, (text, action.error)
        lines = dict(line.split(": ", 1) for line in text.splitlines()[:3])
        assert all(1 <= len(v) <= 8 for v in lines.values()), text
        assert len(action.command or action.answer or "") <= 24 or "```" in text
    full = "Justification: " + "j" * 8 + "\nContext: " + "c" * 8 + "\nSub-Goal: " + "s" * 8
    assert match_text(grammar, full + "\nTool Name: Search_Tool\nCommand: q") == "complete"
    assert match_text(grammar, "Justification: " + "j" * 9) == "mismatch"
    assert match_text(grammar, full + "\nTool Name: Search_Tool\nCommand: " + "q" * 25) == (
        "mismatch"
    )
    with pytest.raises(ValueError, match="max_tokens"):
        action_grammar(TOOLS, max_tokens=0)


def test_written_actions_with_every_field_match_the_grammar() -> None:
    grammar = Constraint.lark(action_grammar(TOOLS))
    fields = {"sub_goal": "find the capital", "justification": "a fact", "context": "None"}
    for text in (
        tool_action("Search_Tool", "capital of Peru", **fields),
        tool_action("Python_Coder_Tool", "x = 2\nprint(x * 21)", **fields),
        finish_action("Lima", **fields),
    ):
        assert match_text(grammar, text) == "complete", text


@pytest.mark.parametrize(
    "text",
    [
        "Tool Name: Search_Tool\nCommand: q",  # fields missing
        "Justification: a\nContext: b\nSub-Goal: c\nTool Name: Bing_Tool\nCommand: q",  # unknown
        "Justification: a\nContext: b\nSub-Goal: c\nTool Name: Finish\n<answer></answer>",
        "Justification: a\nContext: b\nSub-Goal: c\nTool Name: Python_Coder_Tool\nCommand: \n"
        "```\nprint(1)\nResult: 1\n```",  # the env's stop sequence inside code
    ],
)
def test_the_grammar_refuses_what_the_constrained_planner_must_not_write(text: str) -> None:
    assert match_text(Constraint.lark(action_grammar(TOOLS)), text) != "complete"


@pytest.mark.parametrize(
    ("tools", "message"),
    [([], "at least one"), (["Finish"], "ends an episode"), (["two\nlines"], "one line")],
)
def test_bad_tool_lists_are_refused(tools: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        action_grammar(tools)


def test_tool_names_are_literal_in_the_grammar() -> None:
    tools = ['Odd "quoted" \\ tool']
    grammar = Constraint.lark(action_grammar(tools))
    text = tool_action(tools[0], "x", sub_goal="s", justification="j", context="c")
    assert match_text(grammar, text) == "complete"
    assert lark_literal(tools[0]) in grammar.grammar  # type: ignore[operator]


def test_the_documented_module_output_shapes_hold() -> None:
    """The examples in agentflow_env.llm.constraints' docstring, as written there."""
    call = Constraint.lark(r"""start: "execution = tool.execute(query=" STRING ")"
    STRING: /"([^"\\\n]|\\.){1,200}"/""")
    verdict = Constraint.lark(r'''start: (RATIONALE "\n")? VERDICT
    RATIONALE: /[^\n]{1,200}/
    VERDICT: "STOP" | "CONTINUE"''')
    answer = Constraint.regex(r"(?s:.{0,300})<answer>[^<\n]{1,100}</answer>")
    assert match_text(call, 'execution = tool.execute(query="the \\"Inca\\" capital")') == (
        "complete"
    )
    assert match_text(call, 'execution = tool.execute(query="two\nlines")') == "mismatch"
    assert match_text(verdict, "STOP") == match_text(verdict, "It is known.\nSTOP") == "complete"
    assert match_text(verdict, "Maybe") == "prefix"  # a rationale so far, no verdict yet
    assert match_text(answer, "Found it.\n<answer>Lima</answer>") == "complete"
    assert match_text(answer, "<answer>Lima</answer> and more") == "prefix"
