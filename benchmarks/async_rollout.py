"""Training steps per minute, synchronous vs asynchronous rollouts (``rollout.max_staleness``),
side by side in one run, and whether k=1 learns as much per step.

The tiny preset (its warm start, tasks and hyperparameters) runs in these settings (``+`` joins
parts, e.g. ``remote-all+search-64``):

- ``offline``: as shipped; every module is rule-based and the search is local BM25, so a
  rollout is CPU work (generation) that competes with the update for the same cores;
- ``remote-S``: the LLM modules are remote: every executor, verifier and generator call sends
  its episodes' requests to an engine that answers each in ``--latency-ms`` (50 ms) and has
  ``S`` request slots **shared by all callers** (a request waits for a free slot, then holds it
  for the latency; ``S = all``: unlimited, one round trip per call). With several collectors in
  flight they compete for the same slots, so concurrency only helps where the server has spare
  capacity. The modules then decide as the offline ones do (the executor runs the planner's
  command, the verifier stops when the planner finishes, the generator takes the planner's
  answer);
- ``search-S``: the search tool is remote, as a web-search API is: every query waits a latency
  drawn uniformly from ``--tool-latency-ms`` (500-1000 ms) on a server with ``S`` slots shared
  by all callers, then returns the local BM25 result. The vector env sends a step's searches
  at once, so a turn waits about the slowest one.

In every remote setting the trajectories, and so the learning, are exactly the offline ones (the
benchmark checks that the final parameters are identical); only the time a rollout spends
waiting changes.

Speed: per setting, ``sync`` (k = 0) then ``k=1`` (``--collectors`` collector threads, 0: two,
each with its own model copy and envs) for ``--steps`` steps from the same start, timed over the
whole loop (the k=1 pipeline's first, unhidden rollout included); ``--with-single`` adds k=1
with one collector (one rollout in flight: at best ``max(rollout, update)`` per step). ``wait``
is the share of a synchronous step spent waiting on the engine and the tool. Learning: offline,
``--learn-steps`` steps per seed, held-out success before and after (95% Wilson intervals;
"equal within noise" when the two runs' intervals overlap; ``--learn-steps 0`` skips it, for
``python -m benchmarks.learning --methods flow_grpo,flow_grpo_k1``). Target: k=1 >= 1.3x the
synchronous steps per minute in a latency-bound setting (the wait at least half of a
synchronous step), learning equal within noise.

    python -m benchmarks.async_rollout [--quick] [--steps 10] [--learn-steps 40] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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


UNLIMITED = 1 << 30


class RemoteServer:
    """A remote service with ``slots`` request slots shared by every caller (``UNLIMITED``: as
    many as asked). A request waits for a free slot and holds it for its latency (drawn
    uniformly from ``latency_s``, a ``(low, high)`` pair, by a seeded generator); a call of
    ``n`` requests sends them at once and returns when all are answered. ``waited_s`` adds up
    the time callers spent in calls; ``peak`` is the most requests in service at once."""

    def __init__(self, latency_s: tuple[float, float], slots: int, seed: int = 0) -> None:
        self.latency_s, self.slots = latency_s, slots
        self.waited_s, self.requests, self.peak = 0.0, 0, 0
        self._busy = 0
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        # the pool's workers are the slots: requests queue for them in arrival order
        self._pool = None if slots >= UNLIMITED else ThreadPoolExecutor(slots, "remote-slot")

    def _latency(self) -> float:
        low, high = self.latency_s
        with self._lock:
            return float(self._rng.uniform(low, high)) if high > low else low

    def _serve_one(self) -> None:
        with self._lock:
            self._busy += 1
            self.peak = max(self.peak, self._busy)
        try:
            time.sleep(self._latency())
        finally:
            with self._lock:
                self._busy -= 1

    def call(self, n: int) -> None:
        if n <= 0:
            return
        t0 = time.perf_counter()
        if self._pool is None:  # every request in service at once: the slowest one's latency
            with self._lock:
                self._busy += n
                self.peak = max(self.peak, self._busy)
            time.sleep(max(self._latency() for _ in range(n)))
            with self._lock:
                self._busy -= n
        else:
            for f in [self._pool.submit(self._serve_one) for _ in range(n)]:
                f.result(timeout=600)
        with self._lock:
            self.waited_s += time.perf_counter() - t0
            self.requests += n

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class RemoteEngine:
    """An engine on a :class:`RemoteServer` (a ``callable`` engine answering "ok")."""

    def __init__(self, server: RemoteServer) -> None:
        self.server = server
        self.engine = CallableEngine(self._serve, batched=True, name="remote-engine")

    def _serve(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.server.call(len(requests))
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


class RemoteSearch:
    """The env's own search tool behind a :class:`RemoteServer`: each query waits there, then
    gets the local BM25 result (so episodes are the offline ones). Shared by every collector's
    envs; ``close`` leaves the wrapped tool to its owner."""

    runs_inline = False  # a network call: the flow runs it on its tool pool

    def __init__(self, inner: Any, server: RemoteServer) -> None:
        self.inner, self.server, self.card = inner, server, inner.card
        if getattr(inner, "backend", None):
            self.backend = inner.backend

    def execute(self, **inputs: Any) -> Any:
        self.server.call(1)
        return self.inner.execute(**inputs)

    def batch_execute(self, queries: Sequence[Any], top_k: Any = None) -> list[Any]:
        self.server.call(len(queries))
        return self.inner.batch_execute(queries, top_k=top_k)

    def close(self) -> None:
        """The benchmark closes the wrapped tool's env itself."""


def _slots(text: str) -> int:
    return UNLIMITED if text == "all" else int(text)


class _Remotes:
    """A run's remote servers (engine, search) and what they own; closed after the run."""

    def __init__(self) -> None:
        self.engine: RemoteServer | None = None
        self.search: RemoteServer | None = None
        self._owned: list[Any] = []

    def close(self) -> None:
        for server in (self.engine, self.search):
            if server is not None:
                server.close()
        for thing in self._owned:
            thing.close()


def _config(
    setting: str,
    k: int,
    seed: int,
    steps: int,
    args: argparse.Namespace,
    out: Path,
    collectors: int = 0,
) -> tuple[Any, _Remotes]:
    """The tiny preset for one run, with the setting's remote engine and/or search."""
    from learners.envs import make_vector_env
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
        "rollout.collectors": collectors if k else 0,
        "train.num_threads": args.threads,
    }
    if args.queries is not None:
        overrides["rollout.queries_per_step"] = args.queries
    if args.eval_tasks is not None:
        overrides["env.eval_tasks"] = args.eval_tasks
    cfg = make_config("tiny", overrides=overrides)
    remotes = _Remotes()
    for part in setting.split("+"):
        if part.startswith("remote-"):
            ms = args.latency_ms / 1000
            remotes.engine = RemoteServer((ms, ms), _slots(part.removeprefix("remote-")))
            engine = RemoteEngine(remotes.engine)
            cfg.env.executor = RemoteExecutor(engine)
            cfg.env.verifier = RemoteVerifier(engine)
            cfg.env.generator = RemoteGenerator(engine)
        elif part.startswith("search-"):
            low, _, high = args.tool_latency_ms.partition("-")
            latency = (float(low) / 1000, float(high or low) / 1000)
            remotes.search = RemoteServer(latency, _slots(part.removeprefix("search-")), seed)
            local = make_vector_env(cfg.env, 1)  # the offline search tool, built as the env does
            remotes._owned.append(local)
            tools = [RemoteSearch(t, remotes.search) for t in local.flow.tools.values()]
            if [t.card.name for t in tools] != ["Search_Tool"]:
                raise ValueError(f"search-S expects the preset's one search tool, got {tools}")
            cfg.env.tools = tools
        elif part != "offline":
            raise ValueError(f"unknown setting part {part!r}: offline, remote-S or search-S")
    return cfg, remotes


VARIANTS = {"sync": (0, 0), "k1": (1, -1), "k1-single": (1, 1)}
"""variant -> (max_staleness, collectors); -1: ``--collectors``"""


def time_run(
    setting: str, variant: str, args: argparse.Namespace, out: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``args.steps`` training steps (no evaluation), timed; the row and the final weights."""
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    k, collectors = VARIANTS[variant]
    collectors = args.collectors if collectors < 0 else collectors
    cfg, remotes = _config(setting, k, 0, args.steps, args, out, collectors)
    load = os.getloadavg()[0]
    waits, updates, lags = [], [], []
    try:
        with FlowGRPOTrainer(cfg) as trainer:
            t0 = time.perf_counter()
            while trainer.step < args.steps:
                stats = trainer.train_step()
                trainer.step += 1
                waits.append(stats["time/rollout_s"])
                updates.append(stats["time/update_s"])
                lags.append(stats.get("rollout/policy_lag", 0.0))
            seconds = time.perf_counter() - t0
            pipe = trainer._pipeline
            threads = len(pipe.collectors) if pipe is not None else 0
            weights = {n: v.detach().clone() for n, v in trainer.policy.model.state_dict().items()}
    finally:
        remotes.close()
    engine, search = remotes.engine, remotes.search
    row = {
        "setting": setting,
        "variant": variant,
        "k": k,
        "collectors": threads,
        "steps": args.steps,
        "seconds": seconds,
        "steps_per_min": 60 * args.steps / seconds,
        "rollout_wait_s": float(np.mean(waits)),
        "update_s": float(np.mean(updates)),
        "max_policy_lag": float(max(lags)),
        # callers' time in remote calls per step (collectors in flight together each count)
        "engine_wait_s": engine.waited_s / args.steps if engine else 0.0,
        "tool_wait_s": search.waited_s / args.steps if search else 0.0,
        "engine_peak_in_service": engine.peak if engine else 0,
        "search_peak_in_service": search.peak if search else 0,
        "loadavg_1m": [load, os.getloadavg()[0]],
    }
    return row, weights


def learn_run(k: int, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Offline, ``args.learn_steps`` steps: held-out success before and after."""
    from learners.flow_grpo.trainer import FlowGRPOTrainer

    cfg, _ = _config("offline", k, seed, args.learn_steps, args, out, args.collectors)
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
        by = {r["variant"]: r for r in rows if r["setting"] == setting}
        sync, k1 = by["sync"], by["k1"]
        step_s = sync["seconds"] / sync["steps"]
        engine, tool = sync["engine_wait_s"] / step_s, sync["tool_wait_s"] / step_s
        summary = {
            "setting": setting,
            "speedup": k1["steps_per_min"] / sync["steps_per_min"],
            "collectors": k1["collectors"],
            "engine_wait_share": engine,
            "tool_wait_share": tool,
            "wait_share": engine + tool,
            "latency_bound": engine + tool >= LATENCY_BOUND,
            "same_weights_as_offline": same.get(setting),
        }
        if "k1-single" in by:
            summary["speedup_single"] = by["k1-single"]["steps_per_min"] / sync["steps_per_min"]
        out.append(summary)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 steps, small batches (CI)")
    parser.add_argument(
        "--settings",
        default="offline,remote-all,remote-8,search-64,remote-64+search-64",
        help="comma-separated settings (module docstring); + joins parts",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    parser.add_argument(
        "--learn-steps",
        type=int,
        default=40,
        help="steps of each learning run (0: no learning check here; benchmarks/learning.py's "
        "flow_grpo_k1 method compares k=1 with flow_grpo over several seeds)",
    )
    parser.add_argument("--seeds", default="0,1", help="seeds of the learning runs")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="engine latency")
    parser.add_argument(
        "--tool-latency-ms", default="500-1000", help="remote search latency, LOW-HIGH or one"
    )
    parser.add_argument(
        "--collectors",
        type=int,
        default=0,
        help="k=1's collector threads (rollout.collectors; 0: k + 1 = 2)",
    )
    parser.add_argument(
        "--with-single", action="store_true", help="also time k=1 with one collector"
    )
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        args.settings = "offline,remote-8,search-16"
        args.steps, args.learn_steps, seeds = 3, 2, [0]
        args.queries, args.eval_tasks, args.eval_samples = 8, 8, 1
    console, work = Console(), Path(args.work_dir)
    speed, weights = [], {}
    variants = ["sync", "k1"] + (["k1-single"] if args.with_single else [])
    for setting in args.settings.split(","):
        for v in variants:  # side by side: the same start, one after the other
            row, weights[setting, v] = time_run(setting, v, args, work / f"{setting}-{v}")
            speed.append(row)
            console.print(
                f"{setting} {v}: {row['steps_per_min']:.2f} steps/min (load {row['loadavg_1m']})"
            )
    same = {
        s: all(
            all(torch.equal(weights[s, v][n], weights["offline", v][n]) for n in weights[s, v])
            for v in variants
        )
        for s in args.settings.split(",")
        if s != "offline" and ("offline", "sync") in weights
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
        "engine / tool wait per sync step",
        "sync steps/min",
        "k=1 steps/min (collectors)",
        "k=1/sync",
        "1 collector/sync",
        "load 1m",
    ):
        table.add_column(col, justify="right")
    for s in speed_summary:
        by = {r["variant"]: r for r in speed if r["setting"] == s["setting"]}
        loads = [x for r in by.values() for x in r["loadavg_1m"]]
        table.add_row(
            s["setting"],
            f"{100 * s['engine_wait_share']:.0f}% / {100 * s['tool_wait_share']:.0f}%",
            f"{by['sync']['steps_per_min']:.2f}",
            f"{by['k1']['steps_per_min']:.2f} ({s['collectors']})",
            f"{s['speedup']:.2f}x",
            f"{s['speedup_single']:.2f}x" if "speedup_single" in s else "",
            f"{min(loads):.1f}-{max(loads):.1f}",
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
            "tool_latency_ms": args.tool_latency_ms,
            "collectors": args.collectors,
            "queries": args.queries,
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
