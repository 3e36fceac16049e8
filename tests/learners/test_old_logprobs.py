"""Old log-probs recomputed by the trainer (``algo.recompute_old_logprobs``).

With the transformers backend in fp32 the recomputed values equal the sampled ones (the sampler
reports the loss's own distribution), packed or per turn, at temperatures 1.0 and 0.7; a sampler
that reports another distribution (raw log-probs at 0.7) puts the first step's ratio off 1 unless
the trainer recomputes; and 2 FSDP ranks, one of them without samples, recompute in lock step.

This file is also the FSDP worker: ``torchrun tests/learners/test_old_logprobs.py MODEL OUT``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from learners.flow_grpo.config import make_config
from learners.flow_grpo.old_logprobs import recompute_old_logprobs
from learners.packing import pack_samples
from learners.policy import HFGenerator, Policy, SamplingSettings
from learners.rollout import TurnSample

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5

OPENINGS = [
    "Question: Who founded the company where Ada works?\n",
    "Question: In which city was Bo born?\n",
    "Question: What country is Lima in?\n",
    "Question: Who is the manager of Cy?\n",
]


def _sample_two_turns(policy: Policy, temperature: float, seed: int = 0) -> list[TurnSample]:
    """Two sampled turns per opening; turn 2's prompt extends turn 1's (so the turns pack)."""
    samples: list[TurnSample] = []
    contexts = [policy.text_ids(text) for text in OPENINGS]
    suffix = policy.text_ids("\nResult: nothing found.\nSub-Goal:")
    for turn in range(2):
        outs = policy.generate(contexts, SamplingSettings(temperature, 1.0, 10, seed + turn))
        for traj, (ctx, out) in enumerate(zip(contexts, outs, strict=True)):
            samples.append(
                TurnSample(
                    traj,
                    traj // 2,
                    turn,
                    list(ctx),
                    list(out.token_ids),
                    list(out.logprobs),
                    out.finish_reason,
                    out.text,
                )
            )
        contexts = [c + list(o.token_ids) + suffix for c, o in zip(contexts, outs, strict=True)]
    assert all(s.response_ids for s in samples)
    return samples


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_recomputed_equal_sampled_in_fp32_packed_and_per_turn(
    tiny_model_dir: Path, temperature: float
) -> None:
    policy = Policy.from_pretrained(tiny_model_dir, device="cpu")
    samples = _sample_two_turns(policy, temperature)
    assert len(pack_samples(samples, pack=True)) == len(OPENINGS)  # the packed layout is used
    for pack in (True, False):
        fresh, stats = recompute_old_logprobs(
            policy, samples, temperature=temperature, pack=pack, micro_batch_size=3
        )
        assert [s.response_ids for s in fresh] == [s.response_ids for s in samples]
        for old, new in zip(samples, fresh, strict=True):
            assert len(new.logprobs) == len(old.response_ids)
            np.testing.assert_allclose(new.logprobs, old.logprobs, rtol=0, atol=TOL)
        assert stats["train/old_logprob_max_abs_diff"] <= TOL
        assert 0 <= stats["train/old_logprob_abs_diff"] <= stats["train/old_logprob_max_abs_diff"]
    # The recomputation is at the sampling temperature: at 0.7 it is not the T=1 distribution.
    at_one, _ = recompute_old_logprobs(
        policy, samples, temperature=1.0, pack=True, micro_batch_size=8
    )
    gap = max(
        abs(a - b)
        for s, t in zip(samples, at_one, strict=True)
        for a, b in zip(s.logprobs, t.logprobs, strict=True)
    )
    assert (gap > 1e-2) if temperature == 0.7 else (gap <= TOL)


def test_recompute_leaves_the_train_mode_and_rejects_a_bad_micro_batch(
    tiny_model_dir: Path,
) -> None:
    policy = Policy.from_pretrained(tiny_model_dir, device="cpu")
    samples = _sample_two_turns(policy, 1.0)
    policy.model.train()
    recompute_old_logprobs(policy, samples, temperature=1.0, pack=True, micro_batch_size=2)
    assert policy.model.training
    with pytest.raises(ValueError, match="micro_batch_size"):
        recompute_old_logprobs(policy, samples, temperature=1.0, pack=True, micro_batch_size=0)


def test_default_is_on_for_vllm_and_off_for_transformers() -> None:
    assert make_config("paper").recomputes_old_logprobs  # rollout.backend = vllm
    assert not make_config("tiny").recomputes_old_logprobs
    assert make_config("tiny", overrides={"rollout.backend": "vllm"}).recomputes_old_logprobs
    on = make_config("tiny", overrides={"algo.recompute_old_logprobs": "true"})
    assert on.algo.recompute_old_logprobs is True and on.recomputes_old_logprobs
    off = make_config("paper", overrides={"algo.recompute_old_logprobs": False})
    assert not off.recomputes_old_logprobs
    assert make_config("tiny", overrides={"algo.recompute_old_logprobs": "none"}).algo == (
        make_config("tiny").algo
    )


def _trainer(model: Path, out: Path, recompute: bool, **extra: Any) -> Any:
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    overrides = {
        "model.name_or_path": str(model),
        "output_dir": str(out),
        "rollout.queries_per_step": 2,
        "rollout.group_size": 2,
        "rollout.temperature": 0.7,
        "env.num_tasks": 30,
        "env.eval_tasks": 2,
        "algo.mini_batches": 1,
        "algo.micro_batch_size": 3,
        "algo.recompute_old_logprobs": recompute,
        "train.num_threads": 1,
        "train.progress": False,
        "train.save_trajectories": False,
        **extra,
    }
    return FlowGRPOTrainer(make_config("tiny", overrides=overrides))


def test_trainer_ratio_is_one_at_the_first_step_only_when_recomputing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A sampler reporting raw (T=1) log-probs while sampling at 0.7, as a misconfigured engine
    would: the first optimizer step's ratio must be exactly on-policy (1) when recomputing."""
    advantages = np.random.default_rng(0).normal(0.0, 1.0, 2 * len(OPENINGS))
    ratios, diffs = {}, {}
    for recompute in (True, False):
        with _trainer(tiny_model_dir, tmp_path / str(recompute), recompute) as trainer:
            generator = HFGenerator(trainer.policy)
            generator.backend.logprobs_mode = "raw"
            trainer.policy.generator = generator
            samples = _sample_two_turns(trainer.policy, 0.7)
            stats = trainer.update(samples, advantages, np.random.default_rng(0))
        ratios[recompute] = stats["train/ratio"]
        diffs[recompute] = stats.get("train/old_logprob_abs_diff")
        assert stats["train/optimizer_steps"] == 1
    assert abs(ratios[True] - 1.0) <= TOL
    assert abs(ratios[False] - 1.0) > 1e-2
    assert diffs[True] is not None and diffs[True] > 1e-2  # the sampler's were off, and it says so
    assert diffs[False] is None  # nothing recomputed, nothing reported


# ------------------------------------------------------------------------------- FSDP, 2 ranks
def worker(model: str, out: str) -> None:
    """One update with recomputation; under torchrun rank 1 holds no samples at all."""
    trainer = _trainer(
        Path(model),
        Path(out) / f"rank{os.environ.get('RANK', 'solo')}",
        True,
        **({"train.distributed": "fsdp"} if "RANK" in os.environ else {}),
    )
    policy = Policy.from_pretrained(model, device="cpu")  # the same weights, unsharded, to sample
    samples = _sample_two_turns(policy, 0.7)
    advantages = np.random.default_rng(0).normal(0.0, 1.0, len(samples))
    mine = samples if trainer.dist.rank == 0 else []
    stats = trainer.update(mine, advantages[: len(mine)], np.random.default_rng(0))
    from learners.checkpoint import full_state

    state, _ = full_state(trainer.policy.model, sharded=trainer.dist.fsdp)
    if trainer.dist.is_main:
        name = "fsdp.pt" if trainer.dist.fsdp else "solo.pt"
        torch.save({"params": state, "stats": stats}, Path(out) / name)
    trainer.close()
    trainer.dist.close()


@pytest.mark.slow
def test_fsdp_ranks_recompute_in_lock_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    me = str(Path(__file__).resolve())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    for cmd in (
        [sys.executable, me, str(tiny_model_dir), str(tmp_path)],
        [*torchrun, "--nproc_per_node", "2", me, str(tiny_model_dir), str(tmp_path)],
    ):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
    solo, fsdp = (torch.load(tmp_path / n, weights_only=True) for n in ("solo.pt", "fsdp.pt"))
    for key in ("train/ratio", "train/old_logprob_abs_diff", "train/loss"):
        assert fsdp["stats"][key] == pytest.approx(solo["stats"][key], rel=1e-5, abs=1e-6), key
    assert abs(fsdp["stats"]["train/ratio"] - 1.0) <= TOL
    for k, v in solo["params"].items():
        torch.testing.assert_close(fsdp["params"][k], v, atol=2e-6, rtol=0)


if __name__ == "__main__":  # the worker (see the module docstring)
    torch.set_num_threads(1)
    worker(*sys.argv[1:3])
