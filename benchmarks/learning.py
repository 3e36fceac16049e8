"""Does the tiny preset learn? Held-out success before vs after, per method and seed.

Methods, each starting from the shipped warm start (``learners/assets/tiny-warmstart``):
- ``flow_grpo``: the tiny preset as ``python -m learners.flow_grpo`` runs it (the paper's
  estimator: outcome broadcast to every turn, normalized within the group);
- ``last_turn``: the same run with credit only on each trajectory's final turn;
- ``gigpo``: the same run with GiGPO's episode-level + anchor-state step-level advantages
  (``algo.gigpo_omega`` 1, ``algo.gigpo_gamma`` 0.95);
- ``flow_grpo_k1``: ``flow_grpo`` with asynchronous rollouts one update stale
  (``rollout.max_staleness`` 1): does k=1 learn as much per step?
- ``sft_only``: more supervised steps on oracle demonstrations for the same training time as
  the Flow-GRPO run of that seed (the offline-SFT baseline).

Prints a table (rich), writes ``benchmarks/results/learning.json`` and a learning-curve PNG
(held-out success vs training minutes). Target: Flow-GRPO gains >= +20 points over its warm start
within 10 minutes on a 2-core CPU.

    python -m benchmarks.learning [--quick] [--seeds 0,1,2] [--methods flow_grpo,last_turn,sft_only]
    # a fixed step budget instead of the 10 minutes (the same steps for every method):
    python -m benchmarks.learning --methods flow_grpo,gigpo,flow_grpo_k1 --total-steps 12 \
        --max-minutes 0 --eval-every 0 --eval-samples 2 --jobs 3 \
        --out benchmarks/results/learning_steps.json
    # combine saved runs:
    python -m benchmarks.learning --merge all_methods.json flow_grpo_rerun.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
import time
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
from benchmarks.common import machine_info

TARGET_GAIN = 0.20
TARGET_MINUTES = 10.0
ASYNC_METHODS = {"flow_grpo_k1": ("flow_grpo", 1)}
"""methods that are an estimator run with asynchronous rollouts (rollout.max_staleness)"""


def run_flow_grpo(
    estimator: str, seed: int, out_dir: Path, overrides: dict[str, Any]
) -> dict[str, Any]:
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    cfg = make_config(
        "tiny",
        overrides={
            "algo.estimator": estimator,
            "seed": seed,
            "output_dir": str(out_dir),
            "train.progress": False,
            **overrides,
        },
    )
    t0 = time.perf_counter()
    with FlowGRPOTrainer(cfg) as trainer:
        # the benchmark's work dir is its own: a new run replaces the one an earlier run left
        result = trainer.train(overwrite=True)
    curve = [
        {"step": int(s), "eval_success": float(v), "minutes": float(t) / 60}
        for s, v, t in trainer.history["eval"]
    ]
    return {
        "before": result["eval_before"],
        "after": result["eval_after"],
        "curve": curve,
        "train_minutes": trainer.train_seconds / 60,
        "wall_minutes": (time.perf_counter() - t0) / 60,
    }


def run_sft_only(seed: int, minutes: float) -> dict[str, Any]:
    from learners.flow_grpo.config import make_config
    from learners.flow_grpo.trainer import load_policy
    from learners.sft import continue_sft

    cfg = make_config("tiny", overrides={"seed": seed})
    policy = load_policy(cfg)
    history = continue_sft(
        policy,
        cfg.env,
        minutes=minutes,
        seed=seed,
        eval_temperature=cfg.train.eval_temperature,
        eval_samples=cfg.train.eval_samples,
    )
    return {
        "before": history[0]["eval_success"],
        "after": history[-1]["eval_success"],
        "curve": history,
        "train_minutes": minutes,
    }


def run_job(
    method: str, seed: int, out_dir: Path, overrides: dict[str, Any], sft_minutes: float
) -> dict[str, Any]:
    """One run in a worker process, with ``overrides["train.num_threads"]`` torch threads."""
    torch.set_num_threads(int(overrides["train.num_threads"]))
    if method == "sft_only":
        r = run_sft_only(seed, sft_minutes)
    elif method in ASYNC_METHODS:
        estimator, k = ASYNC_METHODS[method]
        r = run_flow_grpo(estimator, seed, out_dir, {**overrides, "rollout.max_staleness": k})
    else:
        r = run_flow_grpo(method, seed, out_dir, overrides)
    r.update(method=method, seed=seed, gain=r["after"] - r["before"])
    return r


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {
        "flow_grpo": "tab:blue",
        "last_turn": "tab:orange",
        "gigpo": "tab:green",
        "flow_grpo_k1": "tab:purple",
        "sft_only": "tab:gray",
    }
    seen = set()
    for r in results:
        xs = [p["minutes"] for p in r["curve"]]
        ys = [100 * p["eval_success"] for p in r["curve"]]
        label = r["method"] if r["method"] not in seen else None
        seen.add(r["method"])
        ax.plot(xs, ys, marker="o", color=colors.get(r["method"]), alpha=0.8, label=label)
    ax.set_xlabel("training minutes (rollout + update; evaluation excluded)")
    ax.set_ylabel("held-out success (%)")
    ax.set_title("tiny preset on AgentFlow-Search-v0 (2-core CPU)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="one seed, 6 steps per run (CI / a smoke check)"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="flow_grpo,last_turn,sft_only")
    parser.add_argument("--total-steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="override the preset's training-time budget (0: none, so --total-steps is the "
        "budget: every method gets the same steps whatever the machine's load)",
    )
    parser.add_argument(
        "--eval-every", type=int, default=None, help="override train.eval_every (0: before/after)"
    )
    parser.add_argument(
        "--eval-samples", type=int, default=None, help="override train.eval_samples per task"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs in parallel; the CPUs are split among them (torch threads per run)",
    )
    parser.add_argument("--work-dir", default="runs/benchmark_learning")
    parser.add_argument("--out", default="benchmarks/results/learning.json")
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        default=None,
        help="run nothing: combine saved result files (a later file's run of the same "
        "method and seed replaces an earlier one's) into --out, table and plot",
    )
    args = parser.parse_args(argv)
    if args.merge:
        results, quick = merge_results(args.merge)
        methods = list(dict.fromkeys(r["method"] for r in results))
        report(results, methods, quick, Path(args.out), machine=None)
        return 0
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    from learners.distributed import available_cpus

    # The cores are split among the parallel runs (--jobs 2 on 2 cores: one thread each).
    overrides: dict[str, Any] = {"train.num_threads": max(1, available_cpus() // args.jobs)}
    if args.quick:
        overrides.update({"train.total_steps": 6, "train.eval_every": 3, "train.eval_samples": 1})
    if args.total_steps is not None:
        overrides["train.total_steps"] = args.total_steps
    if args.max_minutes is not None:
        overrides["train.max_minutes"] = args.max_minutes
    if args.eval_every is not None:
        overrides["train.eval_every"] = args.eval_every
    if args.eval_samples is not None:
        overrides["train.eval_samples"] = args.eval_samples
    from learners.flow_grpo.config import make_config

    console = Console()
    budget = float(make_config("tiny", overrides=overrides).train.max_minutes) or TARGET_MINUTES
    jobs = [(method, seed) for seed in seeds for method in methods]
    results: list[dict[str, Any]] = []
    # Runs are independent (SFT-only gets the preset's time budget, the one Flow-GRPO stops at),
    # so --jobs 2 uses both cores.
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {
            pool.submit(
                run_job,
                method,
                seed,
                Path(args.work_dir) / f"{method}-seed{seed}",
                overrides,
                1.0 if args.quick else budget,
            ): (method, seed)
            for method, seed in jobs
        }
        for fut in cf.as_completed(futures):
            r = fut.result()
            results.append(r)
            console.print(
                f"{r['method']} seed {r['seed']}: {r['before']:.2f} -> {r['after']:.2f} "
                f"in {r['train_minutes']:.1f} min"
            )
            # finished runs are kept even if a later one fails or the benchmark is stopped
            partial = Path(args.out).with_suffix(".partial.json")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"quick": args.quick, "results": results}, indent=2))
    order = {job: k for k, job in enumerate(jobs)}
    results.sort(key=lambda r: order[(r["method"], r["seed"])])
    machine = machine_info(torch_threads=overrides["train.num_threads"], jobs=args.jobs)
    for r in results:
        r["measured"] = {"file": str(args.out), "timestamp": machine["timestamp"]}
    report(results, methods, args.quick, Path(args.out), machine)
    return 0


def merge_results(paths: list[Path]) -> tuple[list[dict[str, Any]], bool]:
    """Runs from saved result files; the last file's run of a (method, seed) wins.

    Each run keeps (or gets) ``measured``: the file it came from and when that file's machine
    reading was taken, so a merged table still says which run was measured when and where.
    """
    by_job: dict[tuple[str, int], dict[str, Any]] = {}
    quick = False
    for path in paths:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise ValueError(f"{path}: not a learning result file (it has no 'results' list)")
        quick = quick or bool(data.get("quick"))
        for r in data["results"]:
            run = dict(r)
            run.setdefault(
                "measured",
                {"file": str(path), "timestamp": data.get("machine", {}).get("timestamp")},
            )
            run["measured"].setdefault("machine", data.get("machine"))
            by_job[(run["method"], int(run["seed"]))] = run
    methods = list(dict.fromkeys(m for m, _ in by_job))
    return sorted(by_job.values(), key=lambda r: (methods.index(r["method"]), r["seed"])), quick


def report(
    results: list[dict[str, Any]],
    methods: list[str],
    quick: bool,
    out: Path,
    machine: dict[str, Any] | None,
) -> dict[str, Any]:
    """Print the table, write the JSON and the learning-curve PNG; returns the JSON's content."""
    console = Console()
    table = Table(title="held-out success, tiny preset (AgentFlow-Search-v0)")
    for col in ("method", "seed", "before", "after", "gain (points)", "train min"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            r["method"],
            str(r["seed"]),
            f"{r['before']:.2f}",
            f"{r['after']:.2f}",
            f"{100 * r['gain']:+.1f}",
            f"{r['train_minutes']:.1f}",
        )
    summary = {}
    for m in methods:
        gains = [r["gain"] for r in results if r["method"] == m]
        summary[m] = {
            "mean_gain": float(np.mean(gains)),
            "std_gain": float(np.std(gains)),
            "n": len(gains),
        }
        table.add_row(
            f"[bold]{m} mean[/bold]", "", "", "", f"{100 * summary[m]['mean_gain']:+.1f}", ""
        )
    console.print(table)
    grpo = [r for r in results if r["method"] == "flow_grpo"]
    met = bool(grpo) and all(
        r["gain"] >= TARGET_GAIN and r["train_minutes"] <= TARGET_MINUTES for r in grpo
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(results, png)
    if machine is None:  # merged: the machine of the newest measurement, with every run's own kept
        readings = [
            r["measured"].get("machine") for r in results if r.get("measured", {}).get("machine")
        ]
        machine = max(readings, key=lambda m: m.get("timestamp") or "") if readings else {}
    report_data = {
        "quick": quick,
        "results": results,
        "summary": summary,
        "target_gain": TARGET_GAIN,
        "target_minutes": TARGET_MINUTES,
        "target_met": met,
        "plot": str(png),
        "machine": machine,
    }
    out.write_text(json.dumps(report_data, indent=2))
    console.print(
        f"target (flow_grpo >= +{100 * TARGET_GAIN:.0f} points within {TARGET_MINUTES:.0f} min): "
        f"{'met' if met else 'NOT met'}; wrote {out} and {png}"
    )
    return report_data


if __name__ == "__main__":
    raise SystemExit(main())
