"""Episodes/s of (a) a serial loop over N single envs, (b) gymnasium's SyncVectorEnv and (c)
AgentFlowVectorEnv, with LLM executor/verifier/generator engines, side by side in one run.

Engines: (i) the tiny local transformers model (``hf:``), (ii) a ``callable`` engine sleeping a
fixed 50 ms per call (a remote, latency-bound server). The planner is the scripted oracle, so the
measured time is the environment's: modules, tools, memory, parsing. The env's own overhead per
step in the offline modes is benchmarks/env_overhead.py's.

    python benchmarks/vector_throughput.py [--quick]
        [--out benchmarks/results/vector_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from rich.console import Console
from rich.table import Table

import agentflow_env  # noqa: F401 - registers the ids
from agentflow_env import AgentFlowEnv, AgentFlowVectorEnv
from agentflow_env.llm.base import GenerationRequest, GenerationResult
from agentflow_env.llm.callable_engine import CallableEngine
from agentflow_env.planners import OraclePlanner
from agentflow_env.tasks.suite import make_suite

if __package__ in (
    None,
    "",
):  # run as a script (python benchmarks/x.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info

console = Console()
_SUGGESTED = re.compile(r"Planner's suggested call: (.*)")


class CallCountingEngine:
    """Counts engine calls (one batched ``generate`` = one call) and requests."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls, self.requests = inner, 0, 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.calls += 1
        self.requests += len(requests)
        return self.inner.generate(requests)

    def close(self) -> None:
        pass


def latency_engine(latency_s: float) -> CallableEngine:
    """A remote-server stand-in: one round trip of ``latency_s`` per call, whatever the batch.

    Replies are well-formed so the flow does real work: the executor repeats the planner's
    suggested command, the verifier continues, the generator answers.
    """

    def reply(prompt: str) -> str:
        if "executor" in prompt:
            match = _SUGGESTED.search(prompt)
            call = match.group(1) if match else "execution = tool.execute(query='x')"
            return f"Command: {call}"
        if "verifier" in prompt:
            return "Analysis: more evidence may help.\nConclusion: CONTINUE"
        return "<answer>unknown</answer>"

    def batch(requests: Sequence[GenerationRequest]) -> list[str]:
        time.sleep(latency_s)
        return [reply(r.messages[-1].content if r.messages else r.prompt or "") for r in requests]

    return CallableEngine(batch, batched=True, name=f"sleep{int(latency_s * 1000)}ms")


def _env_kwargs(engine: Any, suite: Any, max_turns: int) -> dict[str, Any]:
    return {
        "tasks": list(suite.tasks),
        "documents": list(suite.documents),
        "max_turns": max_turns,
        "executor": "llm",
        "verifier": "llm",
        "generator": "llm",
        "engine": engine,
        "prompt_style": "compact",
    }


def run_serial(make_env: Callable[[], AgentFlowEnv], n: int) -> float:
    """(a) one trajectory at a time, N of them (the reference system's worker loop)."""
    envs = [make_env() for _ in range(n)]
    start = time.perf_counter()
    for i, env in enumerate(envs):
        planner = OraclePlanner(verbose=False)
        obs, _ = env.reset(options={"task_index": max(i, 0)})
        planner.reset(env.unwrapped.task)
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(planner.act(obs))
            done = term or trunc
    elapsed = time.perf_counter() - start
    for env in envs:
        env.close()
    return elapsed


def run_sync(make_env: Callable[[], AgentFlowEnv], n: int) -> float:
    """(b) gymnasium's SyncVectorEnv over N single envs, stepped until N episodes have ended.

    Sub-envs autoreset (NextStep) and keep working, as in a user's training loop; each still
    calls its modules one request at a time.
    """
    envs = SyncVectorEnv([make_env] * n)
    start = time.perf_counter()
    obs, _ = envs.reset(seed=0)
    planners = [OraclePlanner(verbose=False) for _ in range(n)]
    for planner, env in zip(planners, envs.envs, strict=True):
        planner.reset(env.unwrapped.task)
    completed, resetting = 0, np.zeros(n, dtype=bool)
    while completed < n:
        actions = ["" if resetting[i] else planners[i].act(obs[i]) for i in range(n)]
        obs, _, term, trunc, _ = envs.step(actions)
        for i in range(n):
            if resetting[i]:  # this step was the autoreset: a new task
                planners[i].reset(envs.envs[i].unwrapped.task)
                resetting[i] = False
            elif term[i] or trunc[i]:
                completed += 1
                resetting[i] = True
    elapsed = time.perf_counter() - start
    envs.close()
    return elapsed * n / completed


def run_vector(make_vec: Callable[[int], AgentFlowVectorEnv], n: int) -> float:
    """(c) AgentFlowVectorEnv: every stage once per step for all N episodes."""
    envs = make_vec(n)
    start = time.perf_counter()
    obs, _ = envs.reset(options={"task_indices": list(range(n))})
    planners = [OraclePlanner(verbose=False) for _ in range(n)]
    for planner, task in zip(planners, envs.current_tasks, strict=True):
        planner.reset(task)
    done = np.zeros(n, dtype=bool)
    while not done.all():
        actions = ["" if done[i] else planners[i].act(obs[i]) for i in range(n)]
        obs, _, term, trunc, _ = envs.step(actions)
        done |= term | trunc
    elapsed = time.perf_counter() - start
    envs.close()
    return elapsed


def throughput_rows(
    engine_name: str,
    engine: Any,
    sizes: Sequence[int],
    suite: Any,
    max_turns: int,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Episodes/s of (a), (b), (c) at each N: the median of ``repeats`` rounds.

    Each round runs (a), (b), (c) back to back, so a slow spell of a shared machine lands on all
    three instead of on one of them (single runs here varied up to 1.5x).
    """
    rows = []
    for n in sizes:
        row: dict[str, Any] = {"engine": engine_name, "N": n, "repeats": repeats}
        samples: dict[str, list[float]] = {label: [] for label in ("serial", "sync", "vector")}
        for _ in range(repeats):
            for label, runner in (
                ("serial", run_serial),
                ("sync", run_sync),
                ("vector", run_vector),
            ):
                counter = CallCountingEngine(engine)
                kwargs = _env_kwargs(counter, suite, max_turns)
                if label == "vector":
                    elapsed = runner(
                        lambda k, kwargs=kwargs: AgentFlowVectorEnv(
                            k, autoreset_mode=AutoresetMode.DISABLED, **kwargs
                        ),
                        n,
                    )
                else:
                    elapsed = runner(lambda kwargs=kwargs: AgentFlowEnv(**kwargs), n)
                samples[label].append(n / elapsed)
                row[f"{label}_calls"] = counter.calls
        for label, values in samples.items():
            row[f"{label}_eps"] = float(np.median(values))
            row[f"{label}_eps_all"] = values
        row["vector_over_serial"] = row["vector_eps"] / row["serial_eps"]
        rows.append(row)
        console.log(f"{engine_name} N={n}: vector/serial = {row['vector_over_serial']:.1f}x")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N in {1, 4, 16} and fewer episodes")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--skip-hf", action="store_true", help="skip the tiny local model engine")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="rounds per cell, median reported (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/vector_throughput.json")
    )
    args = parser.parse_args(argv)
    sizes = [1, 4, 16] if args.quick else [1, 4, 16, 64]
    suite = make_suite("search", seed=0, num_tasks=max(sizes), hops=(1, 2))
    repeats = args.repeats or (1 if args.quick else 3)
    rows = throughput_rows(
        "callable-50ms",
        latency_engine(args.latency_ms / 1000),
        sizes,
        suite,
        args.max_turns,
        repeats,
    )
    if not args.skip_hf:
        from agentflow_env.llm.hf_engine import HFEngine
        from learners.tiny import make_tiny_chat_model

        with tempfile.TemporaryDirectory() as tmp:
            path = make_tiny_chat_model(Path(tmp) / "tiny", steps=150)
            hf = HFEngine(str(path), max_batch_size=64, seed=0)
            # Short completions keep the serial baseline affordable; the ratio is what matters.
            rows += throughput_rows(
                "hf-tiny", _capped(hf, 24), sizes, suite, args.max_turns, repeats
            )
    _print(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"quick": args.quick, "machine": machine_info(), "throughput": rows}, indent=2)
    )
    console.print(f"wrote {args.out}")
    return 0


def _capped(engine: Any, max_tokens: int) -> Any:
    class Capped:
        def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
            capped = [
                r.model_copy(
                    update={"sampling": r.sampling.model_copy(update={"max_tokens": max_tokens})}
                )
                for r in requests
            ]
            return engine.generate(capped)

        def close(self) -> None:
            engine.close()

    return Capped()


def _print(rows: list[dict[str, Any]]) -> None:
    table = Table(
        title="episodes/s (module calls) - serial loop vs SyncVectorEnv vs AgentFlowVectorEnv"
        f" (median of {rows[0]['repeats'] if rows else 0})"
    )
    for col in ("engine", "N", "serial", "sync", "vector", "vector/serial"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["engine"],
            str(r["N"]),
            f"{r['serial_eps']:.2f} ({r['serial_calls']})",
            f"{r['sync_eps']:.2f} ({r['sync_calls']})",
            f"{r['vector_eps']:.2f} ({r['vector_calls']})",
            f"{r['vector_over_serial']:.1f}x",
        )
    console.print(table)


if __name__ == "__main__":
    raise SystemExit(main())
