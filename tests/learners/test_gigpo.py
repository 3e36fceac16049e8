"""GiGPO (episode-level + anchor-state step-level advantages) against hand computations.

Two groups of three trajectories; letters are observation keys (anchor states), gamma = 0.5:

    group 0: traj 0  A B     outcome 1   returns 0.5  1
             traj 1  A C D   outcome 0   returns 0    0    0
             traj 2  A B E   outcome 1   returns 0.25 0.5  1
    group 1: traj 3  A       outcome 1   returns 1
             traj 4  A       outcome 0   returns 0
             traj 5  A F     outcome 0   returns 0    0

Group 1's "A" is another state than group 0's: anchor states are shared within a group only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from learners.flow_grpo.advantages import (
    ESTIMATORS,
    AdvantageInputs,
    compute_advantages,
    discounted_returns,
    gigpo,
)
from learners.flow_grpo.config import ConfigError, make_config

STATES = [["A", "B"], ["A", "C", "D"], ["A", "B", "E"], ["A"], ["A"], ["A", "F"]]
REWARDS = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
GROUPS = np.array([0, 0, 0, 1, 1, 1])


def inputs(rewards: np.ndarray = REWARDS, turn_rewards: bool = True) -> AdvantageInputs:
    traj = np.array([j for j, s in enumerate(STATES) for _ in s])
    turn = np.array([t for s in STATES for t in range(len(s))])
    last = np.array([t == len(STATES[j]) - 1 for j, t in zip(traj, turn, strict=True)])
    return AdvantageInputs(
        rewards=rewards,
        group_ids=GROUPS,
        sample_traj=traj,
        sample_turn=turn,
        group_size=3,
        sample_state=np.array([x for s in STATES for x in s], dtype=object),
        sample_reward=np.where(last, rewards[traj], 0.0) if turn_rewards else None,
    )


def test_discounted_returns_by_hand() -> None:
    expected = [0.5, 1.0, 0, 0, 0, 0.25, 0.5, 1.0, 1.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(discounted_returns(inputs(), 0.5), expected)
    # Without per-turn rewards the outcome is the last turn's reward: the same returns.
    np.testing.assert_allclose(discounted_returns(inputs(turn_rewards=False), 0.5), expected)
    # A reward before the end adds its own discounted share.
    inp = inputs()
    rewards = inp.sample_reward.copy()
    rewards[0] = 0.25  # traj 0, turn 0
    inp = AdvantageInputs(**{**inp.__dict__, "sample_reward": rewards})
    np.testing.assert_allclose(discounted_returns(inp, 0.5)[:2], [0.25 + 0.5, 1.0])


def test_gigpo_centered_by_hand() -> None:
    # Episode level (means 2/3 and 1/3): +1/3, -2/3, +1/3 | +2/3, -1/3, -1/3.
    # Step level, group 0: A {0.5, 0, 0.25} mean 0.25 -> +0.25, -0.25, 0; B {1, 0.5} -> +-0.25;
    # C, D, E seen once -> 0. Group 1: A {1, 0, 0} mean 1/3 -> +2/3, -1/3, -1/3; F -> 0.
    third = 1 / 3
    expected = [
        third + 0.25, third + 0.25,  # traj 0: A, B
        -2 * third - 0.25, -2 * third, -2 * third,  # traj 1: A, C, D
        third, third - 0.25, third,  # traj 2: A, B (reached later: less credit), E
        4 * third,  # traj 3
        -2 * third,  # traj 4
        -2 * third, -third,  # traj 5: A, F
    ]  # fmt: skip
    out = compute_advantages("gigpo", inputs(), scale_by_std=False, gamma=0.5, omega=1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_gigpo_std_scaled_by_hand() -> None:
    eps = 1e-6
    ep0 = (1 / 3) / (math.sqrt(1 / 3) + eps)  # group 0: sample std of (1, 0, 1) is sqrt(1/3)
    step_a = 0.25 / (0.25 + eps)  # A in group 0: (0.5, 0, 0.25), sample std 0.25
    step_b = 0.25 / (math.sqrt(0.125) + eps)  # B: (1, 0.5), sample std sqrt(0.125)
    ep1 = (2 / 3) / (math.sqrt(1 / 3) + eps)  # group 1: (1, 0, 0)
    out = compute_advantages("gigpo", inputs(), gamma=0.5, omega=0.5)
    expected = [
        ep0 + 0.5 * step_a, ep0 + 0.5 * step_b,
        -2 * ep0 - 0.5 * step_a, -2 * ep0, -2 * ep0,
        ep0, ep0 - 0.5 * step_b, ep0,
        ep1 + 0.5 * ep1, -ep1 / 2 - 0.5 * ep1 / 2, -ep1 / 2 - 0.5 * ep1 / 2, -ep1 / 2,
    ]  # fmt: skip
    np.testing.assert_allclose(out, expected, rtol=1e-9)


def test_omega_zero_is_flow_grpo() -> None:
    np.testing.assert_allclose(
        compute_advantages("gigpo", inputs(), omega=0.0), compute_advantages("flow_grpo", inputs())
    )


def test_errored_trajectory_is_left_out_of_both_levels() -> None:
    # Traj 1 lost its outcome to infrastructure (NaN): group 0 is then (1, 1) -> episode 0;
    # A {0.5, 0.25} -> +-0.125; B as before +-0.25; traj 1's turns get 0.
    rewards = REWARDS.copy()
    rewards[1] = math.nan
    out = gigpo(inputs(rewards), scale_by_std=False, gamma=0.5)
    np.testing.assert_allclose(out[:8], [0.125, 0.25, 0, 0, 0, -0.125, -0.25, 0.0])
    assert np.all(np.isfinite(out))


def test_infra_errored_trajectories_and_thin_groups_get_zero_through_compute_advantages() -> None:
    """The trainer's path: ``valid`` marks trajectories whose outcome infrastructure lost.
    gigpo sees only the valid ones (group 0 as in the direct test above) and a group left with
    one valid trajectory (group 1) is dropped: every turn of it gets 0, never a NaN."""
    rewards = REWARDS.copy()
    rewards[[1, 4, 5]] = math.nan
    valid = np.isfinite(rewards)
    inp = AdvantageInputs(**{**inputs(rewards).__dict__, "valid": valid})
    out = compute_advantages("gigpo", inp, scale_by_std=False, gamma=0.5)
    np.testing.assert_allclose(out[:8], [0.125, 0.25, 0, 0, 0, -0.125, -0.25, 0.0])
    np.testing.assert_array_equal(out[8:], 0.0)
    # an errored trajectory marked valid is a caller's bug: refused, not scored 0
    with pytest.raises(ValueError, match="non-finite rewards"):
        compute_advantages("gigpo", AdvantageInputs(**{**inp.__dict__, "valid": None}))


def test_unsorted_samples_give_the_same_advantages() -> None:
    inp = inputs()
    order = np.random.default_rng(0).permutation(len(inp.sample_traj))
    shuffled = AdvantageInputs(
        rewards=inp.rewards,
        group_ids=inp.group_ids,
        sample_traj=inp.sample_traj[order],
        sample_turn=inp.sample_turn[order],
        group_size=3,
        sample_state=inp.sample_state[order],
        sample_reward=inp.sample_reward[order],
    )
    np.testing.assert_allclose(
        compute_advantages("gigpo", shuffled), compute_advantages("gigpo", inputs())[order]
    )


def test_bad_inputs_get_clear_errors() -> None:
    inp = inputs()
    no_states = AdvantageInputs(**{**inp.__dict__, "sample_state": None})
    with pytest.raises(ValueError, match="anchor states"):
        compute_advantages("gigpo", no_states)
    short = AdvantageInputs(**{**inp.__dict__, "sample_state": inp.sample_state[:-1]})
    with pytest.raises(ValueError, match="sample_state has 11 entries for 12"):
        compute_advantages("gigpo", short)
    with pytest.raises(ValueError, match="gamma"):
        compute_advantages("gigpo", inp, gamma=1.5)


def test_registered_and_configurable() -> None:
    assert ESTIMATORS["gigpo"] is gigpo
    cfg = make_config(
        "tiny",
        overrides={"algo.estimator": "gigpo", "algo.gigpo_omega": 0.5, "algo.gigpo_gamma": 0.9},
    )
    assert (cfg.algo.gigpo_omega, cfg.algo.gigpo_gamma) == (0.5, 0.9)
    with pytest.raises(ConfigError, match="gigpo_gamma"):
        make_config("tiny", overrides={"algo.gigpo_gamma": 1.5})
