"""Chat-template prompts: the token prefix property across turns, and the learner's fallback.

Under a chat template, turn k's prompt ids + its sampled action ids are a prefix of turn k+1's
prompt ids for SmolLM2's ChatML template (a real tokenizer). Two templates written here break it
the ways real ones do: one in the style of reasoning models (the generation prompt opens a
reasoning block that the history does not keep), one in the style of Gemma-3-it (system merged
into the first user turn, ``model`` role, assistant content trimmed). Where the property breaks,
the learner detects it, says why, and starts a new segment (never packed across).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agentflow_env import AgentFlowEnv
from agentflow_env.vector import AgentFlowVectorEnv
from learners.packing import pack_samples
from learners.policy import Policy, SamplingSettings
from learners.rollout import PrefixBreakLog, collect, next_chat_context
from tests.agentflow_env.helpers import lookup_action, lookup_env_kwargs

CUE = "the lines Justification, Context, Sub-Goal, Tool Name and Command."
"""what a chat user message asks for after "Write step k:" while the episode goes on"""

# The reasoning style: the generation prompt opens "<think>\n"; assistant turns in the history
# are rendered without it, so the previous prompt stops being a prefix of the next.
REASONING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
# The Gemma-3-it style: the system message opens the first user turn, the assistant is "model",
# every content is trimmed.
GEMMA_STYLE_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\n\n' %}"
    "{% set rest = messages[1:] %}{% else %}{% set first = '' %}{% set rest = messages %}"
    "{% endif %}{% for m in rest %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ (first if loop.first else '') + m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
ACTIONS = [
    lookup_action("item 2"),
    "Tool Name: Lookup_Tool\nCommand: item 9",  # its result is an error message
    "Sub-Goal: say it\nTool Name: Finish\n<answer>code-2</answer>",
]


def _histories(actions: list[str]) -> list[list[dict[str, str]]]:
    """info["messages"] after reset and after each step of one real episode."""
    env = AgentFlowEnv(**lookup_env_kwargs(max_turns=max(len(actions), 1)))
    try:
        _, info = env.reset(options={"task_index": 2})
        history = [info["messages"]]
        for action in actions:
            *_, info = env.step(action)
            history.append(info["messages"])
    finally:
        env.close()
    return history


@pytest.fixture(scope="module")
def smol(smollm2_dir: Path) -> Policy:
    torch.set_num_threads(1)
    return Policy.from_pretrained(smollm2_dir, device="cpu", chat_template=True)


@pytest.fixture
def templated(smol: Policy, smollm2_dir: Path) -> Any:
    """SmolLM2 (same weights) with a fresh tokenizer using a chat template written here."""
    from transformers import AutoTokenizer

    def make(template: str, special_tokens: tuple[str, ...] = ()) -> Policy:
        tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
        tokenizer.chat_template = template
        if special_tokens:  # as in the real family's vocabulary (never fed to this model here)
            tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
        return Policy(smol.model, tokenizer, chat_template=True)

    return make


def _check_turns(policy: Policy, actions: list[str], end: list[int]) -> list[str | None]:
    """For each turn: the break kind (None: turn k's prompt + action ids prefix turn k+1's)."""
    history, kinds = _histories(actions), []
    for k, action in enumerate(actions):
        context = policy.chat_prompt_ids(history[k])
        response = policy.text_ids(action) + end
        ids, kind, detail = next_chat_context(policy, context, response, history[k], history[k + 1])
        assert ids == policy.chat_prompt_ids(history[k + 1]), "the next prompt is the template's"
        if kind is None:
            assert ids[: len(context) + len(response)] == context + response and detail == ""
        else:
            assert ids[: len(context) + len(response)] != context + response and "token" in detail
        kinds.append(kind)
    return kinds


def test_chatml_prompt_plus_action_prefixes_the_next_prompt(smol: Policy) -> None:
    first = smol.chat_prompt_ids(_histories(ACTIONS)[0])
    text = smol.tokenizer.decode(first)
    assert text.startswith("<|im_start|>system\nYou are the planner")
    assert text.endswith(f"Write step 1: {CUE}<|im_end|>\n<|im_start|>assistant\n")
    eos = smol.eos_ids
    assert smol.tokenizer.convert_ids_to_tokens(eos) == ["<|im_end|>"]
    # Stopped on <|im_end|> (the template's end of turn), or cut at the token limit.
    assert _check_turns(smol, ACTIONS, eos) == [None, None, None]
    assert _check_turns(smol, ACTIONS, []) == [None, None, None]


def test_chatml_whitespace_leading_action_is_a_detected_break(smol: Policy) -> None:
    # "  Tool..." after "assistant\n" merges the prompt's last newline into the action's first
    # token: the text is kept, the tokens are not.
    actions = ["  " + ACTIONS[0], *ACTIONS[1:]]
    assert _check_turns(smol, actions, smol.eos_ids) == ["action", None, None]


def test_reasoning_style_template_breaks_at_the_earlier_turns(templated: Any) -> None:
    policy = templated(REASONING_TEMPLATE)
    assert policy.tokenizer.decode(policy.chat_prompt_ids(_histories([])[0])).endswith("<think>\n")
    assert _check_turns(policy, ACTIONS, policy.eos_ids) == ["earlier-turns"] * 3


def test_gemma_style_template_holds_for_trimmed_actions_only(templated: Any) -> None:
    policy = templated(GEMMA_STYLE_TEMPLATE, ("<start_of_turn>", "<end_of_turn>"))
    first = policy.tokenizer.decode(policy.chat_prompt_ids(_histories([])[0]))
    assert first.startswith("<start_of_turn>user\nYou are the planner")
    assert first.endswith(f"Write step 1: {CUE}<end_of_turn>\n<start_of_turn>model\n")
    assert _check_turns(policy, ACTIONS, []) == [None, None, None]
    padded = [ACTIONS[0] + "\n", " " + ACTIONS[1], ACTIONS[2]]
    assert _check_turns(policy, padded, []) == ["action", "action", None]
    # Markers that are plain text (not special tokens) merge with the action's last characters
    # ("</answer>" + "<end_of_turn>"): also caught.
    plain = templated(GEMMA_STYLE_TEMPLATE)
    assert _check_turns(plain, ACTIONS, []) == [None, None, "action"]


def test_real_instruct_model_rollout_keeps_token_in_token_out(smol: Policy) -> None:
    """SmolLM2 samples real actions; every next prompt either extends the last one or is a
    counted, reasoned break (new segment)."""
    envs = AgentFlowVectorEnv(
        2,
        autoreset_mode=AutoresetMode.DISABLED,
        **lookup_env_kwargs(max_turns=2, prompt_style="compact"),
    )
    try:
        batch = collect(
            envs,
            smol,
            envs.tasks[:2],
            [0, 1],
            SamplingSettings(1.0, 1.0, 16),
            np.random.default_rng(0),
            prefix_log=PrefixBreakLog(),
        )
    finally:
        envs.close()
    _assert_segments(batch)
    assert sum(1 for s in batch.samples if s.turn == 1) >= 1


def _assert_segments(batch: Any) -> None:
    """Every turn's prompt extends the previous prompt + response unless a break says why;
    packing follows exactly those segments."""
    by = {(s.traj, s.turn): s for s in batch.samples}
    broken = {(b.traj, b.turn) for b in batch.prefix_breaks}
    for (traj, turn), s in by.items():
        prev = by.get((traj, turn - 1))
        if prev is None:
            continue
        extends = s.prompt_ids[: len(prev.prompt_ids) + len(prev.response_ids)] == (
            prev.prompt_ids + prev.response_ids
        )
        assert extends != ((traj, turn) in broken)
    assert len(pack_samples(batch.samples)) == len(batch.trajectories) + len(broken)
    assert batch.stats()["rollout/prefix_breaks"] == len(broken) / len(batch.trajectories)


def test_rewriting_template_falls_back_to_per_turn_samples_and_says_why(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = Policy.from_pretrained(tiny_model_dir, device="cpu", chat_template=True)
    policy.tokenizer.chat_template = REASONING_TEMPLATE
    envs = AgentFlowVectorEnv(
        4,
        autoreset_mode=AutoresetMode.DISABLED,
        **lookup_env_kwargs(max_turns=3, prompt_style="compact"),
    )
    log = PrefixBreakLog()
    try:
        with caplog.at_level(logging.WARNING, logger="learners.rollout"):
            batches = [
                collect(
                    envs,
                    policy,
                    envs.tasks[:4],
                    [0, 0, 1, 1],
                    SamplingSettings(1.0, 1.0, 24, seed=s),
                    np.random.default_rng(s),
                    prefix_log=log,
                )
                for s in range(2)
            ]
    finally:
        envs.close()
    breaks = [b for batch in batches for b in batch.prefix_breaks]
    later_turns = sum(1 for batch in batches for s in batch.samples if s.turn > 0)
    assert later_turns > 0 and len(breaks) == later_turns, "every later turn breaks"
    assert {b.kind for b in breaks} == {"earlier-turns"}
    for batch in batches:
        _assert_segments(batch)
        assert len(pack_samples(batch.samples)) == len(batch.samples)  # per-turn samples
    # Logged once per run (this log), with the reason, however many breaks there were.
    warnings = [r.getMessage() for r in caplog.records if "prefix break" in r.getMessage()]
    assert len(warnings) == 1 and "earlier turns differently" in warnings[0]


def test_chat_policy_refuses_text_prompts_and_envs_without_messages(tiny_model_dir: Path) -> None:
    policy = Policy.from_pretrained(tiny_model_dir, device="cpu", chat_template=True)
    with pytest.raises(ValueError, match="info\\['messages'\\]"):
        policy.prompt_ids("Query: q\n### Step 1\n")

    class NoMessages:
        num_envs = 1

        def reset(self, **_: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
            return ("Query: q\n### Step 1\n",), {}

    with pytest.raises(ValueError, match="no info\\['messages'\\]"):
        collect(
            NoMessages(),
            policy,
            lookup_env_kwargs(1)["tasks"],
            [0],
            SamplingSettings(),
            np.random.default_rng(0),
        )
