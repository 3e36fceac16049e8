"""The paper's LLM modules: parsing of their outputs, and the modes inside the env."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agentflow_env import AgentFlowEnv
from agentflow_env.llm.base import GenerationRequest, GenerationResult, SamplingParams
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.modules import (
    LLMExecutor,
    parse_executor_output,
    parse_generator_output,
    parse_verifier_output,
)
from tests.agentflow_env.helpers import LookupTool, finish_action, lookup_action, lookup_env_kwargs
from tools.base import ToolCard

CARD = ToolCard(name="Lookup_Tool", description="d", input_types={"query": "str", "top_k": "int"})


# ------------------------------------------------------------------------------- executor
@pytest.mark.parametrize(
    ("text", "inputs"),
    [
        ('Analysis: ok\nCommand: execution = tool.execute(query="item 1")', {"query": "item 1"}),
        (
            "```python\nexecution = tool.execute(query='a b', top_k=2)\n```",
            {"query": "a b", "top_k": 2},
        ),
        ('tool.execute("positional")', {"query": "positional"}),
        ("Command: item 2", {"query": "item 2"}),  # fallback: the text after Command:
        (
            'Command: tool.execute(query="unterminated',
            {"query": 'tool.execute(query="unterminated'},
        ),
    ],
)
def test_executor_output_forms(text: str, inputs: dict) -> None:
    out = parse_executor_output(text, CARD)
    assert out.error is None and out.inputs == inputs


@pytest.mark.parametrize("text", ["", "I would search for it.", "\x00\x01garbage"])
def test_executor_garbage_is_an_error(text: str) -> None:
    out = parse_executor_output(text, CARD)
    assert out.inputs == {} and "neither tool.execute" in (out.error or "")


def test_executor_unknown_input_name_is_an_error() -> None:
    out = parse_executor_output('tool.execute(url="x")', CARD)
    assert out.error is not None and "unknown inputs ['url']" in out.error


# ------------------------------------------------------------------------------- verifier
@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("Analysis: enough.\nConclusion: STOP", True),
        ("**Conclusion:** continue", False),
        ("STOP? no. Conclusion: CONTINUE", False),
        ("Enough info. STOP", True),
    ],
)
def test_verifier_output_forms(text: str, stop: bool) -> None:
    out = parse_verifier_output(text)
    assert out.error is None and out.stop is stop


def test_verifier_garbage_continues_and_reports() -> None:
    out = parse_verifier_output("I am not sure what to do")
    assert out.stop is False and "no STOP/CONTINUE" in (out.error or "")


def test_generator_output_forms() -> None:
    assert parse_generator_output("reasoning... <answer> Paris </answer>").answer == "Paris"
    partial = parse_generator_output("Paris, I think")
    assert partial.answer == "Paris, I think" and "no <answer> tag" in (partial.error or "")


# --------------------------------------------------------------------------- modes in the env
class ScriptedModules:
    """A deterministic stand-in for an LLM behind the modules; records every request."""

    def __init__(self, verdicts: Sequence[str] = ("CONTINUE", "STOP")) -> None:
        self.requests: list[GenerationRequest] = []
        self.verdicts = list(verdicts)

    def __call__(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.requests.extend(requests)
        out = []
        for r in requests:
            prompt = r.messages[-1].content if r.messages else ""
            if "executor" in prompt:
                key = prompt.split("Sub-Goal: look up ", 1)[1].split("\n", 1)[0]
                out.append(f'Command: execution = tool.execute(query="{key}")')
            elif "verifier" in prompt:
                out.append(f"Conclusion: {self.verdicts.pop(0) if self.verdicts else 'CONTINUE'}")
            elif "answer generator" in prompt:
                code = prompt.split("Result: ")[-1].split("\n", 1)[0]
                out.append(f"<answer>{code}</answer>")
            else:
                out.append("The query asks for an item code; use Lookup_Tool.")
        return out


def test_full_llm_mode_episode() -> None:
    brain = ScriptedModules()
    engine = CallableEngine(brain, batched=True)
    env = AgentFlowEnv(
        **lookup_env_kwargs(
            executor="llm", verifier="llm", generator="llm", engine=engine, query_analysis=True
        )
    )
    obs, info = env.reset(options={"task_index": 3})
    assert "Query analysis: The query asks for an item code" in obs
    # The planner's sub-goal names the key; the LLM executor writes the call.
    obs, reward, term, trunc, info = env.step("Sub-Goal: look up item 3\nTool Name: Lookup_Tool")
    assert (
        info["tool_input"] == "item 3"
        and info["tool_result"] == "code-3"
        and info["verifier"] == "CONTINUE"
    )
    obs, reward, term, trunc, info = env.step("Sub-Goal: look up item 3\nTool Name: Lookup_Tool")
    assert term and info["verifier"] == "STOP" and info["answer"] == "code-3" and reward == 1.0
    # Default module sampling reaches the engine (greedy), never silently replaced.
    assert all(r.sampling.temperature == 0.0 for r in brain.requests)


def test_modes_mix_freely_direct_executor_llm_verifier() -> None:
    brain = ScriptedModules(verdicts=["STOP"])
    env = AgentFlowEnv(
        **lookup_env_kwargs(verifier="llm", verifier_engine=CallableEngine(brain, batched=True))
    )
    env.reset(options={"task_index": 1})
    _, reward, term, _, info = env.step(lookup_action("item 1") + "\n<answer>code-1</answer>")
    assert info["tool_result"] == "code-1" and term and reward == 1.0
    assert len(brain.requests) == 1 and "verifier" in brain.requests[0].messages[-1].content


def test_unparseable_module_outputs_are_recorded_not_raised() -> None:
    engine = CallableEngine(lambda reqs: ["gibberish"] * len(reqs), batched=True)
    env = AgentFlowEnv(
        **lookup_env_kwargs(
            executor="llm", verifier="llm", generator="llm", engine=engine, max_turns=1
        )
    )
    env.reset(options={"task_index": 0})
    obs, reward, term, trunc, info = env.step("Sub-Goal: look up item 0\nTool Name: Lookup_Tool")
    assert info["error_kind"] == "executor" and "Error: executor failed" in obs
    assert "no STOP/CONTINUE" in info["verifier_error"] and trunc
    assert "no <answer> tag" in info["generator_error"] and reward == 0.0


def test_engine_errors_are_recorded() -> None:
    def failing(reqs: Sequence[GenerationRequest]) -> list[GenerationResult]:
        return [GenerationResult(text="", error="HTTP 503 after 3 retries") for _ in reqs]

    env = AgentFlowEnv(
        **lookup_env_kwargs(executor="llm", engine=CallableEngine(failing, batched=True))
    )
    env.reset(options={"task_index": 0})
    _, _, _, _, info = env.step("Sub-Goal: look up item 0\nTool Name: Lookup_Tool")
    assert info["error"] == "executor engine failed: HTTP 503 after 3 retries"


def test_module_sampling_settings_reach_the_engine() -> None:
    seen: list[SamplingParams] = []

    def record(reqs: Sequence[GenerationRequest]) -> list[str]:
        seen.extend(r.sampling for r in reqs)
        return ['tool.execute(query="item 0")'] * len(reqs)

    sampling = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=77, stop=("\n\n",), seed=5)
    executor = LLMExecutor(CallableEngine(record, batched=True), sampling=sampling)
    env = AgentFlowEnv(
        **lookup_env_kwargs(executor=executor, tools=[LookupTool({"item 0": "code-0"})])
    )
    env.reset(options={"task_index": 0})
    _, _, _, _, info = env.step("Sub-Goal: anything\nTool Name: Lookup_Tool")
    assert info["tool_result"] == "code-0" and seen == [sampling]
    env.step(finish_action("code-0"))


# ------------------------------------------------------------- the reference's module behaviour
@pytest.mark.parametrize(
    ("text", "stop", "error"),
    [
        ('{"analysis": "all there", "stop_signal": true}', True, None),  # structured output
        ('{"analysis": "gaps", "stop_signal": false}', False, None),
        ("Conclusion: STOP\nOn reflection...\n**Conclusion**: CONTINUE", False, None),  # last
        ("Conclusion: the memory suffices, so STOP", True, None),  # word after a bad conclusion
        ("conclusion stop", True, None),
        ("We must not stop yet; continue searching.", False, None),  # the last word wins
        ("The search was nonstop and it stopped.", False, "no STOP/CONTINUE"),  # whole words
        ('{"analysis": "x", "stop_signal": "yes"}', False, "no STOP/CONTINUE"),  # as text
    ],
)
def test_verifier_reads_the_reference_forms(text: str, stop: bool, error: str | None) -> None:
    """The reference's rules (JSON, last Conclusion, a STOP/CONTINUE word, else continue), with
    its substring defect fixed: it read "nonstop"/"stopped" as STOP and preferred STOP whenever
    both words appeared."""
    out = parse_verifier_output(text)
    assert out.stop is stop
    assert (out.error is None) if error is None else (error in (out.error or ""))


def test_llm_executor_runs_every_call_of_a_block_in_order() -> None:
    block = (
        "Analysis: two keys.\nGenerated Command:\n```python\nfirst = 'item 1'\n"
        "execution = tool.execute(query=first)\nexecution = tool.execute(query='item 4')\n```"
    )
    seen: list[str] = []

    def modules(reqs: Sequence[GenerationRequest]) -> list[str]:
        seen.extend(r.messages[-1].content for r in reqs)
        return [block if "executor" in seen[-1] else "Conclusion: CONTINUE" for _ in reqs]

    env = AgentFlowEnv(
        **lookup_env_kwargs(
            executor="llm",
            verifier="llm",
            engine=CallableEngine(modules, batched=True),
            prompt_style="paper",
        )
    )
    obs, _ = env.reset(options={"task_index": 1})
    obs, _, _, _, info = env.step("Sub-Goal: look up two items\nTool Name: Lookup_Tool")
    assert env.unwrapped.flow.tools["Lookup_Tool"].calls == ["item 1", "item 4"]
    assert info["tool_calls"] == [{"query": "item 1"}, {"query": "item 4"}]
    assert info["tool_input"] == (
        "execution = tool.execute(query='item 1')\nexecution = tool.execute(query='item 4')"
    )
    assert info["tool_result"] == (
        "Call 1: execution = tool.execute(query='item 1')\ncode-1\n\n"
        "Call 2: execution = tool.execute(query='item 4')\ncode-4"
    )
    # The paper prompt's previous steps carry the calls as the executor wrote them.
    step = env.unwrapped.memory.actions()["Action Step 1"]
    assert step["command"] == info["tool_input"] and step["result"] == info["tool_result"]
    assert "Call 2: execution = tool.execute(query='item 4')" in obs
    # The verifier read the tools' metadata (the executor prompt came first).
    verifier_prompt = seen[-1]
    assert "verifier" in verifier_prompt and '"tool_name": "Lookup_Tool"' in verifier_prompt
    env.close()


def test_a_refused_block_is_an_executor_error_and_nothing_runs() -> None:
    block = "```python\nimport os\nexecution = tool.execute(query=os.getcwd())\n```"
    engine = CallableEngine(lambda reqs: [block] * len(reqs), batched=True)
    env = AgentFlowEnv(**lookup_env_kwargs(executor="llm", engine=engine))
    env.reset(options={"task_index": 0})
    obs, _, _, _, info = env.step("Sub-Goal: look up item 0\nTool Name: Lookup_Tool")
    assert info["error_kind"] == "executor" and "only literal assignments" in info["error"]
    assert env.unwrapped.flow.tools["Lookup_Tool"].calls == []
    env.close()


def test_verifier_and_executor_prompts_carry_the_query_analysis() -> None:
    brain = ScriptedModules(verdicts=["CONTINUE"])
    env = AgentFlowEnv(
        **lookup_env_kwargs(
            executor="llm",
            verifier="llm",
            engine=CallableEngine(brain, batched=True),
            query_analysis=True,
        )
    )
    env.reset(options={"task_index": 2})
    env.step("Sub-Goal: look up item 2\nTool Name: Lookup_Tool")
    prompts = [r.messages[-1].content for r in brain.requests]
    analysis = "Query analysis: The query asks for an item code; use Lookup_Tool."
    assert sum(analysis in p for p in prompts) == 2  # executor and verifier (not the analyzer)
    env.close()
