"""FSDP (``train.distributed='fsdp'``) on 2 gloo ranks: the same parameters as DDP and as one
process.

The update test hands the trainer the same fixed batch in three set-ups: one process with all of
it, and 2 ranks (DDP, FSDP) splitting it unevenly, so the ranks run different numbers of
micro-batches, and in one step one rank has nothing at all (FSDP must pad it with zero-weight
micro-batches or deadlock). With the loss normalized by the global token count the math is the
same; only float summation order differs, hence a tolerance (see ``ATOL``). The end-to-end test
runs ``torchrun -m learners.flow_grpo`` with fsdp and with ddp from the same seed.

This file is also the 2-rank worker: ``torchrun tests/learners/test_fsdp.py MODE MODEL OUT``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

ATOL = 2e-6
"""Largest parameter difference allowed. Parameters are O(0.01-1) and move by up to lr = 3e-4 per
AdamW step; summing the same gradient terms in another order (micro-batch accumulation,
per-micro-batch reduce-scatter, the sharded norm) changes float32 results by a few ulps
(measured: <= 5e-7 between any two set-ups), and AdamW's m / sqrt(v) does not amplify that."""

RTOL_STATS = 1e-5
"""relative tolerance of the update's scalars (loss, grad norm) across set-ups"""

SPLITS = [([0, 1, 2, 3, 4], [5]), ([], [0, 1, 2, 3, 4, 5]), ([0, 1, 2, 3, 4], [5])]
"""trajectories of rank 0 and rank 1 in each update (one process takes all six)"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *args,
    ]


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]


# --------------------------------------------------------------------------------- worker side
def _config(mode: str, model: str, out: str) -> Any:
    from learners.flow_grpo.config import make_config

    return make_config(
        "tiny",
        overrides={
            "model.name_or_path": model,
            "output_dir": out,
            "seed": 0,
            "env.num_tasks": 30,
            "env.eval_tasks": 2,
            "rollout.queries_per_step": 2,
            "rollout.group_size": 2,
            # KL (a sharded reference), entropy and active clipping: every FSDP path of the update.
            "algo.kl_coef": 0.05,
            "algo.entropy_coef": 0.01,
            "algo.max_grad_norm": 0.05,
            "algo.lr": 3e-4,
            "algo.mini_batches": 1,
            "algo.micro_batch_size": 1,
            "train.distributed": mode,
            "train.num_threads": 1,
            "train.progress": False,
            "train.save_trajectories": False,
        },
    )


def _batch(model: str) -> tuple[list[Any], np.ndarray]:
    """Six 2-turn trajectories with append-only prompts; old log-probs near the model's own."""
    from learners.policy import Policy
    from learners.rollout import TurnSample

    rng = np.random.default_rng(0)
    policy = Policy.from_pretrained(model, device="cpu")
    samples: list[TurnSample] = []
    for traj in range(6):
        prompt = rng.integers(5, 400, size=int(rng.integers(4, 12))).tolist()
        for turn in range(2):
            response = rng.integers(5, 400, size=int(rng.integers(2, 7))).tolist()
            with torch.no_grad():
                logp, _ = policy.score(
                    [prompt + response], [[False] * len(prompt) + [True] * len(response)]
                )
            old = (logp + torch.from_numpy(rng.normal(0.0, 0.2, len(response)))).tolist()
            samples.append(
                TurnSample(traj, traj // 2, turn, list(prompt), response, old, "stop", "")
            )
            prompt = prompt + response + rng.integers(5, 400, size=3).tolist()
    return samples, rng.normal(0.0, 1.0, len(samples))


def _update(
    trainer: Any, samples: list[Any], advantages: np.ndarray, split: tuple[list[int], list[int]]
) -> dict[str, float]:
    d = trainer.dist
    mine = set(range(6)) if not d.enabled else set(split[d.rank])
    idx = [k for k, s in enumerate(samples) if s.traj in mine]
    return trainer.update([samples[k] for k in idx], advantages[idx], np.random.default_rng(1))


def _params(trainer: Any) -> dict[str, torch.Tensor]:
    from learners.checkpoint import full_state

    state, _ = full_state(trainer.policy.model, trainer.optimizer, sharded=trainer.dist.fsdp)
    return {k: v.detach().clone() for k, v in state.items()}


def worker(mode: str, model: str, out: str) -> None:
    """Two updates, a checkpoint, a third update; under FSDP also a resumed third update."""
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    samples, advantages = _batch(model)
    cfg = _config(mode, model, out)
    trainer = FlowGRPOTrainer(cfg)
    stats = [_update(trainer, samples, advantages, split) for split in SPLITS[:2]]
    trainer.step = 2
    trainer.save()
    result: dict[str, Any] = {"after2": _params(trainer), "stats": stats}
    stats.append(_update(trainer, samples, advantages, SPLITS[2]))
    result["after3"] = _params(trainer)
    if mode == "fsdp":
        resumed = FlowGRPOTrainer(cfg)
        assert resumed.resume() and resumed.step == 2
        _update(resumed, samples, advantages, SPLITS[2])
        result["resumed3"] = _params(resumed)
    if trainer.dist.is_main:
        torch.save(result, Path(out) / "result.pt")
    trainer.dist.close()


# --------------------------------------------------------------------------------- tests
def test_config_accepts_fsdp_and_rejects_it_with_lora() -> None:
    from learners.flow_grpo.config import ConfigError, make_config

    assert make_config("tiny", overrides={"train.distributed": "fsdp"}).train.distributed == "fsdp"
    assert make_config("paper", overrides={"train.distributed": "fsdp"}).train.distributed == "fsdp"
    with pytest.raises(ConfigError, match="LoRA"):
        make_config("tiny", overrides={"train.distributed": "fsdp", "model.lora_rank": 4})


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= ATOL, worst
    return worst


@pytest.mark.slow
def test_fsdp_update_matches_ddp_and_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    me = str(Path(__file__).resolve())
    runs = {mode: tmp_path / mode for mode in ("none", "ddp", "fsdp")}
    _run([sys.executable, me, "none", str(tiny_model_dir), str(runs["none"])])
    for mode in ("ddp", "fsdp"):
        _run(_torchrun(me, mode, str(tiny_model_dir), str(runs[mode])))
    res = {m: torch.load(p / "result.pt", weights_only=True) for m, p in runs.items()}
    start = _load_plain(tiny_model_dir).state_dict()
    moved = max(float((res["none"]["after3"][k] - start[k]).abs().max()) for k in start)
    assert moved > 100 * ATOL, (
        "the updates barely moved the parameters: the comparison would be vacuous"
    )
    for key in ("after2", "after3"):
        _close(res["fsdp"][key], res["ddp"][key])
        _close(res["fsdp"][key], res["none"][key])
    # Clipping was active and used the global norm: the same norm in every set-up.
    for step in range(3):
        norms = [res[m]["stats"][step]["train/grad_norm"] for m in ("none", "ddp", "fsdp")]
        assert norms[0] > 0.05, norms
        for key in ("train/grad_norm", "train/loss", "train/kl"):
            values = [res[m]["stats"][step][key] for m in ("none", "ddp", "fsdp")]
            assert max(values) - min(values) <= RTOL_STATS * max(abs(v) for v in values), (
                step,
                key,
                values,
            )
    # Resuming an FSDP checkpoint continues exactly (bitwise).
    for k, v in res["fsdp"]["after3"].items():
        assert torch.equal(v, res["fsdp"]["resumed3"][k]), k
    # The FSDP checkpoint is a plain one: a single process loads it, and it matches DDP's.
    ckpt = runs["fsdp"] / "checkpoints" / "ckpt-0000002"
    plain = _load_plain(tiny_model_dir)
    plain.load_state_dict(torch.load(ckpt / "model.pt", weights_only=True))
    optim = torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad], lr=3e-4)
    fsdp_optim = torch.load(ckpt / "optimizer.pt", weights_only=True)
    optim.load_state_dict(fsdp_optim)
    ddp_optim = torch.load(
        runs["ddp"] / "checkpoints" / "ckpt-0000002" / "optimizer.pt", weights_only=True
    )
    assert fsdp_optim["param_groups"][0]["params"] == ddp_optim["param_groups"][0]["params"]
    for i, state in ddp_optim["state"].items():
        assert torch.equal(state["step"], fsdp_optim["state"][i]["step"])
        torch.testing.assert_close(
            fsdp_optim["state"][i]["exp_avg"], state["exp_avg"], atol=1e-7, rtol=0
        )


def _load_plain(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path))


@pytest.mark.slow
def test_fsdp_training_run_matches_ddp_and_saves_a_loadable_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    args = [
        "--model.name-or-path",
        str(tiny_model_dir),
        "--total-steps",
        "2",
        "--rollout.queries-per-step",
        "2",
        "--rollout.group-size",
        "2",
        "--rollout.max-new-tokens",
        "12",
        "--env.num-tasks",
        "30",
        "--env.eval-tasks",
        "2",
        "--env.max-turns",
        "2",
        "--algo.skip-zero-variance-groups",
        "false",
        "--algo.entropy-coef",
        "0.01",
        "--algo.kl-coef",
        "0.01",
        "--algo.micro-batch-size",
        "1",
        "--train.num-threads",
        "1",
        "--train.progress",
        "false",
    ]
    for mode in ("fsdp", "ddp"):
        _run(
            _torchrun(
                "-m",
                "learners.flow_grpo",
                *args,
                "--output-dir",
                str(tmp_path / mode),
                "--train.distributed",
                mode,
            )
        )
    ranks = json.loads((tmp_path / "fsdp" / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["step"] == 2 and ranks["identical"]
    final = tmp_path / "fsdp" / "final_model"
    fsdp, ddp = (
        load_file(final / "model.safetensors"),
        load_file(tmp_path / "ddp" / "final_model" / "model.safetensors"),
    )
    before = load_file(tiny_model_dir / "model.safetensors")
    assert fsdp.keys() == ddp.keys() == before.keys()  # tied lm_head not duplicated
    assert any(not torch.equal(before[k], fsdp[k]) for k in before), "no parameter changed"
    _close(fsdp, ddp)
    model = _load_plain(final)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in fsdp.items())
    tok = AutoTokenizer.from_pretrained(str(final))
    ids = tok("Sub-Goal: find", return_tensors="pt")["input_ids"]
    assert model(input_ids=ids).logits.shape[-1] == model.config.vocab_size


if __name__ == "__main__":  # the 2-rank worker (see the module docstring)
    torch.set_num_threads(1)
    worker(*sys.argv[1:4])
