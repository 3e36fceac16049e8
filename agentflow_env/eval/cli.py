"""The evaluation CLI, ``python -m agentflow_env.evaluate`` (see :mod:`agentflow_env.eval`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from agentflow_env.eval.config import EnvOverrides, EvalConfig, EvaluateError
from agentflow_env.eval.multi import print_seeds_report, run_seeds
from agentflow_env.eval.report import print_report
from agentflow_env.eval.run import run
from agentflow_env.registration import ENV_IDS

__all__ = ["build_parser", "main"]


# ------------------------------------------------------------------------------------------ CLI
def _json_object(text: str) -> dict[str, Any]:
    """argparse type of ``--env-kwargs``: a JSON object (argparse reports a failure,
    exit code 2)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from exc
    if isinstance(value, dict):
        return value
    raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}: {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments (each maps to an :class:`EvalConfig` field)."""
    d = EvalConfig()
    p = argparse.ArgumentParser(
        prog="python -m agentflow_env.evaluate",
        description="Benchmark a planner as a policy on an AgentFlow environment.",
    )
    add = p.add_argument
    add("--env", default=d.env, help=f"gymnasium id ({', '.join(ENV_IDS)})")
    add("--data", help="authors' JSON, JSONL, or hf:NAME (default: the env's generated tasks)")
    add(
        "--planner",
        default=d.planner,
        help="scripted:NAME (oracle, random-tool, search-then-answer) or an engine spec",
    )
    add("--executor", default=d.executor, choices=["direct", "llm"])
    add("--verifier", default=d.verifier, choices=["planner", "llm"])
    add("--generator", default=d.generator, choices=["planner", "llm"])
    add("--module-engine", help="engine spec for the LLM modules and Base_Generator_Tool")
    add(
        "--query-analysis",
        action="store_true",
        help="run the query analyzer (needs --module-engine)",
    )
    add("--judge", help="engine spec for an LLM-judge scorer (default: rule scorers)")
    add(
        "--judge-fallback",
        action="store_true",
        help="on judge failure use the rule scorer (counted as judge_fallback errors)",
    )
    add(
        "--tools",
        type=lambda v: [t.strip() for t in v.split(",") if t.strip()],
        help="comma-separated tool names or MCP servers (mcp:COMMAND, mcp+http://HOST:PORT/mcp)"
        " (default: chosen per data file)",
    )
    add("--corpus", help="JSONL corpus (title, text) for the search tools")
    add("--episodes", type=int, help="number of episodes (default: every task)")
    add("--shuffle", action="store_true", help="a seeded random subset instead of the first N")
    add("--max-turns", type=int, default=d.max_turns)
    add("--concurrency", type=int, default=d.concurrency, help="sub-envs stepping together")
    add("--seed", type=int, default=d.seed)
    add(
        "--samples",
        type=int,
        default=d.samples,
        metavar="K",
        help="episodes per task; the report adds per-task success, mean@K and the unbiased "
        "pass@k for k = 1..K",
    )
    add(
        "--seeds",
        type=int,
        default=d.seeds,
        metavar="S",
        help="repeat the run with seeds SEED..SEED+S-1 on the same tasks; report each metric's "
        "mean with a 95%% Student-t interval",
    )
    add("--temperature", type=float, default=d.temperature, help="planner sampling temperature")
    add("--max-tokens", type=int, default=d.max_tokens, help="planner max tokens per step")
    add(
        "--planner-input",
        default=d.planner_input,
        choices=["chat", "prompt"],
        help="send the observation as a chat message or as a raw prompt",
    )
    add(
        "--env-kwargs",
        type=_json_object,
        metavar="JSON",
        help="more env arguments as a JSON object, "
        'merged last, e.g. \'{"prompt_style": "compact"}\'; keys: '
        + ", ".join(EnvOverrides.model_fields),
    )
    add("--out", help="write the report as JSON here")
    add("--trajectories", help="write the episode records as JSONL here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for bad arguments)."""
    cfg = EvalConfig(**vars(build_parser().parse_args(argv)))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = run_seeds(cfg) if cfg.seeds > 1 else run(cfg)
    except EvaluateError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    (print_seeds_report if cfg.seeds > 1 else print_report)(report)
    return 0
