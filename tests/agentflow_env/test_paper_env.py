"""The reference's protocol inside the env: the ``paper`` prompt layout rebuilt from memory, the
``paper`` toolset, the per-episode wall-clock budget and over-long prompts that drop their
oldest steps (never the query)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from gymnasium.vector import AutoresetMode

from agentflow_env import AgentFlowEnv
from agentflow_env.config import EnvConfigError
from agentflow_env.format import OMITTED, split_observation
from agentflow_env.format.paper import PAPER_TASK
from agentflow_env.llm.base import GenerationRequest
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.tool_registry import TOOLSETS
from agentflow_env.vector import AgentFlowVectorEnv
from tests.agentflow_env.helpers import finish_action, lookup_action, lookup_env_kwargs
from tools.paper import PAPER_TOOL_NAMES

PAPER_STEP = (
    "1.  **Justification:** the code is in the table\n2.  **Context:** none\n"
    "3.  **Sub-Goal:** item {n}\n4.  **Tool Name:** `Lookup_Tool`"
)


def test_paper_prompt_is_rebuilt_from_memory_each_turn() -> None:
    env = AgentFlowEnv(**lookup_env_kwargs(prompt_style="paper"))
    first, _ = env.reset(options={"task_index": 2})
    assert first.startswith(PAPER_TASK) and "- **Previous Steps:** {}" in first
    second, _, _, _, info = env.step(PAPER_STEP.format(n=2))
    assert info["tool_result"] == "code-2" and info["error"] is None
    assert not second.startswith(first)  # not append-only: a new prompt
    view = split_observation(second)
    assert (view.question, view.tool_names, view.turn) == (
        "What is the code of item 2?",
        ["Lookup_Tool"],
        2,
    )
    [step] = view.steps
    assert (step.tool_name, step.sub_goal, step.result) == ("Lookup_Tool", "item 2", "code-2")
    assert step.command == "execution = tool.execute(query='item 2')"
    # The planner-stopped env tells the planner how to finish; the answer is scored.
    assert "Tool Name: Finish" in first
    _, reward, terminated, _, info = env.step(finish_action("code-2"))
    assert terminated and reward == 1.0
    env.close()


def test_paper_layout_shows_the_query_analysis_and_matches_the_vector_env() -> None:
    def analyst(req: GenerationRequest) -> str:
        return "Summary: an item code.\nRelevant tools: Lookup_Tool."

    kwargs = lookup_env_kwargs(prompt_style="paper", query_analysis=analyst, verifier="planner")
    env = AgentFlowEnv(**kwargs)
    vec = AgentFlowVectorEnv(2, autoreset_mode=AutoresetMode.DISABLED, **kwargs)
    obs, info = env.reset(options={"task_index": 1})
    assert "- **Query Analysis:** Summary: an item code.\nRelevant tools: Lookup_Tool." in obs
    assert split_observation(obs).query_analysis == info["query_analysis"].strip()
    tasks = [env.unwrapped.tasks[1]] * 2
    vobs, _ = vec.reset(options={"tasks": tasks})
    assert vobs[0] == vobs[1] == obs
    one = env.step(PAPER_STEP.format(n=1))[0]
    both = vec.step([PAPER_STEP.format(n=1)] * 2)[0]
    assert both[0] == both[1] == one
    env.close()
    vec.close()


def test_the_time_budget_truncates_with_a_reason() -> None:
    env = AgentFlowEnv(**lookup_env_kwargs(max_episode_s=0.3, max_turns=5))
    env.reset(options={"task_index": 0})
    _, _, terminated, truncated, info = env.step(lookup_action("item 0"))
    assert not (terminated or truncated) and "truncation_reason" not in info
    assert info["timings"]["episode_s"] < 0.3
    time.sleep(0.35)  # the planner's own time counts, as in the reference
    _, reward, terminated, truncated, info = env.step(lookup_action("item 0"))
    assert truncated and not terminated and info["truncation_reason"] == "time_budget"
    assert "answer" in info and reward == 0.0  # the generator still answered and was scored
    env.close()
    env = AgentFlowEnv(**lookup_env_kwargs(max_turns=1))
    env.reset(options={"task_index": 0})
    assert env.step(lookup_action("item 0"))[4]["truncation_reason"] == "max_turns"
    env.close()
    with pytest.raises(EnvConfigError, match="max_episode_s"):
        AgentFlowEnv(**lookup_env_kwargs(max_episode_s=0))


@pytest.mark.parametrize("style", ["full", "compact"])
def test_an_overlong_observation_drops_its_oldest_steps(style: str) -> None:
    big = {f"item {i}": f"code-{i} " + "x" * 300 for i in range(6)}
    kwargs = lookup_env_kwargs(prompt_style=style, max_turns=6)
    kwargs["tools"][0].table.update(big)
    header, _ = AgentFlowEnv(**kwargs).reset(options={"task_index": 0})
    limit = len(header) + 900
    env = AgentFlowEnv(**{**kwargs, "max_observation_chars": limit})
    obs, _ = env.reset(options={"task_index": 0})
    for i in range(5):
        obs = env.step(lookup_action(f"item {i}"))[0]
        assert len(obs) <= limit and obs.startswith(header.rsplit("### Step 1", 1)[0])
        view = split_observation(obs)
        assert view.question == "What is the code of item 0?" and view.turn == i + 2
        assert view.steps[-1].result.startswith(f"code-{i} ")  # the newest step is kept
        assert obs.endswith(f"### Step {i + 2}\n")  # and the open slot
    assert [s.result for s in view.steps[:2]] == [OMITTED, OMITTED]
    env.close()


def test_an_overlong_paper_prompt_drops_its_oldest_steps() -> None:
    kwargs = lookup_env_kwargs(prompt_style="paper", max_turns=6)
    kwargs["tools"][0].table.update({f"item {i}": "y" * 400 for i in range(6)})
    first, _ = AgentFlowEnv(**kwargs).reset(options={"task_index": 3})
    env = AgentFlowEnv(**{**kwargs, "max_observation_chars": len(first) + 1000})
    env.reset(options={"task_index": 3})
    for i in range(4):
        obs = env.step(PAPER_STEP.format(n=i))[0]
    view = split_observation(obs)
    assert len(obs) <= len(first) + 1000 and view.question == "What is the code of item 3?"
    assert (
        view.turn == 5 and view.steps[0].result == OMITTED and view.steps[-1].sub_goal == "item 3"
    )
    env.close()


# ------------------------------------------------------------------------- the paper toolset
def tool_models(requests: Sequence[GenerationRequest]) -> list[str]:
    """One engine behind the paper tools: a generalist, a coder and a page selector."""
    out = []
    for request in requests:
        prompt = request.messages[-1].content
        if "Write a short Python 3 program" in prompt:
            out.append("```python\nprint('sum =', sum(range(5)))\n```")
        elif "Which of these Wikipedia pages" in prompt:
            out.append("[1]")
        else:
            out.append(f"Generalist answer to: {prompt[:40]}")
    return out


def test_the_paper_toolset_offline() -> None:
    engine = CallableEngine(tool_models, batched=True)
    env = AgentFlowEnv("search", tools="paper", engine=engine, num_tasks=8, max_turns=6)
    try:
        assert list(env.unwrapped.flow.tools) == list(TOOLSETS["paper"]) == list(PAPER_TOOL_NAMES)
        obs, info = env.reset(options={"task_index": 0})
        backend = info["tool_backends"]["Ground_Google_Search_Tool"]
        assert "local BM25" in backend and "no live web access" in obs
        entity = env.unwrapped.task.question
        _, _, _, _, info = env.step(f"Sub-Goal: {entity}\nTool Name: Ground_Google_Search_Tool")
        assert info["error"] is None and info["tool_result"].startswith("Doc 1 (Title:")
        assert info["tool_backend"] == backend
        _, _, _, _, info = env.step(f"Sub-Goal: {entity}\nTool Name: Wikipedia_RAG_Search_Tool")
        assert info["error"] is None and info["tool_result"].startswith(
            "Relevant pages:\nArticle 1:"
        )
        _, _, _, _, info = env.step("Sub-Goal: add 0..4\nTool Name: Python_Code_Generator_Tool")
        assert info["error"] is None and "sum = 10" in info["tool_result"]
        _, _, _, _, info = env.step(
            "Sub-Goal: say hi\nTool Name: Generalist_Solution_Generator_Tool"
        )
        assert info["tool_result"] == "Generalist answer to: say hi"
    finally:
        env.close()


def test_the_paper_toolset_needs_an_engine_and_a_corpus() -> None:
    with pytest.raises(ValueError, match="Generalist_Solution_Generator_Tool needs an engine"):
        AgentFlowEnv("search", tools="paper", num_tasks=4)
    with pytest.raises(ValueError, match="Ground_Google_Search_Tool searches a local corpus"):
        AgentFlowEnv(**lookup_env_kwargs(tools=["Ground_Google_Search_Tool"]))
    with pytest.raises(EnvConfigError, match="or a toolset: 'paper'"):
        AgentFlowEnv(**lookup_env_kwargs(tools="papers"))
