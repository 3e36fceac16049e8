"""Advantage estimators against hand computations (stable-baselines3 test_gae style)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learners.flow_grpo.advantages import (
    ESTIMATORS,
    AdvantageInputs,
    IncompleteGroupError,
    compute_advantages,
    register_estimator,
    zero_variance_groups,
)

# Group 0: rewards 1, 0, 0, 1 with 2, 1, 3, 1 turns; group 1: all 1 (no signal).
REWARDS = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
GROUPS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
TURNS = [2, 1, 3, 1, 1, 1, 1, 2]
SAMPLE_TRAJ = np.repeat(np.arange(8), TURNS)
SAMPLE_TURN = np.concatenate([np.arange(n) for n in TURNS])


def inputs(
    rewards=REWARDS, groups=GROUPS, traj=SAMPLE_TRAJ, turn=SAMPLE_TURN, g=4
) -> AdvantageInputs:
    return AdvantageInputs(
        np.asarray(rewards), np.asarray(groups), np.asarray(traj), np.asarray(turn), g
    )


def test_flow_grpo_broadcasts_group_normalized_outcome() -> None:
    # mean 0.5, sample std sqrt(4 * 0.25 / 3) = sqrt(1/3): advantage +-0.5 * sqrt(3)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    expected = [a, a, -a, -a, -a, -a, a] + [0.0] * 5
    np.testing.assert_allclose(compute_advantages("flow_grpo", inputs()), expected, rtol=1e-9)


def test_flow_grpo_without_std_scaling_only_centers() -> None:
    out = compute_advantages("flow_grpo", inputs(), scale_by_std=False)
    np.testing.assert_allclose(out, [0.5, 0.5, -0.5, -0.5, -0.5, -0.5, 0.5] + [0.0] * 5)


def test_turn_norm_normalizes_over_all_turns_of_the_group() -> None:
    # group 0 turn rewards: 1,1 | 0 | 0,0,0 | 1 -> mean 3/7, sample variance (84/49)/6 = 2/7
    std = math.sqrt(2 / 7) + 1e-6
    hi, lo = (4 / 7) / std, -(3 / 7) / std
    expected = [hi, hi, lo, lo, lo, lo, hi] + [0.0] * 5
    out = compute_advantages("flow_grpo_turn_norm", inputs())
    np.testing.assert_allclose(out, expected, rtol=1e-9)
    assert hi == pytest.approx(1.0690, abs=1e-4) and lo == pytest.approx(-0.8018, abs=1e-4)


def test_last_turn_credits_only_the_final_turn() -> None:
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    expected = [0.0, a, -a, 0.0, 0.0, -a, a] + [0.0] * 5
    np.testing.assert_allclose(compute_advantages("last_turn", inputs()), expected, rtol=1e-9)


def test_last_turn_with_unsorted_samples() -> None:
    order = np.array([1, 0, 6, 5, 4, 3, 2, 7, 8, 9, 10, 11])
    out = compute_advantages("last_turn", inputs(traj=SAMPLE_TRAJ[order], turn=SAMPLE_TURN[order]))
    ref = compute_advantages("last_turn", inputs())
    np.testing.assert_allclose(out, ref[order])


def test_incomplete_group_is_rejected_loudly() -> None:
    with pytest.raises(IncompleteGroupError, match="group_size=4"):
        compute_advantages(
            "flow_grpo",
            inputs(
                rewards=REWARDS[:7], groups=GROUPS[:7], traj=SAMPLE_TRAJ[:-2], turn=SAMPLE_TURN[:-2]
            ),
        )


def test_trajectory_without_turns_is_rejected() -> None:
    keep = SAMPLE_TRAJ != 3
    with pytest.raises(IncompleteGroupError, match=r"\[3\]"):
        compute_advantages("flow_grpo", inputs(traj=SAMPLE_TRAJ[keep], turn=SAMPLE_TURN[keep]))


def test_nan_reward_is_rejected() -> None:
    bad = REWARDS.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        compute_advantages("flow_grpo", inputs(rewards=bad))


def test_group_of_one_is_rejected() -> None:
    with pytest.raises(IncompleteGroupError):
        compute_advantages("flow_grpo", inputs(g=1))


def test_unknown_estimator() -> None:
    with pytest.raises(KeyError, match="registered"):
        compute_advantages("nope", inputs())


def test_registered_estimator_is_a_small_function() -> None:
    @register_estimator("raw_outcome_test")
    def raw(inp: AdvantageInputs, *, scale_by_std: bool, eps: float) -> np.ndarray:
        return inp.rewards[inp.sample_traj]

    try:
        np.testing.assert_allclose(
            compute_advantages("raw_outcome_test", inputs()), REWARDS[SAMPLE_TRAJ]
        )
    finally:
        ESTIMATORS.pop("raw_outcome_test")


def test_zero_variance_groups() -> None:
    assert zero_variance_groups(REWARDS, GROUPS) == {1}


# An infrastructure failure is no zero (issue 15): trajectory 1 of group 0 lost its outcome
# (reward NaN), and in group 1 only trajectory 4 kept one.
VALID = np.array([True, False, True, True, True, False, False, False])
LOST = np.where(VALID, REWARDS, np.nan)


def test_errored_trajectories_leave_the_group_statistics_and_get_no_advantage() -> None:
    # group 0 valid rewards 1, 0, 1: mean 2/3, sample std sqrt(((1/3)^2 * 2 + (2/3)^2) / 2)
    std = math.sqrt(((1 / 3) ** 2 * 2 + (2 / 3) ** 2) / 2) + 1e-6
    hi, lo = (1 / 3) / std, -(2 / 3) / std
    expected = [hi, hi, 0.0, lo, lo, lo, hi] + [0.0] * 5  # group 1: one valid -> dropped
    data = AdvantageInputs(LOST, GROUPS, SAMPLE_TRAJ, SAMPLE_TURN, 4, VALID)
    np.testing.assert_allclose(compute_advantages("flow_grpo", data), expected, rtol=1e-9)
    # as zeros they would have pulled the mean down and given the lost turn an advantage
    as_zero = compute_advantages("flow_grpo", inputs(np.nan_to_num(LOST)))
    assert as_zero[2] != 0.0 and not np.allclose(as_zero[:2], hi)
    for name in ("flow_grpo_turn_norm", "last_turn"):
        out = compute_advantages(name, data)
        assert out[2] == 0.0 and np.all(out[7:] == 0.0), name


def test_thin_and_zero_variance_groups_see_only_valid_trajectories() -> None:
    from learners.flow_grpo.advantages import thin_groups

    assert thin_groups(VALID, GROUPS) == {1}
    assert zero_variance_groups(LOST, GROUPS) == set()
    rewards = np.array([1.0, np.nan, 1.0, 1.0, 0.0, 1.0, np.nan, 1.0])
    assert zero_variance_groups(rewards, GROUPS) == {0}  # the lost one is no difference


def test_a_nan_reward_must_be_marked_invalid() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        compute_advantages("flow_grpo", inputs(LOST))
