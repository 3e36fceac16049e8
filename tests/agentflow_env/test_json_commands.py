"""Commands for tools with an input schema (MCP tools): one required string input takes the text,
anything else takes a JSON object of the inputs, in the direct executor and in the LLM executor's
``Command:`` form; cards without a schema keep the text-to-primary-input rule."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow_env.format import parse_action
from agentflow_env.memory import Memory
from agentflow_env.modules import (
    DirectExecutor,
    ExecutorCall,
    command_inputs,
    parse_executor_output,
)
from tools.base import ToolCard
from tools.python_coder import PYTHON_CODER_CARD

ADD = ToolCard(
    name="add",
    description="Adds.",
    input_schema={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "note": {}},
        "required": ["b", "a"],
    },
)
SEARCH = ToolCard(
    name="search",
    description="Searches.",
    input_schema={
        "type": "object",
        "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["q"],
    },
)
NUMBER = ToolCard(
    name="square",
    description="Squares.",
    input_schema={"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
)
NO_INPUTS = ToolCard(
    name="now", description="The time.", input_schema={"type": "object", "properties": {}}
)
PLAIN = ToolCard(name="Lookup_Tool", description="Looks up.", input_types={"query": "str - key"})


@pytest.mark.parametrize(
    ("card", "expected"),
    [(PLAIN, "query"), (SEARCH, "q"), (ADD, None), (NUMBER, None), (NO_INPUTS, None)],
)
def test_which_cards_take_text(card: ToolCard, expected: str | None) -> None:
    assert card.text_input() == expected


def test_input_templates_list_required_inputs_first() -> None:
    assert ADD.input_template() == '{"b": <integer>, "a": <integer>, "note": <value, optional>}'
    assert SEARCH.input_template() == '{"q": <string>, "limit": <integer, optional>}'
    assert NO_INPUTS.input_template() == "{}"
    assert PLAIN.input_template() == '{"query": <string>}'


def _direct(card: ToolCard, command: str) -> Any:
    action = parse_action(
        f"Sub-Goal: do it\nTool Name: {card.name}\nCommand: {command}", [card.name]
    )
    [out] = DirectExecutor().commands([ExecutorCall("q?", action, card, Memory())])
    return out


def test_the_direct_executor_reads_json_commands() -> None:
    assert _direct(ADD, '{"a": 1, "b": 2}').inputs == {"a": 1, "b": 2}
    assert _direct(ADD, '```json\n{"a": 1, "b": 2}\n```').inputs == {"a": 1, "b": 2}
    assert _direct(SEARCH, "capital of France").inputs == {"q": "capital of France"}
    assert _direct(NUMBER, '{"x": 2.5}').inputs == {"x": 2.5}
    assert _direct(PLAIN, "item 3").inputs == {"query": "item 3"}
    # a tool without inputs: whatever the planner wrote (even its sub-goal) is no inputs
    assert _direct(NO_INPUTS, "what time is it").inputs == {}
    # types are the tool's to check (against its schema): the executor only reads the JSON
    assert _direct(ADD, '{"a": "one"}').inputs == {"a": "one"}


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("one plus two", "it is not JSON (Expecting value: line 1 column 1 (char 0))"),
        ("[1, 2]", "it is a JSON list"),
        ("3", "it is a JSON int"),
        ('{"a": 1,', "it is not JSON"),
    ],
)
def test_a_command_that_is_not_a_json_object_is_an_executor_error(
    command: str, problem: str
) -> None:
    out = _direct(ADD, command)
    assert out.inputs == {} and out.error is not None
    assert out.error.startswith(
        'add takes a JSON object of its inputs, {"b": <integer>, "a": <integer>, "note": '
        "<value, optional>}, as the command; "
    )
    assert problem in out.error


def test_the_llm_executors_command_form_follows_the_same_rule() -> None:
    assert parse_executor_output('Command: {"a": 4, "b": 5}', ADD).inputs == {"a": 4, "b": 5}
    assert parse_executor_output("Command: `Paris`", SEARCH).inputs == {"q": "Paris"}
    assert "takes a JSON object" in (parse_executor_output("Command: four", ADD).error or "")
    # the paper's call form keeps working with keyword inputs
    out = parse_executor_output("execution = tool.execute(a=4, b=5)", ADD)
    assert out.inputs == {"a": 4, "b": 5}


def test_command_inputs_keeps_the_raw_text() -> None:
    assert command_inputs(ADD, '{"a": 1, "b": 1}', raw="the LLM said").raw == "the LLM said"


def test_every_card_has_a_json_schema() -> None:
    assert ADD.json_schema() == ADD.input_schema
    schema = PYTHON_CODER_CARD.json_schema()
    assert schema["properties"]["code"]["type"] == "string" and schema["required"] == ["code"]
    card = ToolCard(name="T", description="d", input_types={"n": "int - a count", "q": "text"})
    schema = card.json_schema()  # primary input "query" is not among the inputs: added
    assert schema["properties"]["n"] == {"description": "a count", "type": "integer"}
    assert schema["properties"]["q"] == {"description": "text"}
    assert schema["required"] == ["query"]
