"""Planner-action parser: the accepted format, tool-name matching, and junk that must not raise."""

from __future__ import annotations

import json

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


# ------------------------------------------------------- the shapes the reference's prompts ask for
PAPER_TOOLS = [
    "Ground_Google_Search_Tool",
    "Wikipedia_RAG_Search_Tool",
    "Python_Code_Generator_Tool",
]


@pytest.mark.parametrize(
    "text",
    [
        # the reference's Response Format: a numbered list of bold fields
        "1.  **Justification:** need a fact\n2.  **Context:** none\n"
        "3.  **Sub-Goal:** find the capital\n4.  **Tool Name:** Ground_Google_Search_Tool",
        # plain numbered, and ")" numbering
        "1. Justification: need a fact\n2. Context: none\n3. Sub-Goal: find the capital\n"
        "4. Tool Name: Ground_Google_Search_Tool",
        "1) Justification: need a fact\n2) Context: none\n3) Sub-Goal: find the capital\n"
        "4) Tool Name: ground google search tool",
        # bulleted, bold label with the colon outside
        "- **Justification**: need a fact\n- **Context**: none\n* **Sub-Goal**: find the capital"
        "\n+ **Tool Name**: `Ground_Google_Search_Tool`",
        # a JSON NextStep object, bare or fenced
        '{"justification": "need a fact", "context": "none", "sub_goal": "find the capital", '
        '"tool_name": "Ground_Google_Search_Tool"}',
        '```json\n{"Justification": "need a fact", "Context": "none", "Sub-Goal": '
        '"find the capital", "Tool Name": "Ground Google Search Tool"}\n```',
        # bold fields under a heading, the tool name in backticks and followed by prose
        "### Next step\n**Justification:** need a fact\n**Context:** none\n"
        "**Sub-Goal:** find the capital\n**Tool Name:** `Ground_Google_Search_Tool` (web facts)",
        # a later complete block supersedes an earlier one (the reference: last match wins)
        "Justification: need a fact\nContext: old\nSub-Goal: find the president\n"
        "Tool Name: Wikipedia_RAG_Search_Tool\n\nActually, better:\nContext: none\n"
        "Sub-Goal: find the capital\nTool Name: Ground_Google_Search_Tool",
        # JSON inside prose when no labelled tool name is present
        'My next step is {"context": "none", "sub_goal": "find the capital", '
        '"tool_name": "GROUND_GOOGLE_SEARCH_TOOL", "justification": "need a fact"} as planned.',
    ],
)
def test_the_reference_response_shapes_parse(text: str) -> None:
    action = parse_action(text, PAPER_TOOLS)
    assert action.error is None, action.error
    assert action.tool_name == "Ground_Google_Search_Tool"
    assert (action.sub_goal, action.context) == ("find the capital", "none")
    assert action.justification == "need a fact"


def test_last_complete_block_wins_over_a_later_incomplete_one() -> None:
    text = (
        "Context: c1\nSub-Goal: s1\nTool Name: Ground_Google_Search_Tool\n"
        "Sub-Goal: s2\nTool Name: Wikipedia_RAG_Search_Tool"  # no Context: not complete
    )
    action = parse_action(text, PAPER_TOOLS)
    assert (action.tool_name, action.sub_goal, action.context) == (
        "Ground_Google_Search_Tool",
        "s1",
        "c1",
    )
    # Without any complete block, the last block with a tool name counts.
    action = parse_action("Tool Name: Python_Code_Generator_Tool\nTool Name: X_Tool", PAPER_TOOLS)
    assert action.tool_name is None and "unknown tool 'X_Tool'" in (action.error or "")


def test_json_steps_keep_commands_and_answers() -> None:
    action = parse_action(
        '{"tool_name": "Python_Code_Generator_Tool", "command": {"query": "2+2"}}', PAPER_TOOLS
    )
    assert action.command == '{"query": "2+2"}' and action.error is None
    done = parse_action('{"tool_name": "Finish", "answer": " Paris "}', PAPER_TOOLS)
    assert done.is_finish and done.answer == "Paris"
    # Not a step: a JSON list, a JSON object without a tool, invalid JSON.
    for text in ('["Ground_Google_Search_Tool"]', '{"sub_goal": "x"}', '{"tool_name": '):
        assert parse_action(text, PAPER_TOOLS).error is not None


# Labels as the reference's prompts and models write them, in every combination.
_LABEL_STYLES = st.sampled_from(
    ["{L}: ", "**{L}:** ", "**{L}**: ", "{L} : ", "{l}: ", "{U}: ", "{L_}: "]
)
_MARKERS = st.sampled_from(["", "1. ", "2)  ", "- ", "* ", "+ ", "> ", "### ", "  "])
_value = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 ,.'()?-]{0,30}", fullmatch=True).map(str.strip)


def _decorate(name: str, style: int) -> str:
    return [
        name,
        name.lower(),
        name.upper(),
        name.replace("_", " "),
        f"`{name}`",
        f"**{name}**",
        name.replace("_", " ").lower() + " (to look it up)",
    ][style]


def _labelled(fields: dict[str, str], label_style: str, markers: list[str]) -> str:
    labels = {"justification": "Justification", "context": "Context", "sub_goal": "Sub-Goal"}
    labels["tool_name"] = "Tool Name"
    lines = []
    for (key, value), marker in zip(fields.items(), markers, strict=False):
        label = labels[key]
        head = label_style.format(
            L=label, l=label.lower(), U=label.upper(), L_=label.replace(" ", "_").replace("-", "_")
        )
        lines.append(f"{marker}{head}{value}")
    return "\n".join(lines)


@settings(max_examples=400, deadline=None)
@given(
    justification=_value,
    context=_value,
    sub_goal=_value,
    tool=st.sampled_from(PAPER_TOOLS),
    decoration=st.integers(0, 6),
    label_style=_LABEL_STYLES,
    markers=st.lists(_MARKERS, min_size=4, max_size=4),
    shape=st.sampled_from(["labelled", "json", "fenced json"]),
    superseded=st.none() | st.tuples(_value, _value, st.sampled_from(PAPER_TOOLS)),
    gap=st.sampled_from(["\n", "\n\n", "\n\nOn reflection, a better step:\n"]),
)
def test_the_whole_step_grammar(
    justification: str,
    context: str,
    sub_goal: str,
    tool: str,
    decoration: int,
    label_style: str,
    markers: list[str],
    shape: str,
    superseded: tuple[str, str, str] | None,
    gap: str,
) -> None:
    """Any label style, list marker, field order of the reference's format, JSON or fenced
    JSON, tool-name spelling, and an earlier block superseded by the final one."""
    fields = {
        "justification": justification,
        "context": context,
        "sub_goal": sub_goal,
        "tool_name": _decorate(tool, decoration),
    }
    if shape == "labelled":
        text = _labelled(fields, label_style, markers)
        if superseded is not None:
            old_context, old_sub_goal, old_tool = superseded
            earlier = {"context": old_context, "sub_goal": old_sub_goal, "tool_name": old_tool}
            # The final block repeats every field but the justification, written once up front.
            text = (
                _labelled({"justification": justification, **earlier}, label_style, markers)
                + gap
                + _labelled(
                    {k: v for k, v in fields.items() if k != "justification"}, label_style, markers
                )
            )
    else:
        body = json.dumps({**fields, "tool_name": _decorate(tool, min(decoration, 5))})
        text = f"```json\n{body}\n```" if shape == "fenced json" else body
    action = parse_action(text, PAPER_TOOLS)
    assert action.error is None, (text, action.error)
    assert action.tool_name == tool
    assert (action.justification, action.context, action.sub_goal) == (
        justification,
        context,
        sub_goal,
    ), text
