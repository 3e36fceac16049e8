"""The evaluation CLI, ``python -m agentflow_env.evaluate`` (see :mod:`agentflow_env.eval`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from agentflow_env.eval.config import (
    EnvOverrides,
    EvalConfig,
    EvaluateError,
    RunStopped,
    parse_max_errors,
)
from agentflow_env.eval.multi import print_seeds_report, run_seeds
from agentflow_env.eval.protocol import PROTOCOLS, DryRun, dry_run
from agentflow_env.eval.report import print_report
from agentflow_env.eval.run import run
from agentflow_env.registration import ENV_IDS

__all__ = ["build_parser", "main", "print_dry_run"]


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
        "--protocol",
        default=d.protocol,
        choices=list(PROTOCOLS),
        help="preset of the settings marked [preset] below; an explicit flag wins. rules "
        "(default): rule scorers, this project's tools; paper: the reference's evaluation "
        "(released planner, LLM modules, its tool set, 10 turns, 300 s, LLM judge, two-stage "
        "for choices)",
    )
    add(
        "--dry-run",
        action="store_true",
        help="print the resolved settings and what is unavailable here (weights, vLLM, GPU, "
        "servers), build nothing, exit 0 when the configuration is valid",
    )
    add(
        "--planner",
        help="[preset] scripted:NAME (oracle, random-tool, search-then-answer) or an engine spec"
        f" ({_preset('planner')})",
    )
    add("--executor", choices=["direct", "llm"], help=f"[preset] ({_preset('executor')})")
    add("--verifier", choices=["planner", "llm"], help=f"[preset] ({_preset('verifier')})")
    add("--generator", choices=["planner", "llm"], help=f"[preset] ({_preset('generator')})")
    add(
        "--module-engine",
        help="[preset] engine spec for the LLM modules, query analysis and the generator tools "
        f"({_preset('module_engine')})",
    )
    add(
        "--query-analysis",
        action=argparse.BooleanOptionalAction,
        help="[preset] run the query analyzer (needs a module engine) "
        f"({_preset('query_analysis')})",
    )
    add(
        "--judge",
        help="[preset] engine spec for an LLM-judge scorer; its failures are infrastructure "
        "errors (rules: none, rule scorers; paper: the module engine's spec)",
    )
    add(
        "--judge-verdict",
        choices=["line", "json"],
        help=f"[preset] the judge's verdict format ({_preset('judge_verdict')})",
    )
    add(
        "--judge-two-stage",
        action=argparse.BooleanOptionalAction,
        help="[preset] judge tasks with choices by extracting the chosen option, then verifying "
        f"it ({_preset('judge_two_stage')})",
    )
    add(
        "--judge-max-tokens",
        type=int,
        metavar="N",
        help="the judge's tokens per reply (default 256 for verdict lines, 512 for JSON)",
    )
    add(
        "--judge-fallback",
        action="store_true",
        help="on judge failure use the rule scorer (counted as judge_fallback errors)",
    )
    add(
        "--tools",
        type=lambda v: [t.strip() for t in v.split(",") if t.strip()],
        help="comma-separated tool names or MCP servers (mcp:COMMAND, mcp+http://HOST:PORT/mcp)"
        " (default: chosen per data file; paper: the reference's four tools, toolset paper)",
    )
    add("--corpus", help="JSONL corpus (title, text) for the search tools")
    add("--episodes", type=int, help="number of episodes (default: every task)")
    add("--shuffle", action="store_true", help="a seeded random subset instead of the first N")
    add("--max-turns", type=int, help=f"[preset] ({_preset('max_turns')})")
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
    add(
        "--temperature",
        type=float,
        help=f"[preset] planner sampling temperature ({_preset('temperature')})",
    )
    add(
        "--max-tokens",
        type=int,
        help=f"[preset] planner max tokens per step ({_preset('max_tokens')})",
    )
    add(
        "--planner-input",
        default=d.planner_input,
        choices=["chat", "prompt"],
        help="send the episode's chat messages (info['messages']) or the text observation as "
        "a raw prompt",
    )
    add(
        "--planner-constrained",
        action="store_true",
        help="constrain the planner's output to the action grammar (fields in order, Tool Name "
        "from the episode's tools; engine planners; needs agentflow-gym[structured] for hf)",
    )
    add(
        "--env-kwargs",
        type=_json_object,
        metavar="JSON",
        help="more env arguments as a JSON object, merged last (over the protocol's: paper sets "
        'prompt_style "paper" and max_episode_s 300), e.g. \'{"prompt_style": "compact"}\'; keys: '
        + ", ".join(EnvOverrides.model_fields),
    )
    add("--out", help="write the report as JSON here (atomically)")
    add("--trajectories", help="write the episode records as JSONL here (one line per episode)")
    add(
        "--resume",
        action="store_true",
        help="continue from --trajectories: finished episodes are kept, the rest (and errored "
        "ones) are played",
    )
    add("--overwrite", action="store_true", help="replace existing --out / --trajectories files")
    add(
        "--max-errors",
        type=_max_errors,
        default=d.max_errors,
        metavar="N|FRACTION",
        help="stop (exit 3, partial results written) when more episodes than this lose their "
        "outcome to infrastructure: a count (5) or a fraction of the planned episodes "
        f"(default {d.max_errors})",
    )
    add(
        "--request-timeout",
        type=float,
        metavar="S",
        help="seconds per attempt of an openai: engine's request (default 60)",
    )
    add(
        "--max-retries",
        type=int,
        metavar="N",
        help="retries of a failed openai: request: 408/429/5xx, timeouts, connection errors, "
        "invalid responses (default 3)",
    )
    add(
        "--no-preflight",
        dest="preflight",
        action="store_false",
        help="skip the short request sent to every remote engine before the first episode",
    )
    return p


def _preset(name: str) -> str:
    """``rules: X; paper: Y`` for a setting's help."""
    return "; ".join(f"{p}: {values[name]}" for p, values in PROTOCOLS.items())


def _max_errors(text: str) -> float:
    try:
        return parse_max_errors(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def print_dry_run(checked: DryRun) -> None:
    """The dry run's report: resolved settings (and where each came from), the plan, and one
    line per check (``ok`` or ``unavailable``)."""
    cfg = checked.config
    print(f"protocol {cfg.protocol}: configuration valid")
    for name, source in checked.source.items():
        key = name.removeprefix("env_kwargs.")
        value = (cfg.env_kwargs or {}).get(key) if key != name else getattr(cfg, name)
        print(f"  {name:<26} {value!s:<56} ({source})")
    data = cfg.data or "generated tasks"
    count = "" if checked.tasks is None else f", {checked.tasks} tasks"
    print(f"  {'data':<26} {data} ({checked.kind}{count})")
    tools = checked.tools if checked.tools is not None else "the env family's"
    print(f"  {'tools':<26} {tools}")
    shown = {"tools", *(name.removeprefix("env_kwargs.") for name in checked.source)}
    for key, value in checked.env_settings.items():
        if key not in shown:
            print(f"  {'env.' + key:<26} {value}")
    for note in checked.notes:
        print(f"note: {note}")
    for check in checked.checks:
        print(f"{'ok         ' if check.ok else 'unavailable'}  {check.name}: {check.detail}")
    if checked.unavailable:
        print(f"{len(checked.unavailable)} requirement(s) unavailable on this machine")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code: 0 done (or ``--dry-run`` found the configuration
    valid, whatever is unavailable here), 2 bad arguments or paths (before any work), 3 stopped
    by infrastructure failures (partial results written)."""
    args = vars(build_parser().parse_args(argv))
    check_only = args.pop("dry_run")
    cfg = EvalConfig(**args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if check_only:
        try:
            print_dry_run(dry_run(cfg))
        except EvaluateError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        return 0
    try:
        report = run_seeds(cfg) if cfg.seeds > 1 else run(cfg)
    except EvaluateError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except RunStopped as exc:
        if exc.report is not None:
            print_report(exc.report)
        sys.stderr.write(f"stopped: {exc.reason}\n")
        return 3
    (print_seeds_report if cfg.seeds > 1 else print_report)(report)
    return 0
