"""Multi-seed evaluation (``--seeds S``): the same evaluation run with S seeds, and its summary.

Run ``i`` uses seed ``seed + i`` for the planner's sampling and the env's resets, and the first
seed for the task set (:attr:`EvalConfig.task_seed`), so every run plays the same tasks and the
spread between runs is the sampling's. The report holds each run's summary and, per metric
(accuracy, mean@K, pass@k), the mean over runs with a two-sided 95% Student-t interval
(:func:`agentflow_env.eval.passk.mean_interval`, S-1 degrees of freedom). Each run's
trajectories go to ``--trajectories`` with ``-seed{N}`` before the suffix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from agentflow_env.eval.config import EvalConfig, validate_config
from agentflow_env.eval.passk import mean_interval
from agentflow_env.eval.protocol import resolve
from agentflow_env.eval.run import run
from agentflow_env.runfiles import atomic_write_text

__all__ = ["INTERVAL", "print_seeds_report", "run_seeds", "seed_path"]

INTERVAL = "95% two-sided Student-t interval of the mean over seeds (S-1 degrees of freedom)"


def seed_path(path: str | None, seed: int) -> str | None:
    """``runs/x.jsonl`` -> ``runs/x-seed3.jsonl`` (None stays None)."""
    if path is None:
        return None
    p = Path(path)
    return str(p.with_name(f"{p.stem}-seed{seed}{p.suffix}"))


def _metrics(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """The per-run numbers the seeds are summarized over."""
    out: dict[str, float | None] = {"accuracy": summary.get("accuracy")}
    samples = summary.get("samples")
    if samples:
        K = samples["samples"]
        out[f"mean@{K}"] = samples[f"mean@{K}"]
        out.update({f"pass@{k}": v for k, v in samples["pass_at_k"].items()})
    return out


def run_seeds(cfg: EvalConfig) -> dict[str, Any]:
    """Run ``cfg`` with ``cfg.seeds`` seeds; returns the combined report (written to ``out``).

    The protocol fills ``cfg``'s None settings first (every run gets the same ones); each run
    resumes or overwrites its own ``-seed{N}`` trajectories as ``cfg`` says, and a run stopped
    by infrastructure failures (:class:`~agentflow_env.eval.config.RunStopped`) stops the whole
    (earlier seeds' files stay).
    """
    cfg, _ = resolve(cfg)
    validate_config(cfg)
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    first_task_seed = cfg.seed if cfg.task_seed is None else cfg.task_seed
    plan = [
        replace(
            cfg,
            seed=seed,
            seeds=1,
            task_seed=first_task_seed,
            out=None,
            trajectories=seed_path(cfg.trajectories, seed),
        )
        for seed in seeds
    ]
    for one in plan:  # every seed's outputs checked before the first episode, not at its turn
        validate_config(one)
    runs: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    for seed, one in zip(seeds, plan, strict=True):
        report = run(one)
        runs.append({"seed": seed, "summary": report["summary"]})
        first = first or report
    per_run = [_metrics(r["summary"]) for r in runs]
    names = list(dict.fromkeys(name for metrics in per_run for name in metrics))
    config = {
        k: v if isinstance(v, (str, int, float, bool, list, dict, type(None))) else repr(v)
        for k, v in asdict(cfg).items()
    }
    report = {
        "config": config,
        "kind": first["kind"],
        "tools": first["tools"],
        "notes": first["notes"],
        "seeds": seeds,
        "interval": INTERVAL,
        "summary": {name: mean_interval([m.get(name) for m in per_run]) for name in names},
        "runs": runs,
    }
    if cfg.out:
        text = json.dumps(report, indent=2, allow_nan=False, default=str)
        atomic_write_text(cfg.out, text + "\n")
    return report


def print_seeds_report(report: Mapping[str, Any], console: Any | None = None) -> None:
    """One row per metric: the value of each seed, the mean and its interval."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    c = report["config"]
    data = Path(c["data"]).name if c["data"] else "generated tasks"
    table = Table(
        title=f"{c['env']} | {data} | planner {c['planner']} | seeds {report['seeds']}",
        title_justify="left",
        caption=report["interval"],
    )
    table.add_column("metric")
    for seed in report["seeds"]:
        table.add_column(f"seed {seed}", justify="right")
    table.add_column("mean", justify="right")
    table.add_column("95% interval", justify="right")

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for name, stats in report["summary"].items():
        ci = stats["ci"]
        table.add_row(
            name,
            *(fmt(v) for v in stats["values"]),
            fmt(stats["mean"]),
            f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a",
        )
    console.print(table)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
