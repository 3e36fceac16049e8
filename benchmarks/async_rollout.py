"""Training steps per minute, synchronous vs asynchronous rollouts (``rollout.max_staleness``),
side by side in one run, and whether k=1 learns as much per step.

The tiny preset (its warm start, tasks and hyperparameters) runs in these settings:

- ``offline``: as shipped; every module is rule-based, so a rollout is CPU work (generation)
  that competes with the update for the same cores;
- ``remote-S``: the LLM modules are remote: every executor, verifier and generator call makes a
  round trip to an engine that answers each request in ``--latency-ms`` (50 ms) and serves ``S``
  requests at a time (a stage of ``n`` episodes waits ``latency * ceil(n / S)``; ``S = all`` is
  one 50 ms round trip per call, as ``benchmarks/vector_throughput.py``'s engine). The modules
  then decide as the offline ones do (the executor runs the planner's command, the verifier
  stops when the planner finishes, the generator takes the planner's answer): the trajectories,
  and so the learning, are exactly the offline ones (the benchmark checks that the final
  parameters are identical); only the time a rollout spends waiting changes.

Speed: per setting, ``sync`` (k = 0) then ``k=1`` for ``--steps`` steps from the same start,
timed over the whole loop (the k=1 pipeline's first, unhidden rollout included); ``wait`` is the
share of a synchronous step spent waiting on the engine. Learning: offline, ``--learn-steps``
steps per seed, held-out success before and after (95% Wilson intervals; "equal within noise"
when the two runs' intervals overlap; ``--learn-steps 0`` skips it, for
``python -m benchmarks.learning --methods flow_grpo,flow_grpo_k1``). Target: k=1 >= 1.3x the
synchronous steps per minute in a latency-bound setting (the engine wait at least half of a
synchronous step), learning equal within noise.

    python -m benchmarks.async_rollout [--quick] [--steps 10] [--learn-steps 40] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

if __package__ in (
    None,
    "",
):  # run as a script (python benchmarks/x.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from agentflow_env.eval.report import wilson_interval
from agentflow_env.llm.base import GenerationRequest
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.modules import (
    DirectExecutor,
    ExecutorCall,
    ExecutorOutput,
    GeneratorCall,
    GeneratorOutput,
    PlannerGenerator,
    PlannerVerifier,
    VerifierCall,
    VerifierOutput,
)
from benchmarks.common import machine_info

TARGET_SPEEDUP = 1.3
LATENCY_BOUND = 0.5
"""a setting is latency-bound when the engine wait is at least this share of a sync step"""


class RemoteEngine:
    """A remote engine: each request takes ``latency_s``, ``slots`` of them at a time (a
    ``callable`` engine); ``waited_s`` adds up the time callers spent waiting on it."""

    def __init__(self, latency_s: float, slots: int) -> None:
        self.latency_s, self.slots, self.waited_s = latency_s, slots, 0.0
        self.engine = CallableEngine(self._serve, batched=True, name=f"remote-{latency_s}s")

    def _serve(self, requests: Sequence[GenerationRequest]) -> list[str]:
        wait = self.latency_s * math.ceil(len(requests) / self.slots)
        time.sleep(wait)
        self.waited_s += wait
        return ["ok"] * len(requests)

    def round_trip(self, role: str, n: int) -> None:
        if n:
            self.engine.generate([GenerationRequest(prompt=f"You are the {role}.")] * n)


class RemoteExecutor(DirectExecutor):
    """The direct executor after one engine round trip per call (an LLM executor's latency)."""

    def __init__(self, remote: RemoteEngine) -> None:
        self.remote = remote

    def commands(self, calls: Sequence[ExecutorCall]) -> list[ExecutorOutput]:
        self.remote.round_trip("executor", len(calls))
        return super().commands(calls)


class RemoteVerifier(PlannerVerifier):
    """The planner verifier after one engine round trip per call."""

    def __init__(self, remote: RemoteEngine) -> None:
        self.remote = remote

    def decide(self, calls: Sequence[VerifierCall]) -> list[VerifierOutput]:
        self.remote.round_trip("verifier", len(calls))
        return super().decide(calls)


class RemoteGenerator(PlannerGenerator):
    """The planner generator after one engine round trip per call."""

    def __init__(self, remote: RemoteEngine) -> None:
        self.remote = remote

    def answer(self, calls: Sequence[GeneratorCall]) -> list[GeneratorOutput]:
        self.remote.round_trip("generator", len(calls))
        return super().answer(calls)


def _config(
    setting: str, k: int, seed: int, steps: int, args: argparse.Namespace, out: Path
) -> tuple[Any, RemoteEngine | None]:
    """The tiny preset for one run; with ``remote-S`` modules, also their engine."""
    from learners.flow_grpo.config import make_config

    overrides: dict[str, Any] = {
        "seed": seed,
        "output_dir": str(out),
        "train.total_steps": steps,
        "train.max_minutes": 0,
        "train.eval_every": 0,
        "train.eval_samples": args.eval_samples,
        "train.checkpoint_every": 0,
        "train.save_trajectories": False,
        "train.progress": False,
        "rollout.max_staleness": k,
        "train.num_threads": args.threads,
    }
    if args.queries is not None:
        overrides["rollout.queries_per_step"] = args.queries
    if args.eval_tasks is not None:
        overrides["env.eval_tasks"] = args.eval_tasks
    cfg = make_config("tiny", overrides=overrides)
    remote = None
    if setting.startswith("remote-"):
        slots = setting.removeprefix("remote-")
        remote = RemoteEngine(args.latency_ms / 1000, 1 << 30 if slots == "all" else int(slots))
        cfg.env.executor = RemoteExecutor(remote)
        cfg.env.verifier = RemoteVerifier(remote)
        cfg.env.generator = RemoteGenerator(remote)
    return cfg, remote


def time_run(
    setting: str, k: int, args: argparse.Namespace, out: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``args.steps`` training steps (no evaluation), timed; the row and the final weights."""
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    cfg, remote = _config(setting, k, 0, args.steps, args, out)
    load = os.getloadavg()[0]
    waits, updates = [], []
    with FlowGRPOTrainer(cfg) as trainer:
        t0 = time.perf_counter()
        while trainer.step < args.steps:
            stats = trainer.train_step()
            trainer.step += 1
            waits.append(stats["time/rollout_s"])
            updates.append(stats["time/update_s"])
        seconds = time.perf_counter() - t0
        weights = {n: v.detach().clone() for n, v in trainer.policy.model.state_dict().items()}
    row = {
        "setting": setting,
        "k": k,
        "steps": args.steps,
        "seconds": seconds,
        "steps_per_min": 60 * args.steps / seconds,
        "rollout_wait_s": float(np.mean(waits)),
        "update_s": float(np.mean(updates)),
        "engine_wait_s": (remote.waited_s / args.steps) if remote else 0.0,
        "loadavg_1m": [load, os.getloadavg()[0]],
    }
    return row, weights


def learn_run(k: int, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Offline, ``args.learn_steps`` steps: held-out success before and after."""
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    cfg, _ = _config("offline", k, seed, args.learn_steps, args, out)
    with FlowGRPOTrainer(cfg) as trainer:
        # the work dir is the benchmark's own scratch: a rerun replaces its earlier runs
        result = trainer.train(overwrite=True)
        episodes = trainer.last_eval_episodes
        minutes = trainer.train_seconds / 60
    return {
        "k": k,
        "seed": seed,
        "steps": args.learn_steps,
        "train_minutes": minutes,
        "eval_before": result["eval_before"],
        "eval_after": result["eval_after"],
        "eval_after_ci95": list(wilson_interval(result["eval_after"] * episodes, episodes)),
        "eval_episodes": episodes,
    }


def _speed_summary(rows: list[dict[str, Any]], same: dict[str, bool]) -> list[dict[str, Any]]:
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        sync = next(r for r in rows if r["setting"] == setting and r["k"] == 0)
        k1 = next(r for r in rows if r["setting"] == setting and r["k"] == 1)
        step_s = sync["seconds"] / sync["steps"]
        out.append(
            {
                "setting": setting,
                "speedup": k1["steps_per_min"] / sync["steps_per_min"],
                "engine_wait_share": sync["engine_wait_s"] / step_s,
                "latency_bound": sync["engine_wait_s"] / step_s >= LATENCY_BOUND,
                "same_weights_as_offline": same.get(setting),
            }
        )
    return out


def _learn_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not rows:  # --learn-steps 0
        return None
    pairs = [
        (a, b) for a in rows for b in rows if a["k"] == 0 and b["k"] == 1 and a["seed"] == b["seed"]
    ]
    return {
        "sync_gain": float(np.mean([a["eval_after"] - a["eval_before"] for a, _ in pairs])),
        "k1_gain": float(np.mean([b["eval_after"] - b["eval_before"] for _, b in pairs])),
        "equal_within_noise": all(
            a["eval_after_ci95"][0] <= b["eval_after_ci95"][1]
            and b["eval_after_ci95"][0] <= a["eval_after_ci95"][1]
            for a, b in pairs
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 steps, small batches (CI)")
    parser.add_argument("--settings", default="offline,remote-all,remote-32,remote-8")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    parser.add_argument(
        "--learn-steps",
        type=int,
        default=40,
        help="steps of each learning run (0: no learning check here; benchmarks/learning.py's "
        "flow_grpo_k1 method compares k=1 with flow_grpo over several seeds)",
    )
    parser.add_argument("--seeds", default="0,1", help="seeds of the learning runs")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per Python thread (train.num_threads); on a shared 2-core machine "
        "two intra-op threads made the synchronous loop's generation ~9x slower, which would "
        "flatter k=1",
    )
    parser.add_argument("--queries", type=int, default=None, help="override queries per step")
    parser.add_argument("--eval-tasks", type=int, default=None, help="override held-out tasks")
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--work-dir", default="runs/benchmark_async")
    parser.add_argument("--out", default="benchmarks/results/async_rollout.json")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        args.settings = "offline,remote-8"
        args.steps, args.learn_steps, seeds = 3, 2, [0]
        args.queries, args.eval_tasks, args.eval_samples = 8, 8, 1
    console, work = Console(), Path(args.work_dir)
    speed, weights = [], {}
    for setting in args.settings.split(","):
        for k in (0, 1):  # side by side: the same start, one after the other
            row, weights[setting, k] = time_run(setting, k, args, work / f"{setting}-k{k}")
            speed.append(row)
            console.print(f"{setting} k={k}: {row['steps_per_min']:.2f} steps/min")
    same = {
        s: all(
            all(torch.equal(weights[s, k][n], weights["offline", k][n]) for n in weights[s, k])
            for k in (0, 1)
        )
        for s in args.settings.split(",")
        if s != "offline" and ("offline", 0) in weights
    }
    learn = []
    for seed in seeds if args.learn_steps > 0 else []:
        for k in (0, 1):
            learn.append(learn_run(k, seed, args, work / f"learn-k{k}-s{seed}"))
            r = learn[-1]
            console.print(
                f"learning k={k} seed {seed}: {r['eval_before']:.3f} -> {r['eval_after']:.3f}"
            )
    data = report(speed, _speed_summary(speed, same), learn, _learn_summary(learn), args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    console.print(f"target: {'met' if data['target_met'] else 'NOT met'}; wrote {out}")
    return 0


def report(
    speed: list[dict[str, Any]],
    speed_summary: list[dict[str, Any]],
    learn: list[dict[str, Any]],
    learn_summary: dict[str, Any] | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Print the tables; the JSON's content."""
    console = Console()
    table = Table(title="training steps per minute, sync vs k=1 (tiny preset)")
    for col in (
        "setting",
        "engine wait / sync step",
        "sync steps/min",
        "k=1 steps/min",
        "k=1/sync",
    ):
        table.add_column(col, justify="right")
    for s in speed_summary:
        sync, k1 = (
            next(r for r in speed if r["setting"] == s["setting"] and r["k"] == k) for k in (0, 1)
        )
        table.add_row(
            s["setting"],
            f"{100 * s['engine_wait_share']:.0f}%",
            f"{sync['steps_per_min']:.2f}",
            f"{k1['steps_per_min']:.2f}",
            f"{s['speedup']:.2f}x",
        )
    console.print(table)
    learning = Table(title=f"held-out success after {args.learn_steps} steps (offline)")
    for col in ("seed", "k", "before", "after [95% Wilson]"):
        learning.add_column(col, justify="right")
    for r in learn:
        lo, hi = r["eval_after_ci95"]
        learning.add_row(
            str(r["seed"]),
            str(r["k"]),
            f"{r['eval_before']:.3f}",
            f"{r['eval_after']:.3f} [{lo:.3f}, {hi:.3f}]",
        )
    if learn:
        console.print(learning)
    bound = [s for s in speed_summary if s["latency_bound"]]
    met = (
        bool(bound)
        and all(s["speedup"] >= TARGET_SPEEDUP for s in bound)
        and (learn_summary is None or learn_summary["equal_within_noise"])
    )
    return {
        "quick": args.quick,
        "settings": {
            "latency_ms": args.latency_ms,
            "steps": args.steps,
            "learn_steps": args.learn_steps,
            "eval_samples": args.eval_samples,
            "threads": args.threads,
        },
        "speed": speed,
        "speed_summary": speed_summary,
        "learning": learn,
        "learning_summary": learn_summary,
        "target_speedup": TARGET_SPEEDUP,
        "latency_bound_share": LATENCY_BOUND,
        "target_met": met,
        "machine": machine_info(),
    }


if __name__ == "__main__":
    raise SystemExit(main())
