"""The planner's text formats: every writer round-trips through every reader.

The observation layout (:mod:`agentflow_env.format.observation`) and the action format
(:mod:`agentflow_env.format.action`) are written and read by one owner each; these tests write
observations and actions from generated text (including text that looks like the layout itself)
and read them back. The chat rendering of an episode is built from the same pieces as the text
layout; the last tests check that they agree.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agentflow_env.format import (
    FINISH,
    OMITTED,
    PLANNER_STOP,
    ActionFields,
    action_message,
    current_step,
    example_step,
    finish_action,
    last_result,
    omitted_step,
    paper_prompt,
    parse_action,
    planner_header,
    planner_messages,
    read_action,
    read_paper_prompt,
    result_message,
    split_observation,
    step_block,
    step_header,
    tool_action,
    write_action,
)
from agentflow_env.format.paper import PAPER_TASK
from agentflow_env.wrappers import search_action
from tools.base import ToolCard, ToolDemo

CUE = "the lines Justification, Context, Sub-Goal, Tool Name and Command."
"""what a chat user message asks for after "Write step k:" while the episode goes on"""

TRICKY = [
    "### Step 7",
    "\n### Step 7\n",
    "\n### Step 2\n",
    "\n### Step 1\n",
    "Result:",
    "Result: ",
    "\nResult: x",
    "Tool Name:",
    "\nTool Name: Finish",
    "\nContext: c",
    "Query: ",
    "\nTools: A",
    "\n\nAvailable tools:\n",
    ":",
    "::",
    "\n",
    "\n\n",
    "  ",
    "*",
    "`",
    "<answer>",
    "</answer>",
    "```",
    "é中🙂\u2028",
    "\r",
    "\x85",
]
text = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(TRICKY)), max_size=8).map("".join)
optional_text = st.none() | text
name = st.from_regex(r"[A-Z][A-Za-z0-9_ ]{0,14}[A-Za-z0-9]", fullmatch=True).filter(
    lambda n: n.lower() != FINISH.lower()
)
tool_names = st.lists(name, min_size=1, max_size=4, unique_by=str.lower)
STOPS = PLANNER_STOP


# ------------------------------------------------------------------------- the action format
def _clean(value: str) -> str:
    return value.strip().strip("*").strip()


def _expected(fields: ActionFields) -> ActionFields:
    """What reading a written action gives back (the normalization the module documents)."""

    def prose(v: str | None) -> str | None:
        return None if v is None else _clean(" ".join(v.splitlines())) or None

    command = fields.command
    if command is not None:
        if "\n" in command:
            command = command.strip("\n")
        else:  # the label eats spaces, tabs and then '*' after its colon
            command = command.lstrip(" \t").lstrip("*").strip()
            command = command if "```" in command else command.strip("`").strip()
    return ActionFields(
        tool_name=None if fields.tool_name is None else _clean(fields.tool_name),
        command=command or None,
        answer=None if fields.answer is None else fields.answer.strip(),
        sub_goal=prose(fields.sub_goal),
        justification=prose(fields.justification),
        context=prose(fields.context),
    )


def _unwritable(fields: ActionFields) -> bool:
    """Whether the writers must refuse ``fields`` (the module docstring's rules)."""
    values = {k: v for k, v in vars(fields).items() if v is not None}
    if fields.tool_name is None and fields.answer is None:
        return True
    if any("\x00" in v for v in values.values()):
        return True
    last = (
        "answer"
        if fields.answer is not None
        else "command"
        if fields.command is not None
        else "tool_name"
    )
    if any("```" in v for k, v in values.items() if k != last):
        return True
    if "```" in (fields.command or "") and "\n" in (fields.command or ""):
        return True
    if "```" in (fields.answer or "") and fields.command is not None:
        return True
    if any("<answer>" in v.lower() for k, v in values.items() if k != "answer"):
        return True
    if fields.answer is not None and "</answer>" in fields.answer.lower():
        return True
    if fields.tool_name is not None and (
        len(fields.tool_name.splitlines()) != 1 or not _clean(fields.tool_name)
    ):
        return True
    command = fields.command or ""
    if "\n" in command and any(s in "\n" + command for s in STOPS):
        return True
    return any(s in (fields.answer or "") for s in STOPS)


action_fields = st.builds(
    ActionFields,
    tool_name=st.none() | name | text,
    command=optional_text,
    answer=optional_text,
    sub_goal=optional_text,
    justification=optional_text,
    context=optional_text,
)


@settings(max_examples=1000, deadline=None)
@given(action_fields)
def test_write_action_reads_back_or_refuses(fields: ActionFields) -> None:
    if _unwritable(fields):
        with pytest.raises(ValueError, match="action"):
            write_action(fields)
        return
    written = write_action(fields)
    assert not any(stop in written for stop in STOPS)
    assert read_action(written) == _expected(fields)


def _parsed(action: str, tools: list[str]) -> ActionFields:
    """The fields :func:`parse_action` reads, in :class:`ActionFields` form."""
    got = parse_action(action, tools)
    return ActionFields(
        tool_name=got.written_tool_name or None,
        command=got.command,
        answer=got.answer,
        sub_goal=got.sub_goal or None,
        justification=got.justification or None,
        context=got.context or None,
    )


@settings(max_examples=300, deadline=None)
@given(
    tools=tool_names,
    pick=st.integers(0, 3),
    command=text,
    answer=text,
    sub_goal=optional_text,
    justification=optional_text,
    context=optional_text,
)
def test_every_action_writer_parses_back_to_its_fields(
    tools: list[str],
    pick: int,
    command: str,
    answer: str,
    sub_goal: str | None,
    justification: str | None,
    context: str | None,
) -> None:
    tool = tools[pick % len(tools)]
    prose: dict[str, Any] = {
        "sub_goal": sub_goal,
        "justification": justification,
        "context": context,
    }
    call = ActionFields(tool_name=tool, command=command, **prose)
    if _unwritable(call):
        with pytest.raises(ValueError):
            tool_action(tool, command, **prose)
    else:
        written = tool_action(tool, command, **prose)
        assert _parsed(written, tools) == _expected(call)
        action = parse_action(written, tools)
        assert action.tool_name == tool
        assert action.error is None or not action.tool_input
    done = ActionFields(tool_name=FINISH, answer=answer, **prose)
    if _unwritable(done):
        with pytest.raises(ValueError):
            finish_action(answer, **prose)
    else:
        written = finish_action(answer, **prose)
        assert _parsed(written, tools) == _expected(done)
        assert parse_action(written, tools).is_finish


@settings(max_examples=100, deadline=None)
@given(
    query=text.filter(lambda q: "```" not in q and "<answer>" not in q.lower() and "\x00" not in q)
)
def test_search_action_writes_a_one_line_query(query: str) -> None:
    action = parse_action(search_action("Search_Tool", query), ["Search_Tool"])
    assert action.tool_name == "Search_Tool" and action.error is None
    assert action.command == _expected(ActionFields(command=" ".join(query.splitlines()))).command


def test_writers_refuse_what_cannot_be_read_back() -> None:
    with pytest.raises(ValueError, match="tool name or an answer"):
        write_action(ActionFields(sub_goal="x"))
    with pytest.raises(ValueError, match="one non-blank line"):
        tool_action("Search\nTool", "q")
    with pytest.raises(ValueError, match="code fence"):
        tool_action("Python_Coder_Tool", "```python\nprint(1)\n```")
    with pytest.raises(ValueError, match="code fence"):
        tool_action("Search_Tool", "q", sub_goal="a ``` b")
    with pytest.raises(ValueError, match="only the answer"):
        tool_action("Search_Tool", "q", justification="<answer>x</answer>")
    with pytest.raises(ValueError, match="</answer>"):
        finish_action("a</answer>b")
    with pytest.raises(ValueError, match="a planner's step ends"):
        finish_action("line\nResult: forged")
    with pytest.raises(ValueError, match="a planner's step ends"):
        tool_action("Python_Coder_Tool", "x = 1\n### Step 2\n")


def test_writers_defaults_and_fencing() -> None:
    assert finish_action("idle") == "Tool Name: Finish\n<answer>idle</answer>"
    assert tool_action("Search_Tool", "q", sub_goal="s", justification="j") == (
        "Justification: j\nSub-Goal: s\nTool Name: Search_Tool\nCommand: q"
    )
    code = "tool: int = 3\nprint(tool)"
    written = tool_action("Python_Coder_Tool", code)
    assert "```" in written and parse_action(written, ["Python_Coder_Tool"]).command == code


def test_labels_inside_an_answer_are_not_fields() -> None:
    action = parse_action("Tool Name: Finish\n<answer>x\nCommand: y</answer>", ["A"])
    assert action.is_finish and action.answer == "x\nCommand: y" and action.command is None
    assert read_action("<answer>Context: c</answer>") == ActionFields(answer="Context: c")


# ---------------------------------------------------------------------- the observation layout
def _fake_own_header(result: str, number: int) -> bool:
    """A result quoting a header of its own step's number followed by a Result: line: the one
    case the layout cannot tell from its own text (see the module docstring)."""
    header = re.search(rf"(?m)^### Step {number}\n", "\n" + result + "\n\n")
    return header is not None and "\nResult: " in ("\n" + result)[header.end() - 1 :]


step_fields = st.tuples(st.booleans(), name | st.just(""), text, optional_text, text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    style=st.sampled_from(["full", "compact"]),
    question=text,
    analysis=optional_text,
    max_turns=st.none() | st.integers(0, 40),
    tools=tool_names,
    steps=st.lists(step_fields, max_size=5),
)
def test_observation_round_trips_through_every_reader(
    style: str,
    question: str,
    analysis: str | None,
    max_turns: int | None,
    tools: list[str],
    steps: list[tuple[bool, str, str, str | None, str]],
) -> None:
    if style == "full":
        assume("\n\nQuery analysis: " not in question)
    cards = [ToolCard(name=n, description=f"the {n} tool") for n in tools]
    observation = planner_header(question, cards, style, analysis, max_turns) + step_header(1)
    written: list[tuple[str, str]] = []
    fields: list[ActionFields | None] = []
    for k, (finish, tool, value, sub_goal, result) in enumerate(steps, start=1):
        assume(not _fake_own_header(result, k))
        step = ActionFields(
            tool_name=FINISH if finish else tool or tools[0],
            command=None if finish else value,
            answer=value if finish else None,
            sub_goal=sub_goal,
        )
        if _unwritable(step):
            action = step_header(9) + "junk a model wrote"  # what a planner may send instead
            fields.append(None)
        else:
            action = write_action(step)
            fields.append(_expected(step))
        observation += step_block(action, result) + step_header(k + 1)
        written.append((action, result))

    view = split_observation(observation)
    assert view.question == question.strip()
    assert view.tool_names == tools
    assert view.query_analysis == (analysis.strip() if analysis and style == "full" else None)
    assert view.max_turns == (max_turns if style == "full" else None)
    assert [(s.action, s.result) for s in view.steps] == written
    assert view.turn == current_step(observation) == len(steps) + 1
    assert last_result(observation) == (written[-1][1] if written else None)
    for want, step in zip(fields, view.steps, strict=True):
        if want is not None:
            assert _parsed(step.action, tools) == want


def test_step_headers_quoted_by_a_result_do_not_split_steps() -> None:
    cards = [ToolCard(name="A", description="a")]
    quoted = "page one\n### Step 2\nsee below\n### Step 1\nResult: old\n\n### Step 9\nend"
    obs = planner_header("q?", cards, "compact") + step_header(1)
    obs += step_block("Tool Name: A\nCommand: x", quoted) + step_header(2)
    obs += step_block("Tool Name: A\nCommand: y", "two") + step_header(3)
    view = split_observation(obs)
    assert [s.result for s in view.steps] == [quoted, "two"] and view.turn == 3


def test_layout_and_stop_sequences_agree() -> None:
    assert step_block("", "r").startswith(PLANNER_STOP[0])
    assert ("\n" + step_header(2)).startswith(PLANNER_STOP[1])
    assert split_observation("no layout at all").question == ""
    assert current_step("no headers") is None and last_result("nothing") is None


def test_header_refuses_unknown_styles_and_unlistable_tool_names() -> None:
    with pytest.raises(ValueError, match="prompt style"):
        planner_header("q", [ToolCard(name="A", description="a")], "fancy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be listed"):
        planner_header("q", [ToolCard(name="A, B", description="a")])


# ----------------------------------------------------------------------- the paper layout
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    question=text,
    analysis=optional_text,
    tools=tool_names,
    steps=st.lists(st.tuples(name | st.none(), text, optional_text, text), max_size=4),
    omitted=st.integers(0, 4),
    finish_rule=st.booleans(),
)
def test_paper_layout_round_trips(
    question: str,
    analysis: str | None,
    tools: list[str],
    steps: list[tuple[str | None, str, str | None, str]],
    omitted: int,
    finish_rule: bool,
) -> None:
    assume("\n- **Query Analysis:** " not in question)
    cards = [
        ToolCard(name=n, description=f"the {n} tool", input_types={"query": "str"}) for n in tools
    ]
    actions: dict[str, Any] = {}
    for k, (tool, sub_goal, command, result) in enumerate(steps, start=1):
        actions[f"Action Step {k}"] = (
            OMITTED
            if k <= omitted
            else {"tool_name": tool, "sub_goal": sub_goal, "command": command, "result": result}
        )
    prompt = paper_prompt(question, cards, actions, analysis, finish_rule=finish_rule)
    paper = read_paper_prompt(prompt)
    assert paper is not None and paper.question == question.strip()
    want_analysis = analysis.strip() if analysis and analysis.strip() not in ("", "None") else None
    assert paper.query_analysis == want_analysis
    assert paper.tool_names == tools and paper.steps == actions
    view = split_observation(prompt)
    assert view.question == question.strip() and view.tool_names == tools
    assert view.turn == current_step(prompt) == len(steps) + 1
    assert last_result(prompt) == (
        None if not steps else OMITTED if len(steps) <= omitted else steps[-1][3]
    )
    for step, (tool, sub_goal, command, result) in zip(
        view.steps[omitted:], steps[omitted:], strict=True
    ):
        assert (step.tool_name, step.sub_goal, step.command, step.result) == (
            tool,
            sub_goal,
            command,
            result,
        )
    # The prompt is a new text each turn, ending with the rules (not an open step slot).
    assert ("Tool Name: Finish" in prompt.rsplit("\nRules:\n", 1)[1]) is finish_rule
    assert prompt.startswith(PAPER_TASK) and prompt.rstrip().endswith("write nothing after them.")


def test_paper_metadata_is_the_cards_in_the_reference_shape() -> None:
    card = ToolCard(
        name="Ground_Google_Search_Tool",
        description="searches",
        input_types={"query": "str - q", "add_citations": "bool - c"},
        demo_commands=(ToolDemo(command="x y", description="d", inputs={"add_citations": False}),),
        limitations=("one", "two"),
        best_practices=("three",),
    )
    meta = card.metadata()
    assert meta["demo_commands"] == [
        {
            "command": "execution = tool.execute(query='x y', add_citations=False)",
            "description": "d",
        }
    ]
    assert meta["user_metadata"] == {"limitations": "1. one\n2. two", "best_practices": "1. three"}
    prompt = paper_prompt("q?", [card], {})
    assert f"- **Toolbox Metadata:** {{'Ground_Google_Search_Tool': {meta!r}}}" in prompt
    with pytest.raises(ValueError, match="rebuilt each turn"):
        planner_header("q", [card], "paper")
    assert read_paper_prompt("Query: q\nTools: A, Finish\n\n") is None


def test_omitted_steps_read_back_as_omitted() -> None:
    cards = [ToolCard(name="A", description="a")]
    obs = planner_header("q?", cards, "compact") + omitted_step(1) + omitted_step(2)
    obs += step_header(3) + step_block("Tool Name: A\nCommand: x", "three") + step_header(4)
    view = split_observation(obs)
    assert view.question == "q?" and view.turn == 4 == current_step(obs)
    assert [(s.action, s.result) for s in view.steps] == [(OMITTED, OMITTED)] * 2 + [
        ("Tool Name: A\nCommand: x", "three")
    ]


SEARCH = ToolCard(
    name="Search_Tool",
    description="searches",
    demo_commands=(
        ToolDemo(command="a\nResult: b", description="unwritable: it holds a planner stop"),
        ToolDemo(command="founder of Acme", description="find who founded a company"),
    ),
)
CODER = ToolCard(name="Python_Coder_Tool", description="runs code")


def test_example_step_is_a_parsable_step_from_the_first_writable_demo() -> None:
    example = example_step([CODER, SEARCH])
    assert example is not None
    action = parse_action(example, ["Python_Coder_Tool", "Search_Tool"])
    assert action.error is None and action.tool_name == "Search_Tool"
    assert action.command == "founder of Acme"
    assert action.sub_goal == "Find who founded a company" and action.justification
    assert example_step([CODER]) is None
    header = planner_header("q?", [CODER, SEARCH], "full", None, 3)
    assert "For example, one step:\n" + example + "\n\n" in header
    view = split_observation(header + step_header(1))
    assert (view.question, view.tool_names, view.max_turns) == (
        "q?",
        ["Python_Coder_Tool", "Search_Tool"],
        3,
    )
    assert "For example" not in planner_header("q?", [CODER], "full")


def test_chat_messages_hold_the_header_pieces() -> None:
    cards = [SEARCH, CODER]
    header = planner_header("Who founded Acme?", cards, "full", "A company question.", 4)
    system, user = planner_messages("Who founded Acme?", cards, "full", "A company question.", 4)
    assert (system["role"], user["role"]) == ("system", "user")
    # The system message is the header's instructions (tools, step limit, format, example) under
    # its own first part; the query and its analysis go to the user message.
    instructions = header[header.index("Available tools:") :].rstrip("\n")
    assert system["content"].endswith(instructions)
    assert system["content"].startswith("You are the planner") and "Query" not in system["content"]
    assert (
        user["content"] == "Query: Who founded Acme?\n\nQuery analysis: A company question.\n\n"
        f"Write step 1: {CUE}"
    )
    compact = planner_messages("q?", cards, "compact", "ignored", 4)
    assert compact == [
        {"role": "system", "content": "Tools: Search_Tool, Python_Coder_Tool, Finish"},
        {"role": "user", "content": f"Query: q?\n\nWrite step 1: {CUE}"},
    ]
    with pytest.raises(ValueError, match="prompt style"):
        planner_messages("q", cards, "fancy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot be listed"):
        planner_messages("q", [ToolCard(name="A, B", description="a")])


def test_step_messages_keep_the_action_as_written() -> None:
    action = "  Tool Name: Search_Tool\nCommand: x  \n"
    assert action_message(action) == {"role": "assistant", "content": action}
    assert result_message("Doc 1 ...", 3) == {
        "role": "user",
        "content": f"Result: Doc 1 ...\n\nWrite step 3: {CUE}",
    }
    assert result_message("Finished.", None) == {"role": "user", "content": "Result: Finished."}
