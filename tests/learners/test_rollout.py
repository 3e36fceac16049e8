"""Policy sampling/scoring (token-in/token-out), group collection on the real vector env,
packing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from agentflow_env.format.paper import PAPER_TASK
from agentflow_env.trajectory import EpisodeRecord
from agentflow_env.vector import AgentFlowVectorEnv
from learners.packing import pack_samples
from learners.policy import Policy, SamplingSettings
from learners.rollout import collect_groups, next_context
from tests.agentflow_env.helpers import lookup_env_kwargs


@pytest.fixture(scope="module")
def policy(tiny_model_dir: Path) -> Policy:
    torch.set_num_threads(1)
    return Policy.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def batch(policy: Policy):
    envs = AgentFlowVectorEnv(
        num_envs=6, autoreset_mode=AutoresetMode.DISABLED, **lookup_env_kwargs(6)
    )
    try:
        queries = envs.tasks[:2]
        out = collect_groups(
            envs,
            policy,
            queries,
            3,
            SamplingSettings(1.0, 1.0, 24),
            np.random.default_rng(0),
            episode_prefix="s7-traj",
            metadata={"step": 7},
        )
    finally:
        envs.close()
    return out


def test_sampled_logprobs_equal_recomputed_logprobs(policy: Policy) -> None:
    # Contexts of different lengths: generation left-pads, scoring right-pads; same numbers.
    ctx = [
        policy.text_ids(
            "Query: What is the code of item 3?\nTools: Lookup_Tool, Finish\n\n### Step 1\n"
        ),
        policy.text_ids("Where"),
    ]
    outs = policy.generate(ctx, SamplingSettings(temperature=0.8, max_new_tokens=16, seed=5))
    seqs = [c + o.token_ids for c, o in zip(ctx, outs, strict=False)]
    masks = [[False] * len(c) + [True] * len(o.token_ids) for c, o in zip(ctx, outs, strict=False)]
    with torch.no_grad():
        logp, ent = policy.score(seqs, masks, temperature=0.8, with_entropy=True)
    sampled = torch.tensor([x for o in outs for x in o.logprobs])
    assert torch.allclose(logp, sampled, atol=1e-4), (logp - sampled).abs().max()
    assert ent is not None and bool((ent > 0).all())
    again = policy.generate(ctx, SamplingSettings(temperature=0.8, max_new_tokens=16, seed=5))
    assert [o.token_ids for o in again] == [o.token_ids for o in outs]
    for o in outs:
        assert o.text == policy.decode(o.token_ids)
        assert (o.finish_reason == "stop") == (o.token_ids[-1] in policy.eos_ids)


def test_greedy_generation_is_deterministic(policy: Policy) -> None:
    ctx = [policy.text_ids("Query: hello\n### Step 1\n")] * 2
    a = policy.generate(ctx, SamplingSettings(temperature=0.0, max_new_tokens=12, seed=1))
    b = policy.generate(ctx, SamplingSettings(temperature=0.0, max_new_tokens=12, seed=2))
    assert a[0].token_ids == a[1].token_ids == b[0].token_ids


def test_groups_are_complete_and_samples_line_up(batch) -> None:
    assert len(batch.trajectories) == 6 and batch.group_size == 3
    assert [t.metadata["group"] for t in batch.trajectories] == [0, 0, 0, 1, 1, 1]
    assert len({t.task_id for t in batch.trajectories[:3]}) == 1
    for j, t in enumerate(batch.trajectories):
        assert np.isfinite(t.total_reward) and (t.terminated or t.truncated)
        assert 1 <= t.num_turns <= 3
        turns = sorted(s.turn for s in batch.samples if s.traj == j)
        assert turns == list(range(t.num_turns))
    for s in batch.samples:
        assert len(s.response_ids) == len(s.logprobs) > 0
    batch.advantage_inputs().validate()
    stats = batch.stats()
    assert 0.0 <= stats["rollout/success"] <= 1.0 and stats["rollout/turns"] >= 1


def test_trajectories_are_episode_records_of_the_env_steps(batch) -> None:
    for j, t in enumerate(batch.trajectories):
        mine = [s for s in batch.samples if s.traj == j]
        assert t.episode_id == f"s7-traj{j}"
        assert {k: t.metadata[k] for k in ("step", "index", "group", "sampling")} == {
            "step": 7,
            "index": j,
            "group": j // 3,
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 24},
        }
        assert [turn.action for turn in t.turns] == [s.action_text for s in mine]
        assert [turn.turn for turn in t.turns] == [s.turn + 1 for s in mine]
        assert t.metadata["response_tokens"] == [len(s.response_ids) for s in mine]
        assert t.metadata["finish_reasons"] == [s.finish_reason for s in mine]
        # The env scored the final answer; the learner's reward is that score.
        assert t.answer is not None and t.score_error is None and t.score == t.total_reward
        assert all(turn.reward == 0.0 for turn in t.turns[:-1])
        line = t.model_dump_json()
        assert EpisodeRecord.model_validate_json(line) == t
        assert "logprobs" not in line and "token_ids" not in line and "prompt_ids" not in line
    assert sum(batch.tool_calls().values()) == sum(
        1 for t in batch.trajectories for turn in t.turns if turn.tool_name
    )


def test_query_ids_must_be_one_distinct_id_per_query(policy: Policy) -> None:
    envs = AgentFlowVectorEnv(
        num_envs=4, autoreset_mode=AutoresetMode.DISABLED, **lookup_env_kwargs(6)
    )
    try:
        for bad in ([3, 3], [1]):
            with pytest.raises(ValueError, match="query_ids must be 2 distinct ids"):
                collect_groups(
                    envs,
                    policy,
                    envs.tasks[:2],
                    2,
                    SamplingSettings(),
                    np.random.default_rng(0),
                    query_ids=bad,
                )
    finally:
        envs.close()


def test_next_turn_prompt_extends_the_previous_tokens(batch, policy: Policy) -> None:
    by = {(s.traj, s.turn): s for s in batch.samples}
    extended = 0
    for (traj, turn), s in by.items():
        nxt = by.get((traj, turn + 1))
        if nxt is None:
            continue
        prefix = s.prompt_ids + s.response_ids
        if nxt.prompt_ids[: len(prefix)] == prefix:
            extended += 1
            # The token context decodes to the env's observation text (action as written + result).
            text = policy.tokenizer.decode(nxt.prompt_ids, skip_special_tokens=True)
            assert s.action_text in text and "Result:" in text.split(s.action_text, 1)[1]
    assert extended > 0


def test_packed_scoring_equals_per_turn_scoring(batch, policy: Policy) -> None:
    packed = pack_samples(batch.samples, pack=True)
    single = pack_samples(batch.samples, pack=False)
    assert len(packed) < len(single) == len(batch.samples)

    def per_sample(seqs) -> dict[int, torch.Tensor]:
        with torch.no_grad():
            logp, _ = policy.score([s.ids for s in seqs], [s.target_mask for s in seqs])
        owner = torch.tensor([t for s in seqs for t in s.token_sample])
        return {int(k): logp[owner == k] for k in owner.unique()}

    a, b = per_sample(packed), per_sample(single)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4)
        assert torch.allclose(a[k], torch.tensor(batch.samples[k].logprobs), atol=1e-4)


def test_next_context_falls_back_when_not_append_only(policy: Policy) -> None:
    ctx = policy.text_ids("Query: q\n### Step 1\n")
    resp = policy.text_ids("Tool Name: Finish")
    ids, packable = next_context(
        policy,
        ctx,
        resp,
        "Query: q\n### Step 1\n",
        "Tool Name: Finish",
        "Query: q\n### Step 1\nTool Name: Finish\nResult: ok\n\n### Step 2\n",
    )
    assert packable and ids[: len(ctx) + len(resp)] == ctx + resp
    ids, packable = next_context(
        policy, ctx, resp, "Query: q\n### Step 1\n", "Tool Name: Finish", "something else entirely"
    )
    assert not packable and ids == policy.text_ids("something else entirely")


def test_wrong_vector_env_size_is_rejected(policy: Policy) -> None:
    envs = AgentFlowVectorEnv(
        num_envs=4, autoreset_mode=AutoresetMode.DISABLED, **lookup_env_kwargs(6)
    )
    try:
        with pytest.raises(ValueError, match="num_envs = queries_per_step"):
            collect_groups(
                envs, policy, envs.tasks[:3], 2, SamplingSettings(), np.random.default_rng(0)
            )
    finally:
        envs.close()


def test_paper_prompts_are_not_packed(policy: Policy) -> None:
    """The paper layout rebuilds the prompt each turn: the rollout must re-tokenize every turn
    (a new segment) and the learner must score per-turn samples, never a packed sequence."""
    envs = AgentFlowVectorEnv(
        num_envs=4,
        autoreset_mode=AutoresetMode.DISABLED,
        **lookup_env_kwargs(6, prompt_style="paper"),
    )
    try:
        out = collect_groups(
            envs,
            policy,
            envs.tasks[:2],
            2,
            SamplingSettings(1.0, 1.0, 16),
            np.random.default_rng(1),
        )
    finally:
        envs.close()
    by = {(s.traj, s.turn): s for s in out.samples}
    later = [s for s in out.samples if s.turn > 0]
    assert later, "no trajectory took a second turn"
    for s in later:
        before = by[(s.traj, s.turn - 1)]
        prefix = before.prompt_ids + before.response_ids
        assert s.prompt_ids[: len(prefix)] != prefix
        text = policy.tokenizer.decode(s.prompt_ids, skip_special_tokens=True)
        assert text.startswith(PAPER_TASK) and "'Action Step 1':" in text
    assert len(pack_samples(out.samples, pack=True)) == len(out.samples)
    first = policy.tokenizer.decode(by[(0, 0)].prompt_ids, skip_special_tokens=True)
    ids, packable = next_context(
        policy, by[(0, 0)].prompt_ids, by[(0, 0)].response_ids, first, "x", first + "x\nmore"
    )
    assert packable  # the same check does pack where the text does extend
