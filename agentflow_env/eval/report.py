"""The report of an evaluation run (:mod:`agentflow_env.eval`): statistics, summary, table.

Three outcomes are kept apart (DESIGN.md, section 9): right, wrong, and errored (no outcome:
infrastructure failed, :mod:`agentflow_env.infra`). ``accuracy`` is the mean score over the
completed (scored) episodes with a 95% Wilson interval; ``errored`` counts the others by kind
(``errored_by_kind``), and ``accuracy_errored_as_wrong`` shows, side by side, what counting them
as wrong answers would give. An errored episode is never scored 0.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentflow_env.trajectory import EpisodeRecord

__all__ = ["ERROR_KINDS", "episode_rows", "print_report", "summarize", "wilson_interval"]

ERROR_KINDS = (
    "planner",
    "parse",
    "executor",
    "tool",
    "verifier",
    "generator",
    "score",
    "query_analysis",
    "judge_fallback",
)


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for ``successes`` out of ``n`` (fractional scores allowed)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = min(max(successes / n, 0.0), 1.0)
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def summarize(
    records: Sequence[EpisodeRecord], planner: Any, module_engine: Any, judge: Any, wall_s: float
) -> dict[str, Any]:
    """Accuracy, turns, tool calls, errors by kind and token usage of finished episodes.

    ``planner``/``module_engine`` expose ``tokens`` (prompt, completion); ``judge`` is an
    :class:`~agentflow_env.judge.LLMJudge` or None.
    """
    scored = [r.score for r in records if r.score is not None and r.infra_error is None]
    errored = Counter(r.infra_error.kind for r in records if r.infra_error is not None)
    errors: Counter[str] = Counter()
    tool_calls: Counter[str] = Counter()
    for r in records:
        errors.update(r.metadata.get("errors", {}))
        tool_calls.update(
            t.tool_name
            for t in r.turns  # calls that reached the tool
            if t.tool_name and t.error_kind != "executor"
        )
    if judge is not None:
        errors["judge_fallback"] += len(judge.fallbacks)
    n = len(records)
    judge_tokens = (
        (judge.prompt_tokens or None, judge.completion_tokens or None) if judge else (None, None)
    )
    return {
        "episodes": n,
        "scored": len(scored),
        "accuracy": sum(scored) / len(scored) if scored else None,
        "accuracy_ci95": list(wilson_interval(float(sum(scored)), len(scored))) if scored else None,
        "errored": sum(errored.values()),
        "errored_by_kind": dict(sorted(errored.items())),
        "accuracy_errored_as_wrong": (
            sum(scored) / (len(scored) + sum(errored.values())) if scored or errored else None
        ),
        "mean_turns": sum(r.num_turns for r in records) / n if n else None,
        "terminated": sum(r.terminated for r in records),
        "truncated": sum(r.truncated for r in records),
        "tool_calls": dict(sorted(tool_calls.items())),
        "errors": {kind: errors.get(kind, 0) for kind in ERROR_KINDS},
        "tokens": {
            who: {"prompt": pair[0], "completion": pair[1]}
            for who, pair in (
                ("planner", planner.tokens),
                ("modules", module_engine.tokens if module_engine else (None, None)),
                ("judge", judge_tokens),
            )
        },
        "wall_time_s": wall_s,
        "episodes_per_s": n / wall_s if wall_s > 0 else None,
    }


def episode_rows(records: Sequence[EpisodeRecord]) -> list[dict[str, Any]]:
    """One row per episode: index, task, score (or score error), answer, turns, errors."""
    return [
        {
            "index": r.metadata.get("episode_index"),
            "task_id": r.task_id,
            "score": r.score,
            "score_error": r.score_error,
            "infra_error": r.infra_error.model_dump() if r.infra_error else None,
            "answer": r.answer,
            "ground_truth": r.ground_truth,
            "turns": r.num_turns,
            "terminated": r.terminated,
            "truncated": r.truncated,
            "errors": r.metadata.get("errors", {}),
        }
        for r in records
    ]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _sample_rows(samples: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Table rows of a ``--samples K`` run: mean@K and pass@k (every k up to 8, then powers of
    two and K)."""
    if not samples:
        return []
    K = samples["samples"]
    shown = [k for k in range(1, K + 1) if k <= 8 or k == K or (k & (k - 1)) == 0]
    rows = [(f"mean@{K} over {samples['tasks']} tasks", _fmt(samples[f"mean@{K}"]))]
    rows += [(f"pass@{k} (unbiased)", _fmt(samples["pass_at_k"][str(k)])) for k in shown]
    return rows


def print_report(report: Mapping[str, Any], console: Any | None = None) -> None:
    """Render a report as a rich table, followed by its notes."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    s, c = report["summary"], report["config"]
    data = Path(c["data"]).name if c["data"] else "generated tasks"
    protocol = f" | protocol {c['protocol']}" if c.get("protocol", "rules") != "rules" else ""
    title = f"{c['env']} | {data} | planner {c['planner']}{protocol}"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    ci = s["accuracy_ci95"]
    by_kind = ", ".join(f"{k} {v}" for k, v in s["errored_by_kind"].items())
    rows = [
        ("episodes (scored)", f"{s['episodes']} ({s['scored']})"),
        ("errored (no outcome)", f"{s['errored']}" + (f": {by_kind}" if by_kind else "")),
        (
            "accuracy over scored [95% Wilson]",
            f"{_fmt(s['accuracy'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "n/a",
        ),
        ("accuracy, errored counted wrong", _fmt(s["accuracy_errored_as_wrong"])),
        *_sample_rows(s.get("samples")),
        ("mean turns", _fmt(s["mean_turns"], 2)),
        ("terminated / truncated", f"{s['terminated']} / {s['truncated']}"),
        ("tools", ", ".join(report["tools"]) or "none"),
    ]
    if c.get("env_kwargs"):
        rows.append(("env kwargs", json.dumps(c["env_kwargs"], default=str)))
    rows += [(f"calls: {name}", str(count)) for name, count in s["tool_calls"].items()]
    rows += [(f"errors: {kind}", str(count)) for kind, count in s["errors"].items()]
    rows += [
        (f"tokens: {who} (prompt / completion)", f"{_fmt(t['prompt'])} / {_fmt(t['completion'])}")
        for who, t in s["tokens"].items()
    ]
    rows += [
        (
            "setup / run wall time (s)",
            f"{_fmt(report['setup_s'], 1)} / {_fmt(s['wall_time_s'], 1)}",
        ),
        ("episodes / s", _fmt(s["episodes_per_s"], 2)),
    ]
    for name, value in rows:
        alarm = name.startswith(("errors", "errored")) and value != "0"
        table.add_row(name, value, style="red" if alarm else None)
    console.print(table)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    if s.get("stopped"):
        console.print(f"[red]stopped:[/red] {s['stopped']}")
