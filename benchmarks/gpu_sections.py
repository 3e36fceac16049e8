"""The measurements of ``python -m benchmarks.gpu``: one function per section, each run in its
own process by :mod:`benchmarks.gpu`.

Models, batches and the plan come from :mod:`benchmarks.gpu_common`. The dry run
(``--dry-run``) runs every function here on the CPU with tiny stand-in shapes in float32: the same
code; only shapes, dtype, device and the process group's backend (gloo instead of nccl) differ.

Each section writes its result file after every row (:class:`Recorder`), so a section stopped at
its time budget keeps what it measured, and starts a row only when the previous comparable row's
duration still fits before its deadline (else the row says ``skipped: over budget``). A CUDA
out-of-memory error fails its row, not the section.

This file is also the data-parallel worker of section ``distributed``::

    torchrun --standalone --nproc_per_node 1 -m benchmarks.gpu_sections dist-worker MODE OUT
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu_common import (
    PeakMemory,
    Plan,
    Recorder,
    device_info,
    make_plan,
    random_policy,
    release_memory,
    synthetic_batch,
    timed,
    update_trainer,
)
from learners.rollout import TurnSample
from tools.log_excerpt import log_excerpt

__all__ = ["RUNNERS", "SECTIONS", "dist_worker", "run_section"]

REPO = Path(__file__).resolve().parents[1]

SECTIONS: dict[str, str] = {
    "generation": "(a) hf engine generation, new tokens/s",
    "update": "(b) Flow-GRPO update, action tokens/s and peak memory",
    "tiny_step": "(c) tiny preset, rollout + update steps",
    "distributed": "(d) DDP and FSDP2 on one rank vs one process",
    "trl": "(e) TRL GRPO loss on the update's batch",
}
"""section name -> what it measures (the issue's letters)"""


# ------------------------------------------------------------------------------------ sections
def generation(plan: Plan, rec: Recorder) -> None:
    """(a) HFBackend (the hf engine's and the policy's sampler) in ``plan.dtype``: new tokens/s
    at each batch size, temperature 1.0, distinct random prompts."""
    from learners.policy import SamplingSettings

    rec.set(
        prompt_tokens=plan.gen_prompt_tokens, max_new_tokens=plan.gen_new_tokens, dtype=plan.dtype
    )
    estimate = 0.0
    for name in plan.shapes:
        if not rec.fits(estimate):
            rec.row(model=name, status="skipped: over budget")
            continue
        policy = random_policy(plan, name)
        policy.generator.max_batch_size = max(plan.gen_batches)
        vocab = plan.shapes[name]["vocab_size"]
        rng = np.random.default_rng(plan.seed)
        policy.generate([[3, 4, 5]], SamplingSettings(1.0, 1.0, 4, plan.seed))  # warm-up
        settings = SamplingSettings(1.0, 1.0, plan.gen_new_tokens, plan.seed)
        for batch in plan.gen_batches:
            prompts = rng.integers(3, vocab, (batch, plan.gen_prompt_tokens)).tolist()
            run = functools.partial(_time_generation, policy, prompts, settings)
            estimate = rec.measure({"model": name, "batch": batch}, estimate, run)
        del policy
        release_memory()


def _time_generation(policy: Any, prompts: list[list[int]], settings: Any) -> dict[str, Any]:
    with PeakMemory(policy.device) as mem:
        seconds, outs = timed(lambda: policy.generate(prompts, settings), policy.device)
    tokens = sum(len(o.token_ids) for o in outs)
    steps = max(len(o.token_ids) for o in outs)
    return {
        "params_m": round(policy.num_parameters() / 1e6, 2),
        "new_tokens": tokens,
        "seconds": round(seconds, 4),
        "tokens_per_s": round(tokens / seconds, 1),
        "ms_per_step": round(1000 * seconds / max(steps, 1), 2),
        **mem.values(),
    }


def update(plan: Plan, rec: Recorder) -> None:
    """(b) one Flow-GRPO update (forward, backward, clip, AdamW) over ``synthetic_batch``: packed
    with and without gradient checkpointing, per turn without; and the old log-probs'
    recomputation (one no-grad forward) that precedes it."""
    rec.set(
        batch={
            "trajectories": plan.trajectories,
            "turns": plan.turns,
            "prompt_tokens": plan.prompt_tokens,
            "response_tokens": plan.response_tokens,
            "result_tokens": plan.result_tokens,
            "micro_batch_size": plan.micro_batch_size,
        },
        dtype=plan.dtype,
    )
    estimate = 0.0
    for name in plan.update_models:
        if not rec.fits(3 * estimate):
            rec.row(model=name, status="skipped: over budget")
            continue
        estimate = _update_model(plan, rec, name)
        release_memory()


def _update_model(plan: Plan, rec: Recorder, name: str) -> float:
    """Section ``update``'s rows for one model; returns the time they took."""
    from learners.flow_grpo.old_logprobs import recompute_old_logprobs
    from learners.packing import pack_samples
    from learners.policy import set_gradient_checkpointing

    start = time.perf_counter()
    policy = random_policy(plan, name)
    batch, adv = synthetic_batch(plan, plan.shapes[name]["vocab_size"])
    key = {"model": name, "params_m": round(policy.num_parameters() / 1e6, 2)}
    with update_trainer(plan, policy, tempfile.mkdtemp(prefix="gpu-update-")) as trainer:
        # The batch's old log-probs become the model's own (a realistic ratio), timed: the cost
        # of algo.recompute_old_logprobs.
        recompute = functools.partial(
            recompute_old_logprobs,
            policy,
            batch,
            temperature=1.0,
            pack=True,
            micro_batch_size=plan.micro_batch_size,
            module=trainer.scorer,
        )
        seconds, (samples, _) = timed(recompute, policy.device)
        action = sum(len(s.response_ids) for s in samples)
        rec.row(
            **key,
            variant="recompute old log-probs (no-grad forward)",
            status="ok",
            seconds=round(seconds, 4),
            tokens_per_s=round(action / seconds, 1),
        )
        estimate, warm = seconds, True
        for layout, ckpt in (("packed", False), ("packed", True), ("per_turn", False)):
            trainer.cfg.algo.pack_turns = layout == "packed"
            set_gradient_checkpointing(policy.causal_lm, ckpt)
            seqs = pack_samples(samples, pack=layout == "packed")
            run = functools.partial(
                _time_update, trainer, samples, adv, sum(len(s.ids) for s in seqs), warm
            )
            variant = f"{layout}, gradient checkpointing {'on' if ckpt else 'off'}"
            took = rec.measure({**key, "variant": variant}, 2 * estimate, run)
            estimate, warm = (took / 2 if warm else took), False
    del policy, trainer
    return time.perf_counter() - start


def _time_update(
    trainer: Any, samples: list[TurnSample], adv: np.ndarray, seq_tokens: int, warm_up: bool
) -> dict[str, Any]:
    device = trainer.policy.device
    action = sum(len(s.response_ids) for s in samples)

    def one() -> dict[str, float]:
        return trainer.update(samples, adv, np.random.default_rng(0))

    first = timed(one, device)[0] if warm_up else None  # kernels, allocator pools, AdamW state
    with PeakMemory(device) as mem:
        seconds, stats = timed(one, device)
    return {
        "action_tokens": action,
        "sequence_tokens": seq_tokens,
        "seconds": round(seconds, 4),
        "tokens_per_s": round(action / seconds, 1),
        "sequence_tokens_per_s": round(seq_tokens / seconds, 1),
        "first_update_s": None if first is None else round(first, 4),
        "loss": stats.get("train/loss"),
        **mem.values(),
    }


def tiny_step(plan: Plan, rec: Recorder) -> None:
    """(c) end to end: the tiny preset's trainer on the device, two steps of rollout + update (the
    second with the old log-probs recomputed, reporting how far the sampler's were)."""
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    device = torch.device(plan.device)
    out = tempfile.mkdtemp(prefix="gpu-tiny-")
    overrides = {
        "model.device": plan.device,
        "output_dir": out,
        "train.progress": False,
        "train.save_trajectories": False,
        **plan.tiny_overrides,
    }
    cfg = make_config("tiny", overrides=overrides)
    rec.set(
        overrides=overrides,
        queries_per_step=cfg.rollout.queries_per_step,
        group_size=cfg.rollout.group_size,
    )
    keys = (
        "time/rollout_s",
        "time/update_s",
        "time/generated_tokens_per_s",
        "time/tokens_per_s",
        "rollout/success",
        "rollout/turns",
        "train/loss",
        "train/ratio",
        "train/optimizer_steps",
        "train/old_logprob_abs_diff",
        "train/old_logprob_max_abs_diff",
    )
    with FlowGRPOTrainer(cfg) as trainer:
        estimate = 0.0
        for step, recompute in enumerate((False, True), start=1):

            def run(recompute: bool = recompute) -> dict:
                trainer.cfg.algo.recompute_old_logprobs = recompute
                with PeakMemory(device) as mem:
                    seconds, stats = timed(trainer.train_step, device)
                trainer.step += 1
                return {
                    "seconds": round(seconds, 3),
                    **{k: stats[k] for k in keys if k in stats},
                    **mem.values(),
                }

            key = {"step": step, "recompute_old_logprobs": recompute}
            estimate = rec.measure(key, estimate, run)


def distributed(plan: Plan, rec: Recorder) -> None:
    """(d) the same two updates (tiny model, fp32, KL to a sharded reference, recomputed old
    log-probs) in one process, then under torchrun on one rank with DDP and with FSDP2 (nccl on
    a GPU, gloo on a CPU); the parameters after them must equal the one-process ones."""
    out = Path(tempfile.mkdtemp(prefix="gpu-dist-"))
    worker = ["-m", "benchmarks.gpu_sections", "dist-worker"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    dry = ["--dry-run"] if plan.dry_run else []
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "OMP_NUM_THREADS": "1",
    }
    estimate = 0.0
    for mode in ("none", "ddp", "fsdp"):
        launcher = [sys.executable] if mode == "none" else [*torchrun, "--nproc_per_node", "1"]
        cmd = [*launcher, *worker, mode, str(out), *dry]

        def run(cmd: list[str] = cmd, mode: str = mode) -> dict:
            try:
                done = subprocess.run(
                    cmd,
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=max(rec.deadline - time.time(), 1.0),
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return {"status": "skipped: over budget (stopped at the section's deadline)"}
            if done.returncode != 0:  # the other set-ups still run
                return {
                    "status": f"failed (exit {done.returncode})",
                    "log_excerpt": log_excerpt(done.stderr or done.stdout, max_chars=3000),
                }
            return json.loads((out / f"{mode}.json").read_text())

        estimate = rec.measure({"mode": mode}, estimate, run)
    _compare_parameters(out, rec)


ATOL = 1e-5
"""largest parameter difference called equal: the set-ups sum the same float32 gradients in
another order (the 2-rank gloo tests measure <= 5e-7); GPU attention backward kernels may also
differ run to run by a few ulps"""


def _compare_parameters(out: Path, rec: Recorder) -> None:
    if not (out / "none.pt").is_file():
        return
    base = torch.load(out / "none.pt", weights_only=True)
    start = torch.load(out / "start.pt", weights_only=True)
    moved = max(float((base[k] - start[k]).abs().max()) for k in base)
    comparisons = {}
    for mode in ("ddp", "fsdp"):
        path = out / f"{mode}.pt"
        if not path.is_file():
            continue
        other = torch.load(path, weights_only=True)
        if other.keys() != base.keys():
            comparisons[mode] = {"equal": False, "error": "different parameter names"}
            continue
        diff = max(float((other[k] - base[k]).abs().max()) for k in base)
        bitwise = all(torch.equal(other[k], base[k]) for k in base)
        comparisons[mode] = {"max_abs_diff": diff, "bitwise": bitwise, "equal": diff <= ATOL}
    equal = all(c["equal"] for c in comparisons.values())
    rec.set(parameters_moved=moved, atol=ATOL, comparisons=comparisons)
    if moved <= 100 * ATOL:
        rec.set(status="failed: the updates barely moved the parameters (a vacuous comparison)")
    elif not equal:
        rec.set(status="failed: parameters differ from the one-process run")


def dist_worker(mode: str, out: Path, dry_run: bool) -> None:
    """One set-up of section ``distributed``: two updates, then the full parameters saved."""
    import torch.distributed as tdist

    from learners.checkpoint import full_state
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    plan = make_plan(dry_run)
    device = torch.device(plan.device)
    cfg = make_config(
        "tiny",
        overrides={
            "output_dir": str(out / mode),
            "model.device": plan.device,
            "train.distributed": mode,
            "train.progress": False,
            "train.save_trajectories": False,
            "train.num_threads": 1,
            "env.num_tasks": 30,
            "env.eval_tasks": 2,
            "rollout.queries_per_step": 1,
            "rollout.group_size": 2,
            "algo.recompute_old_logprobs": True,
            "algo.kl_coef": 0.05,
            "algo.entropy_coef": 0.01,
            "algo.lr": 2e-3,  # moves parameters ~100x the comparison's tolerance
            "algo.mini_batches": 1,
            "algo.micro_batch_size": 2,
        },
    )
    trainer = FlowGRPOTrainer(cfg)
    small = dataclasses.replace(
        plan, trajectories=6, turns=2, prompt_tokens=12, response_tokens=6, result_tokens=3
    )
    vocab = trainer.policy.causal_lm.get_input_embeddings().num_embeddings
    samples, adv = synthetic_batch(small, vocab)
    if mode == "none":
        state, _ = full_state(trainer.policy.model)
        torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, out / "start.pt")
    seconds, stats = [], []
    for _ in range(2):
        took, result = timed(lambda: trainer.update(samples, adv, np.random.default_rng(0)), device)
        seconds.append(round(took, 4))
        stats.append({k: v for k, v in result.items() if k.startswith("train/")})
    state, _ = full_state(trainer.policy.model, sharded=trainer.dist.fsdp)
    if trainer.dist.is_main:
        torch.save({k: v.detach().cpu().clone() for k, v in state.items()}, out / f"{mode}.pt")
        info = {
            "backend": str(tdist.get_backend()) if tdist.is_initialized() else None,
            "world_size": trainer.dist.world_size,
            "process_group": trainer.dist.enabled,
            "sharded": trainer.dist.fsdp,
            "device": plan.device,
            "update_seconds": seconds,
            "stats": stats,
        }
        (out / f"{mode}.json").write_text(json.dumps(info))
    trainer.close()
    trainer.dist.close()


def trl(plan: Plan, rec: Recorder) -> None:
    """(e) TRL's GRPO loss (``GRPOTrainer._compute_loss``, per-turn samples) over section
    ``update``'s batch and model (same seed), same micro-batch size, old log-probs and dtype."""
    try:
        import trl as trl_package  # noqa: F401
    except ImportError as exc:
        rec.set(status=f"skipped: trl is not importable ({exc})")
        return
    from benchmarks.update_throughput import trl_update_step
    from learners.flow_grpo.old_logprobs import recompute_old_logprobs

    device = torch.device(plan.device)
    name = plan.update_models[0]
    policy = random_policy(plan, name)
    samples, adv = synthetic_batch(plan, plan.shapes[name]["vocab_size"])
    samples, _ = recompute_old_logprobs(
        policy, samples, temperature=1.0, pack=True, micro_batch_size=plan.micro_batch_size
    )
    action = sum(len(s.response_ids) for s in samples)
    step = trl_update_step(
        policy.model,
        policy.tokenizer,
        samples,
        adv,
        plan.micro_batch_size,
        max_completion_length=plan.response_tokens,
        lr=1e-6,
    )

    def run() -> dict:
        first, _ = timed(step, device)
        with PeakMemory(device) as mem:
            seconds, _ = timed(step, device)
        return {
            "action_tokens": action,
            "seconds": round(seconds, 4),
            "tokens_per_s": round(action / seconds, 1),
            "first_update_s": round(first, 4),
            **mem.values(),
        }

    rec.measure({"model": name, "variant": "trl GRPOTrainer loss, per turn"}, 0.0, run)


RUNNERS: dict[str, Callable[[Plan, Recorder], None]] = {
    "generation": generation,
    "update": update,
    "tiny_step": tiny_step,
    "distributed": distributed,
    "trl": trl,
}


def run_section(name: str, result: Path, deadline: float, dry_run: bool) -> None:
    """The section's process: run it, recording into ``result`` (see :class:`Recorder`)."""
    plan = make_plan(dry_run)
    rec = Recorder(result, deadline)
    rec.set(device=device_info(torch.device(plan.device)))
    RUNNERS[name](plan, rec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="benchmarks.gpu's data-parallel worker")
    parser.add_argument("command", choices=["dist-worker"])
    parser.add_argument("mode", choices=["none", "ddp", "fsdp"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    dist_worker(args.mode, args.out, args.dry_run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
