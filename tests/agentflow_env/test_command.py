"""The executor's command blocks: literal evaluation of ``execution = tool.execute(...)`` calls,
never execution of model text."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow_env.format import CommandError, extract_command, merge_results, read_calls
from tools.base import ToolResult, execute_call


def inputs(command: str, primary: str = "query") -> list[dict[str, Any]]:
    return [c.inputs for c in read_calls(command, primary)]


def test_several_calls_run_in_order_with_literal_variables() -> None:
    command = (
        "topic = 'Rhine'\n"
        "k: int = 2\n"
        "queries = ['a', \"b\"]\n"
        "execution = tool.execute(query=f'length of the {topic}', top_k=k)\n"
        "print(execution)\n"
        "execution = tool.execute(query=topic + ' source', top_k=k * 2 - 1)\n"
        "tool.execute(queries)\n"
        'execution = tool.execute(query={\'x\': (1, -2.5, None, True)}, note="""long\ntext""")'
    )
    calls = read_calls(command, "query")
    assert [c.inputs for c in calls] == [
        {"query": "length of the Rhine", "top_k": 2},
        {"query": "Rhine source", "top_k": 3},
        {"query": ["a", "b"]},
        {"query": {"x": (1, -2.5, None, True)}, "note": "long\ntext"},
    ]
    assert calls[0].source == "execution = tool.execute(query=f'length of the {topic}', top_k=k)"


def test_the_writer_reads_back() -> None:
    call = {"query": 'it\'s "quoted"\nand long', "top_k": 3, "flags": [True, None]}
    assert inputs(execute_call(call)) == [call]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("import os\nexecution = tool.execute(query='x')", "line 1: only literal assignments"),
        ("for q in ['a']:\n    execution = tool.execute(query=q)", "not For"),
        ("execution = tool.execute(query=open('/etc/passwd').read())", "Call is not a literal"),
        ("execution = tool.execute(query=__import__('os').getcwd())", "Call is not a literal"),
        ("x = os.environ\nexecution = tool.execute(query=x)", "Attribute is not a literal"),
        ("execution = tool.execute(query=undefined)", "name 'undefined' is not assigned"),
        (
            "execution = tool.execute(query='a')\nexecution = tool.execute(query=execution)",
            "holds a tool call's result",
        ),
        ("execution = other.execute(query='a')", "Call is not a literal"),
        ("a, b = 1, 2\nexecution = tool.execute(query=a)", "assign to plain names only"),
        ("execution = tool.execute('a', 'b')", "one positional value for 'query'"),
        ("execution = tool.execute(query='a', query2='b', **extra)", "** unpacking"),
        ("execution = tool.execute(query='x' * 1000)", "only + of strings"),
        ("execution = tool.execute(query=1 / 0)", "division by zero"),
        ("execution = tool.execute(query=f'{1:>10}')", "format specs"),
        ("execution = tool.execute(query='unterminated)", "not valid Python"),
        ("x = 1", "no tool.execute(...) call"),
        ("\n".join(["execution = tool.execute(query='a')"] * 9), "more than 8"),
    ],
)
def test_anything_but_literals_and_calls_is_refused(command: str, message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        read_calls(command, "query")


def test_model_text_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = (
        f"open({str(marker)!r}, 'w').write('x')\n"
        f"execution = tool.execute(query=open({str(marker)!r}, 'w').write('x'))"
    )
    with pytest.raises(CommandError):
        read_calls(command, "query")
    assert not marker.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("reply", "block"),
    [
        (
            "Analysis: two searches.\nGenerated Command:\n```python\n"
            "execution = tool.execute(query='a')\nexecution = tool.execute(query='b')\n```",
            "execution = tool.execute(query='a')\nexecution = tool.execute(query='b')",
        ),
        (  # the reference's structured output
            '{"analysis": "a", "explanation": "e", "command": '
            '"```python\\nexecution = tool.execute(query=\\"x\\")\\n```"}',
            'execution = tool.execute(query="x")',
        ),
        (  # without the label: the longest fenced block that calls the tool
            "```python\nprint(1)\n```\nthen\n```\nq = 'z'\nexecution = tool.execute(query=q)\n```",
            "q = 'z'\nexecution = tool.execute(query=q)",
        ),
        ("Command: execution = tool.execute(query='x')", None),
        ('```json\n{"query": 1}\n```', None),
    ],
)
def test_the_block_is_found_in_the_reply(reply: str, block: str | None) -> None:
    assert extract_command(reply) == block


def test_merged_results_keep_every_call() -> None:
    one = ToolResult(ok=True, output="first")
    assert merge_results(["c1"], [one]) is one
    two = ToolResult.failure("no entry for 'b'")
    merged = merge_results(["c1", "c2"], [one, two])
    assert not merged.ok and merged.error == "call 2 of 2 failed: no entry for 'b'"
    assert merged.output == "Call 1: c1\nfirst\n\nCall 2: c2\nError: no entry for 'b'"
    assert [c["output"] for c in merged.data["calls"]] == ["first", ""]
    with pytest.raises(ValueError, match="2 results for 1 calls"):
        merge_results(["c1"], [one, two])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_junk_never_raises_anything_but_command_error(text: str) -> None:
    try:
        read_calls(text, "query")
    except CommandError:
        pass
    extract_command(text)
