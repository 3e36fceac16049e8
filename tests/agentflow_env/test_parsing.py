"""Planner-action parser: the accepted format, tool-name matching, and junk that must not raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_env.format import FINISH, parse_action

TOOLS = ["Search_Tool", "Python_Coder_Tool"]


def test_four_fields_any_order_case_and_bold() -> None:
    text = (
        "**tool name:** search tool\n"
        "**Sub-Goal:** find the employer of Zorvan Kell\n"
        "JUSTIFICATION: the question needs it\n"
        "context: None\n"
        "Command: Zorvan Kell works for"
    )
    action = parse_action(text, TOOLS)
    assert action.error is None
    assert action.tool_name == "Search_Tool"
    assert action.sub_goal == "find the employer of Zorvan Kell"
    assert action.justification == "the question needs it"
    assert action.context == "None"
    assert action.tool_input == "Zorvan Kell works for"


def test_sub_goal_is_the_input_without_command() -> None:
    action = parse_action("Sub-Goal: capital of Vorland\nTool Name: Search_Tool", TOOLS)
    assert action.error is None and action.command is None
    assert action.tool_input == "capital of Vorland"


@pytest.mark.parametrize(
    "written", ["python coder tool", "Python_Coder", "PYTHON-CODER-TOOL", "python_coder_tool"]
)
def test_tool_names_ignore_case_spaces_underscores(written: str) -> None:
    action = parse_action(f"Tool Name: {written}\nCommand: print(1)", TOOLS)
    assert action.tool_name == "Python_Coder_Tool", action.error


def test_multiline_fenced_command_keeps_code_and_ignores_labels_inside() -> None:
    code = "tool: int = 3\nfor context in range(2):\n    print(tool + context)"
    text = f"Sub-Goal: add\nTool Name: Python_Coder_Tool\nCommand:\n```python\n{code}\n```"
    action = parse_action(text, TOOLS)
    assert action.error is None
    assert action.command == code


def test_fenced_block_outside_command_is_the_code() -> None:
    text = "Sub-Goal: compute\nTool Name: Python_Coder_Tool\n```python\nprint(6*7)\n```"
    action = parse_action(text, TOOLS)
    assert action.command == "print(6*7)"


def test_finish_with_answer_and_answer_alone() -> None:
    done = parse_action("Justification: known\nTool Name: Finish\n<answer> Paris </answer>", TOOLS)
    assert done.is_finish and done.answer == "Paris" and done.written_tool_name == "Finish"
    alone = parse_action("I am sure. <answer>42</answer>", TOOLS)
    assert alone.is_finish and alone.tool_name == FINISH and alone.answer == "42"


def test_finish_without_answer_is_an_error() -> None:
    action = parse_action("Tool Name: Finish", TOOLS)
    assert not action.is_finish
    assert action.error is not None and "<answer>" in action.error


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty action"),
        ("Sub-Goal: something", "missing field 'Tool Name:'"),
        ("Tool Name: Calculator\nCommand: 1+1", "unknown tool 'Calculator'"),
        ("Tool Name: Search_Tool", "no input for Search_Tool"),
    ],
)
def test_malformed_actions_get_clear_errors(text: str, needle: str) -> None:
    action = parse_action(text, TOOLS)
    assert action.error is not None and needle in action.error
    assert action.tool_name != FINISH or action.error


def test_unknown_tool_error_lists_valid_names() -> None:
    action = parse_action("Tool Name: Web\nCommand: x", TOOLS)
    assert action.error is not None
    for name in [*TOOLS, FINISH]:
        assert name in action.error


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=2000),
        st.binary(max_size=2000).map(lambda b: b.decode("latin-1")),
        st.none(),
        st.integers(),
    )
)
def test_fuzzed_actions_never_raise(text: object) -> None:
    action = parse_action(text, TOOLS)
    assert (action.error is None) == (
        action.tool_name is not None and (action.is_finish or bool(action.tool_input))
    )


def test_one_megabyte_action_is_parsed_from_its_head() -> None:
    text = "Tool Name: Search_Tool\nCommand: needle\n" + "x" * 1_000_000
    action = parse_action(text, TOOLS)
    assert action.tool_name == "Search_Tool"
    assert action.command is not None and action.command.startswith("needle")
