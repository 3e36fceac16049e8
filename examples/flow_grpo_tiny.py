"""Run the Flow-GRPO tiny preset from Python: config, trainer, held-out success before -> after.

The same public API ``python -m learners.flow_grpo`` uses: build the config from the ``tiny``
preset (the shipped 0.8M-parameter warm start on generated AgentFlow-Search-v0 questions), change a
few fields in Python so the run takes well under a minute on a CPU, train, and see where the
TensorBoard events, checkpoints and the final model went. A handful of steps is an API demo,
not a learning result: held-out success moves by sampling noise as much as by learning here. The
full preset (~10 min) is ``python -m learners.flow_grpo``.

    python examples/flow_grpo_tiny.py --steps 6 --output-dir runs/flow_grpo_tiny_example
    tensorboard --logdir runs/flow_grpo_tiny_example/tb
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from learners.checkpoint import latest_checkpoint
from learners.flow_grpo.config import make_config
from learners.flow_grpo.trainer import FlowGRPOTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=6,
        help="training steps (the preset: up to 200, within 10 minutes)",
    )
    parser.add_argument(
        "--queries", type=int, default=8, help="queries (groups) per step (the preset: 64)"
    )
    parser.add_argument(
        "--eval-tasks", type=int, default=50, help="held-out questions (the preset: 100)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output-dir", default=None, help="where the run goes (default: a new temp dir)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="flow_grpo_tiny_")

    # Preset -> overrides (dotted names, as on the command line) -> validated config.
    cfg = make_config("tiny", overrides={"seed": args.seed, "output_dir": output_dir})
    # Or edit the dataclasses directly; validate() checks the result and says how to fix it.
    cfg.train.total_steps = args.steps
    cfg.train.eval_every = 0  # evaluate only before and after
    cfg.train.checkpoint_every = 0  # one checkpoint, at the end
    cfg.train.progress = False
    cfg.rollout.queries_per_step = args.queries
    cfg.train.eval_samples = 1  # the preset plays each held-out task 4 times (less noise, slower)
    cfg.algo.mini_batches = 1
    cfg.env.eval_tasks = args.eval_tasks  # the last ones of the task set: never trained on
    cfg.validate()

    started = time.perf_counter()
    with FlowGRPOTrainer(cfg) as trainer:  # closes the envs (and their tools) on the way out
        result = trainer.train()
    out = Path(cfg.output_dir)
    checkpoint = latest_checkpoint(out / "checkpoints")
    print(
        f"eval/success {result['eval_before']:.2f} -> {result['eval_after']:.2f} "
        f"on {cfg.env.eval_tasks} held-out tasks after {trainer.step} steps "
        f"({time.perf_counter() - started:.0f} s)"
    )
    print(f"tensorboard events: {out / 'tb'}")
    print(f"checkpoint: {checkpoint}")
    print(f"final model: {out / 'final_model'} (load with learners.policy.Policy.from_pretrained)")


if __name__ == "__main__":
    main()
