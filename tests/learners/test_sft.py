"""SFT demonstrations: the oracle's episodes, laid out in the same token context as rollouts."""

from __future__ import annotations

import pytest

from learners.envs import split_tasks
from learners.flow_grpo.config import ASSETS_DIR, EnvConfig
from learners.policy import Policy
from learners.sft import collect_demonstrations, compact_action, demo_sequences

WARM = ASSETS_DIR / "tiny-warmstart"


def test_compact_action_keeps_what_the_env_needs() -> None:
    action = "Sub-Goal: find it\nTool Name: Search_Tool\nCommand: Ada born in"
    assert compact_action(action) == "Tool Name: Search_Tool\nCommand: Ada born in"
    assert (
        compact_action("Tool Name: Finish\n<answer>Oslo</answer>")
        == "Tool Name: Finish\n<answer>Oslo</answer>"
    )
    assert compact_action("free text") == "free text"


@pytest.mark.skipif(not (WARM / "model.safetensors").is_file(), reason="shipped warm start missing")
def test_demonstrations_are_solved_and_tokenized_like_rollouts() -> None:
    env = EnvConfig(num_tasks=24, eval_tasks=4)
    from learners.envs import make_vector_env

    probe = make_vector_env(env, 1)
    train, _ = split_tasks(list(probe.tasks), env.eval_tasks)
    probe.close()
    demos = collect_demonstrations(env, train[:6], chunk=3, compact=True)
    assert len(demos) == 6  # the oracle solves every generated question within max_turns
    for d in demos:
        assert d["reward"] == 1.0 and len(d["observations"]) == len(d["actions"]) + 1
        assert d["actions"][-1].startswith("Tool Name: Finish")
        for before, action, after in zip(
            d["observations"], d["actions"], d["observations"][1:], strict=False
        ):
            assert after.startswith(before + action)  # the env's append-only contract
    policy = Policy.from_pretrained(WARM, device="cpu")
    seqs = demo_sequences(policy, demos)
    assert len(seqs) == len(demos)  # every demo packs into one sequence
    eos = policy.tokenizer.convert_ids_to_tokens(policy.eos_ids[0])
    for seq, demo in zip(seqs, demos, strict=False):
        targets = [t for t, m in zip(seq.ids, seq.target_mask, strict=False) if m]
        assert policy.tokenizer.decode(targets) == "".join(a + eos for a in demo["actions"])
        text = policy.tokenizer.decode(seq.ids, skip_special_tokens=True)
        assert text == demo["observations"][-1][: len(text)]
