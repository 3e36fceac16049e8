"""AgentFlowEnv: the environment contract of DESIGN.md section 3."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentflow_env  # noqa: F401 - registers the ids
from agentflow_env import AgentFlowEnv, Task
from agentflow_env.format import split_observation, step_header
from tests.agentflow_env.helpers import (
    LookupTool,
    exact_scorer,
    finish_action,
    lookup_action,
    lookup_env_kwargs,
)

CUE = "the lines Justification, Context, Sub-Goal, Tool Name and Command."
"""what a chat user message asks for after "Write step k:" while the episode goes on"""

INFO_KEYS = {"tool_name", "tool_input", "tool_result", "error", "turn"}
FINAL_KEYS = {"answer", "ground_truth", "score"}


@pytest.fixture
def env() -> AgentFlowEnv:
    e = AgentFlowEnv(**lookup_env_kwargs())
    yield e
    e.close()


def test_full_episode_rewards_only_at_the_end(env: AgentFlowEnv) -> None:
    obs, info = env.reset(options={"task_index": 2})
    assert "What is the code of item 2?" in obs and obs.endswith("### Step 1\n")
    assert env.observation_space.contains(obs)
    obs2, reward, terminated, truncated, info = env.step(lookup_action("item 2"))
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert INFO_KEYS <= set(info) and info["tool_result"] == "code-2" and info["error"] is None
    assert obs2.startswith(obs), "observations are append-only"
    assert "Result: code-2" in obs2 and obs2.endswith("### Step 2\n")
    obs3, reward, terminated, truncated, info = env.step(finish_action("code-2"))
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert INFO_KEYS | FINAL_KEYS <= set(info)
    assert info["answer"] == "code-2" and info["ground_truth"] == "code-2" and info["score"] == 1.0


def test_wrong_answer_scores_zero(env: AgentFlowEnv) -> None:
    env.reset(options={"task_index": 1})
    _, reward, terminated, _, info = env.step(finish_action("code-9"))
    assert terminated and reward == 0.0 and info["score"] == 0.0


def test_truncation_at_max_turns_still_answers_and_scores(env: AgentFlowEnv) -> None:
    env.reset(options={"task_index": 0})
    # An <answer> inside a non-finishing step is remembered; the generator ("planner") uses it.
    env.step(lookup_action("item 0") + "\nmaybe <answer>code-0</answer>")
    _, reward, terminated, truncated, info = env.step(lookup_action("item 0"))
    assert not (terminated or truncated)
    _, reward, terminated, truncated, info = env.step(lookup_action("item 0"))
    assert truncated and not terminated
    assert FINAL_KEYS <= set(info) and reward == 1.0


def test_truncation_without_any_answer_scores_zero_and_says_why() -> None:
    env = AgentFlowEnv(**lookup_env_kwargs(max_turns=1))
    env.reset(options={"task_index": 0})
    _, reward, _, truncated, info = env.step(lookup_action("item 0"))
    assert truncated and reward == 0.0 and info["answer"] == ""
    assert info["generator_error"] == "the planner gave no <answer>"


def test_malformed_action_consumes_turn_and_is_shown(env: AgentFlowEnv) -> None:
    env.reset(options={"task_index": 0})
    obs, reward, terminated, truncated, info = env.step("I will just chat instead.")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["turn"] == 1 and "Tool Name" in info["error"]
    assert "Result: Error: could not parse the action" in obs
    assert env.unwrapped.memory.steps[0].error == info["error"]
    _, _, _, _, info = env.step("Tool Name: Teleporter\nCommand: go")
    assert info["turn"] == 2 and "unknown tool 'Teleporter'" in info["error"]


def test_tool_errors_become_error_observations() -> None:
    env = AgentFlowEnv(**lookup_env_kwargs(tool_timeout_s=0.5))
    env.reset(options={"task_index": 0})
    obs, reward, _, truncated, info = env.step(lookup_action("missing key"))
    assert info["error"] == "no entry for 'missing key'" and "Result: Error: no entry" in obs
    assert reward == 0.0 and not truncated and "infra_error" not in info  # the planner's mistake


@pytest.mark.parametrize(
    ("query", "message"),
    [("boom", "tool raised RuntimeError: tool exploded"), ("hang", "timed out after 0.5 s")],
)
def test_a_tool_that_crashes_or_hangs_ends_the_episode_unscored(query: str, message: str) -> None:
    env = AgentFlowEnv(**lookup_env_kwargs(tool_timeout_s=0.5))
    env.reset(options={"task_index": 0})
    _, reward, terminated, truncated, info = env.step(lookup_action(query))
    assert message in info["error"] and truncated and not terminated
    assert math.isnan(reward) and math.isnan(info["score"]) and info["answer"] is None
    assert info["infra_error"]["kind"] == "tool"
    assert info["infra_error"]["source"] == "tool:Lookup_Tool"
    with pytest.raises(gym.error.ResetNeeded):
        env.step(finish_action("code-0"))


def test_memory_is_cleared_between_episodes(env: AgentFlowEnv) -> None:
    env.reset(options={"task_index": 0})
    env.step(lookup_action("item 0") + "\nJustification: SECRET-MARKER-1")
    env.step(finish_action("code-0"))
    obs, _ = env.reset(options={"task_index": 0})
    assert len(env.unwrapped.memory) == 0
    assert "SECRET-MARKER-1" not in obs and "code-0" not in obs
    obs, *_ = env.step(lookup_action("item 1"))
    assert "SECRET-MARKER-1" not in obs and obs.count("### Step") == 2


def test_reset_options_and_errors(env: AgentFlowEnv) -> None:
    assert len(env.unwrapped.tasks) == 6
    obs, info = env.reset(options={"task_index": 5})
    assert info["task_id"] == "t5"
    custom = Task(id="x", question="Custom question?", answer="code-1")
    obs, info = env.reset(options={"task": custom})
    assert "Custom question?" in obs and info["task_id"] == "x"
    with pytest.raises(IndexError, match="out of range"):
        env.reset(options={"task_index": 6})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"tasks": []})


def test_step_before_reset_and_after_end_raise_reset_needed() -> None:
    env = AgentFlowEnv(**lookup_env_kwargs())
    with pytest.raises(gym.error.ResetNeeded):
        env.step(finish_action("x"))
    env.reset(options={"task_index": 0})
    env.step(finish_action("x"))
    with pytest.raises(gym.error.ResetNeeded):
        env.step(finish_action("x"))


def test_same_seed_same_task_different_seeds_differ() -> None:
    env = AgentFlowEnv(**lookup_env_kwargs(n=50))
    first = [env.reset(seed=s)[1]["task_id"] for s in range(20)]
    again = [env.reset(seed=s)[1]["task_id"] for s in range(20)]
    assert first == again
    assert len(set(first)) > 5


def test_scorer_failure_is_reported_not_silent() -> None:
    def broken(prediction: str, task: Task) -> float:
        raise TimeoutError("judge did not answer")

    env = AgentFlowEnv(**lookup_env_kwargs(scorer=broken))
    env.reset(options={"task_index": 0})
    _, reward, terminated, _, info = env.step(finish_action("code-0"))
    assert terminated and math.isnan(reward)  # no outcome: never a 0
    assert math.isnan(info["score"]) and info["score_error"] == "TimeoutError: judge did not answer"
    assert info["infra_error"] == {
        "kind": "judge",
        "source": "judge",
        "message": "TimeoutError: judge did not answer",
    }
    assert info["answer"] == "code-0"


def test_close_closes_tools() -> None:
    tool = LookupTool()
    env = AgentFlowEnv(
        tasks=[Task(id="a", question="q", answer="a")], tools=[tool], scorer=exact_scorer
    )
    env.close()
    assert tool.closed


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="family must be one of"):
        AgentFlowEnv("chess", tasks=[Task(id="a", question="q", answer="a")], tools=[LookupTool()])
    with pytest.raises(ValueError, match="executor must be one of"):
        AgentFlowEnv(**lookup_env_kwargs(executor="telepathy"))
    with pytest.raises(ValueError, match="needs an engine"):
        AgentFlowEnv(**lookup_env_kwargs(verifier="llm"))
    with pytest.raises(ValueError, match="max_turns"):
        AgentFlowEnv(**lookup_env_kwargs(max_turns=0))
    with pytest.raises(ValueError, match="reserved"):
        tool = LookupTool()
        tool.card = tool.card.model_copy(update={"name": "Finish"})
        AgentFlowEnv(**lookup_env_kwargs(tools=[tool]))


_junk = st.one_of(
    st.text(max_size=3000),
    st.binary(max_size=3000).map(lambda b: b.decode("utf-8", "replace")),
    st.sampled_from(
        [
            "",
            "Tool Name:",
            "Tool Name: Finish",
            "<answer></answer>",
            "Command: x",
            "\x00" * 10,
            "Tool Name: Lookup_Tool\nCommand: " + "y" * 1_000_000,
            "🙂" * 100,
        ]
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(actions=st.lists(_junk, min_size=1, max_size=4))
def test_fuzzed_actions_never_raise(env: AgentFlowEnv, actions: list[str]) -> None:
    obs, _ = env.reset(seed=0)
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        assert isinstance(reward, float) and 0.0 <= reward <= 1.0
        assert INFO_KEYS <= set(info)
        if terminated or truncated:
            break


def test_text_spaces_share_tables_but_not_generators() -> None:
    from agentflow_env.spaces import text_space

    a, b = text_space(64), text_space(64)
    assert (
        a is not b
        and a.contains("prose, with punctuation: ok? ünïcode ✓")
        and not a.contains("x" * 65)
    )
    a.seed(1)
    assert b._np_random is None, "seeding one space must not seed another"
    first = a.sample()
    a.seed(1)
    assert a.sample() == first  # seeded sampling stays reproducible
    assert text_space(8).max_length == 8 and a.max_length == 64


def test_sanitize_text_keeps_ascii_and_bmp_and_replaces_the_rest() -> None:
    from agentflow_env.spaces import TEXT_CHARSET, sanitize_text

    assert sanitize_text("plain ascii\n\ttext") == "plain ascii\n\ttext"
    assert sanitize_text("a\x00b") == "a\ufffdb"  # NUL is outside the charset even in ASCII text
    assert sanitize_text("é\x00\ud800🙂中") == "é\ufffd\ufffd\ufffd中"
    assert sanitize_text("x" * 50, max_length=20).endswith("...[truncated]")
    assert len(sanitize_text("x" * 50, max_length=20)) == 20
    assert set(sanitize_text("".join(map(chr, range(0, 0x11000, 7))))) <= set(TEXT_CHARSET)


def test_info_messages_are_the_episode_as_chat_append_only() -> None:
    env = AgentFlowEnv(**lookup_env_kwargs(max_turns=4))
    obs, info = env.reset(options={"task_index": 2})
    history = [info["messages"]]
    system, user = info["messages"]
    assert system["role"] == "system" and "Lookup_Tool" in system["content"]
    assert "Tool Name: <one of: Lookup_Tool, Finish>" in system["content"]
    assert user == {
        "role": "user",
        "content": f"Query: What is the code of item 2?\n\nWrite step 1: {CUE}",
    }
    # Whitespace and all: the assistant message is the action exactly as the env got it.
    actions = ["I will just chat.  ", lookup_action("missing"), lookup_action("item 2")]
    actions.append("  " + finish_action("code-2") + "\n")
    for action in actions:
        obs, _, terminated, truncated, info = env.step(action)
        history.append(info["messages"])
        if terminated or truncated:
            break
    assert terminated
    for before, after in zip(history, history[1:], strict=False):
        assert after[: len(before)] == before, "append-only"
        assert [m["role"] for m in after[len(before) :]] == ["assistant", "user"]
    final = history[-1]
    assert [m["content"] for m in final[2::2]] == actions
    # The chat and text renderings hold the same steps (a step header closes the last one).
    view = split_observation(obs + step_header(len(actions) + 1))
    assert [s.action for s in view.steps] == actions
    assert [m["content"] for m in final[3::2]] == [
        f"Result: {s.result}\n\nWrite step {k}: {CUE}" for k, s in enumerate(view.steps[:-1], 2)
    ] + [f"Result: {view.steps[-1].result}"]
    assert "could not parse" in final[3]["content"] and "no entry" in final[5]["content"]
    # Infos hold copies: editing one changes neither the env nor later infos.
    final[0]["content"] = "edited"
    final.clear()
    _, info = env.reset(options={"task_index": 2})
    assert info["messages"] == history[0]
    env.close()


def test_info_messages_carry_the_query_analysis_and_long_action_cut_like_the_text() -> None:
    from agentflow_env.llm.callable_engine import CallableEngine

    analysis = CallableEngine(lambda messages: "It asks for an item's code.")
    env = AgentFlowEnv(**lookup_env_kwargs(query_analysis=analysis, max_action_chars=40))
    try:
        obs, info = env.reset(options={"task_index": 1})
        assert info["query_analysis"] == "It asks for an item's code."
        assert info["messages"][1]["content"] == (
            "Query: What is the code of item 1?\n\n"
            f"Query analysis: It asks for an item's code.\n\nWrite step 1: {CUE}"
        )
        long_action = lookup_action("item 1") + " " + "x" * 100
        obs, *_, info = env.step(long_action)
        shown = split_observation(obs).steps[0].action
        assert shown.endswith("...[truncated]") and info["messages"][2]["content"] == shown
    finally:
        env.close()
