"""A real pretrained instruct model in every role: SmolLM2-135M-Instruct on this CPU.

Every number comes from ``python -m agentflow_env.evaluate`` (its in-process ``main``, the CLI a
user runs), with the model fetched by ``python -m agentflow_env.llm fetch smollm2-135m-instruct``.

(a) **Modules.** The scripted oracle plans (so the planner is never the cause); the executor,
    verifier and generator are LLM modules on SmolLM2, on shuffled generated search episodes,
    with the modules' outputs constrained (the default where the engine supports constraints)
    and unconstrained (``constrained_modules=false``, the paper's setting), side by side. Each
    row: accuracy, module format errors (executor + verifier + generator errors), episodes/s and
    the modules' completion tokens.
(b) **Planner.** SmolLM2 as the planner with chat input, free and constrained
    (``--planner-constrained``), next to ``scripted:random-tool`` and ``scripted:oracle`` on the
    same tasks: the four generated envs and the authors' Bamboogle and Game of 24 files
    (``../shared/benchmarks/agentflow``; rows are left out, with the reason, when it is absent).
    Each row: accuracy, unparseable turns (``parse`` errors / turns played), errored episodes.

    python -m benchmarks.real_models [--quick] [--out benchmarks/results/real_models.json]

``--parts a`` or ``--parts b`` measures one part and keeps the other part's rows from the
finished report already at ``--out`` (under ``carried``, with the machine and command that
measured them); ``--planners`` and ``--tasks`` rerun some of (b)'s cells and keep the others.

Targets (issue 13): (a) with constraints: 0 module format errors, accuracy >= 0.5, >= 0.13
episodes/s; (b) unparseable turns <= 20% free and 0% constrained.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info

MODEL = "smollm2-135m-instruct"
ENGINE = f"hf:{MODEL}"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "agentflow"
_NAME = re.compile(r"\b[A-Z][\w'-]*")
MODULE_ERRORS = ("executor", "verifier", "generator")
TARGETS = {"module_accuracy": 0.5, "episodes_per_s": 0.13, "free_unparseable": 0.2}
ENV_IDS = (
    "AgentFlow-Search-v0",
    "AgentFlow-Math-v0",
    "AgentFlow-Science-v0",
    "AgentFlow-Agentic-v0",
)
FILES = ("bamboogle.json", "gameof24.json")
TOOL_TIMEOUT_S = 900.0


def evaluate(argv: list[str], tmp: Path) -> dict[str, Any]:
    """One ``evaluate`` run; its summary plus the exit status, wall seconds and the episode
    records (``records``)."""
    from agentflow_env.evaluate import main

    out, trajectories = tmp / "report.json", tmp / "trajectories.jsonl"
    out.unlink(missing_ok=True)
    trajectories.unlink(missing_ok=True)
    argv = [*argv, "--trajectories", str(trajectories)]
    start = time.perf_counter()
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()) as err,
    ):
        code = main([*argv, "--out", str(out)])
    wall = time.perf_counter() - start
    if not out.exists():
        raise RuntimeError(f"evaluate {' '.join(argv)} exited {code}: {err.getvalue()[-2000:]}")
    summary = json.loads(out.read_text())["summary"]
    records = [json.loads(line) for line in trajectories.read_text().splitlines() if line]
    return {"exit": code, "wall_s": wall, "records": records, **summary}


def module_analysis(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Where each module lost the answer (the oracle planner's plan is right by construction).

    executor: its tool input leaves out a name (a capitalized word) of the command the planner
    wrote (a rephrasing that keeps the names, "Gaistaex Vrak married to" -> "who is the spouse
    of Gaistaex Vrak?", is not counted);
    verifier: it stopped before the gold answer appeared in any tool result, or continued after;
    generator: the gold answer was in a tool result but the final answer was scored wrong.
    """
    from agentflow_env.format.action import parse_action
    from agentflow_env.rewards.text import normalize_answer

    calls = dropped = premature = reached = generator_wrong = 0
    for r in records:
        gold = normalize_answer(r["ground_truth"])
        seen = False
        for t in r["turns"]:
            if t.get("tool_name"):
                calls += 1
                wanted = parse_action(t["action"], [t["tool_name"]]).command or ""
                written = t.get("tool_input") or ""
                dropped += any(name not in written for name in _NAME.findall(wanted))
            seen = seen or (bool(gold) and gold in normalize_answer(t.get("tool_result") or ""))
        last = r["turns"][-1] if r["turns"] else {}
        premature += last.get("verifier") == "STOP" and not seen
        reached += seen
        generator_wrong += seen and not r.get("score")
    n = len(records)
    return {
        "episodes": n,
        "tool_calls": calls,
        "executor_dropped_a_name_of_the_command": dropped,
        "verifier_stopped_before_the_answer_was_found": premature,
        "gold_answer_in_a_tool_result": reached,
        "generator_wrong_with_the_answer_in_hand": generator_wrong,
    }


def module_rows(
    episodes: int,
    free_episodes: int,
    tmp: Path,
    concurrency: int,
    saved: Callable[[], None],
    rows: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """(a): oracle planner, LLM executor/verifier/generator; constrained vs not (the free
    modules write up to their long budgets, so they may get fewer episodes). Each row is
    appended to ``rows``, then ``saved`` is called (the report so far is written)."""
    for constrained, n in ((True, episodes), (False, free_episodes)):
        if n < 1:
            continue
        argv = ["--env", "AgentFlow-Search-v0", "--planner", "scripted:oracle"]
        argv += ["--concurrency", str(concurrency)]
        argv += ["--executor", "llm", "--verifier", "llm", "--generator", "llm"]
        argv += ["--module-engine", ENGINE, "--episodes", str(n), "--shuffle"]
        argv += ["--env-kwargs", json.dumps({"constrained_modules": constrained})]
        s = evaluate(argv, tmp)
        rows.append(
            {
                "constrained_modules": constrained,
                "episodes": s["episodes"],
                "accuracy": s["accuracy"],
                "module_format_errors": sum(s["errors"][k] for k in MODULE_ERRORS),
                "mean_turns": s["mean_turns"],
                "errors": s["errors"],
                "errored": s["errored"],
                "episodes_per_s": s["episodes_per_s"],
                "module_completion_tokens": s["tokens"]["modules"]["completion"],
                "wall_s": s["wall_s"],
                "analysis": module_analysis(s["records"]),
            }
        )
        saved()
    return rows


PLANNERS: dict[str, list[str]] = {
    "scripted:random-tool": ["--planner", "scripted:random-tool"],
    "scripted:oracle": ["--planner", "scripted:oracle"],
    "SmolLM2 free": ["--planner", ENGINE, "--planner-input", "chat"],
    "SmolLM2 constrained": [
        "--planner",
        ENGINE,
        "--planner-input",
        "chat",
        "--planner-constrained",
    ],
}


def _tasks() -> list[tuple[str, list[str]]]:
    tasks = [(env_id, ["--env", env_id]) for env_id in ENV_IDS]
    # The authors' files come without a corpus: Base_Generator_Tool (on the same model) is the
    # tool there, as the paper's generalist tool
    # ...with a tool timeout for a 135M model on 2 cores: one 1,024-token reply takes ~100 s,
    # and concurrent calls wait for the engine in turn (the 60 s default timed every call out)
    slow_tool = ["--env-kwargs", json.dumps({"tool_timeout_s": TOOL_TIMEOUT_S})]
    tasks += [
        (name, ["--data", str(SHARED / name), "--module-engine", ENGINE, *slow_tool])
        for name in FILES
        if (SHARED / name).is_file()
    ]
    return tasks


def planner_rows(
    episodes: int,
    max_turns: int,
    tmp: Path,
    concurrency: int,
    saved: Callable[[], None],
    rows: list[dict[str, Any]],
    planners: Sequence[str] = tuple(PLANNERS),
    task_sets: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """(b): each task set (of ``task_sets``, default all) x each of ``planners``, the same
    tasks (first ``episodes`` after a seeded shuffle) and the same turn limit; each row is
    appended to ``rows``, then ``saved`` is called."""
    for task_name, task_argv in _tasks():
        if task_sets is not None and task_name not in task_sets:
            continue
        for planner in planners:
            planner_argv = PLANNERS[planner]
            argv = [*task_argv, *planner_argv, "--episodes", str(episodes), "--shuffle"]
            argv += ["--concurrency", str(concurrency)]
            argv += ["--max-turns", str(max_turns), "--max-tokens", "128"]
            s = evaluate(argv, tmp)
            turns = round((s["mean_turns"] or 0) * s["episodes"])
            rows.append(
                {
                    "tasks": task_name,
                    "planner": planner,
                    "episodes": s["episodes"],
                    "accuracy": s["accuracy"],
                    "turns": turns,
                    "unparseable_turns": s["errors"]["parse"],
                    "unparseable_fraction": s["errors"]["parse"] / turns if turns else None,
                    "errored": s["errored"],
                    "errored_by_kind": s.get("errored_by_kind", {}),
                    "wall_s": s["wall_s"],
                }
            )
            saved()
    return rows


def targets(modules: list[dict[str, Any]], planners: list[dict[str, Any]]) -> dict[str, Any]:
    on = next((r for r in modules if r["constrained_modules"]), None)
    if on is None:  # part (a) not run
        on = {"module_format_errors": None, "accuracy": None, "episodes_per_s": None}
    free = [r for r in planners if r["planner"] == "SmolLM2 free"]
    held = [r for r in planners if r["planner"] == "SmolLM2 constrained"]

    def fraction(rows: list[dict[str, Any]]) -> float | None:
        turns = sum(r["turns"] for r in rows)
        return sum(r["unparseable_turns"] for r in rows) / turns if turns else None

    free_f, held_f = fraction(free), fraction(held)
    return {
        "module_format_errors": on["module_format_errors"],
        "module_accuracy": on["accuracy"],
        "episodes_per_s": on["episodes_per_s"],
        "free_unparseable": free_f,
        "constrained_unparseable": held_f,
        "met": {
            "module_format_errors_0": on["module_format_errors"] == 0 if modules else None,
            "module_accuracy": (on["accuracy"] or 0) >= TARGETS["module_accuracy"],
            "episodes_per_s": (on["episodes_per_s"] or 0) >= TARGETS["episodes_per_s"],
            "free_unparseable": free_f is not None and free_f <= TARGETS["free_unparseable"],
            "constrained_unparseable_0": held_f == 0,
        },
    }


def _fmt(value: Any, digits: int = 2) -> str:
    return (
        "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    )


def print_report(report: dict[str, Any], console: Console) -> None:
    if "skipped" in report:
        console.print(f"[yellow]skipped:[/] {report['skipped']}")
        return
    t = Table(title=f"(a) scripted:oracle planner + {MODEL} executor/verifier/generator")
    cols = (
        "modules",
        "episodes",
        "accuracy",
        "format errors",
        "mean turns",
        "episodes/s",
        "tokens",
    )
    for col in cols:
        t.add_column(col)
    for r in report["modules"]:
        t.add_row(
            "constrained" if r["constrained_modules"] else "free (paper)",
            str(r["episodes"]),
            _fmt(r["accuracy"]),
            str(r["module_format_errors"]),
            _fmt(r["mean_turns"]),
            _fmt(r["episodes_per_s"], 3),
            _fmt(r["module_completion_tokens"]),
        )
    console.print(t)
    for r in report["modules"]:
        label = "constrained" if r["constrained_modules"] else "free"
        console.print(f"(a) {label}, where the answer was lost: {r['analysis']}")
    t = Table(title=f"(b) {MODEL} as the planner (chat input) next to scripted planners")
    for col in ("tasks", "planner", "episodes", "accuracy", "unparseable turns", "errored"):
        t.add_column(col)
    for r in report["planners"]:
        frac = r["unparseable_fraction"]
        t.add_row(
            r["tasks"],
            r["planner"],
            str(r["episodes"]),
            _fmt(r["accuracy"]),
            f"{r['unparseable_turns']}/{r['turns']}"
            + (f" ({frac:.0%})" if frac is not None else ""),
            str(r["errored"]),
        )
    console.print(t)
    console.print(f"targets: {report['targets']}")


def run(
    quick: bool,
    module_episodes: int = 20,
    planner_episodes: int = 6,
    parts: str = "ab",
    free_module_episodes: int | None = None,
    max_turns: int = 4,
    concurrency: int = 8,
    out: Path | None = None,
    planners: Sequence[str] = tuple(PLANNERS),
    task_sets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Both parts; with ``out``, the report so far is written there after every row (a run
    cut short keeps what it measured, marked ``partial``)."""
    from agentflow_env.llm.models import fetched_path

    if fetched_path(MODEL) is None:
        return {
            "quick": quick,
            "machine": machine_info(),
            "skipped": f"{MODEL} not fetched: python -m agentflow_env.llm fetch {MODEL}",
        }
    report: dict[str, Any] = {
        "quick": quick,
        "machine": machine_info(model=MODEL),
        "parts": parts,
        "planner_columns": list(planners),
        "task_sets": None if task_sets is None else list(task_sets),
        "concurrency": concurrency,
        "modules": [],
        "planners": [],
    }

    def saved() -> None:
        if out is not None:
            report["targets"] = targets(report["modules"], report["planners"])
            _write(out, {**report, "partial": True})

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        free = module_episodes if free_module_episodes is None else free_module_episodes
        if "a" in parts:
            a = (2, 1) if quick else (module_episodes, free)
            module_rows(*a, tmp, concurrency, saved, report["modules"])
        if "b" in parts:
            b = (1, 2) if quick else (planner_episodes, max_turns)
            planner_rows(*b, tmp, concurrency, saved, report["planners"], planners, task_sets)
    report["targets"] = targets(report["modules"], report["planners"])
    return report


_PART_ROWS = {"a": "modules", "b": "planners"}


def finished_report(path: Path) -> dict[str, Any] | None:
    """The finished report at ``path`` (``None``: absent, unreadable, partial or skipped)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("partial") or "skipped" in old:
        return None
    return old


def carry_other_part(report: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Keep the rows of a part this run left out (``--parts a`` or ``b``) from ``old``, the
    finished report that was at ``--out`` before the run (:func:`finished_report`; read first,
    as the run writes its partial report there), under that report's machine, date and command
    (``carried``), so the two parts can be measured in separate runs into one file; likewise
    (b)'s rows of the cells a ``--planners`` or ``--tasks`` run left out."""
    if "skipped" in report or old is None:
        return
    columns = set(report.get("planner_columns", PLANNERS))
    task_sets = report.get("task_sets")

    def ran(row: dict[str, Any]) -> bool:
        return row["planner"] in columns and (task_sets is None or row["tasks"] in task_sets)

    kept = [r for r in old.get("planners", []) if not ran(r)]
    if "b" in report["parts"] and kept:  # --planners / --tasks: the other cells' rows stay
        report["planners"] = _task_order([*kept, *report["planners"]])
        report.setdefault("carried", {})["planner_cells"] = {
            "cells": [[r["tasks"], r["planner"]] for r in kept],
            "machine": old.get("machine"),
            "argv": old.get("argv"),
            "earlier": old.get("carried"),  # what that report had itself carried
        }
    for part, key in _PART_ROWS.items():
        if part in report["parts"] or not old.get(key):
            continue
        report[key] = old[key]
        report.setdefault("carried", {})[key] = {
            "machine": old.get("machine"),
            "argv": old.get("argv"),
            "concurrency": old.get("concurrency"),
            "earlier": old.get("carried"),
        }
    report["targets"] = targets(report["modules"], report["planners"])


def _task_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by task set, then planner, in the order the benchmark runs them."""
    tasks = [name for name, _ in _tasks()]
    names = list(PLANNERS)

    def key(row: dict[str, Any]) -> tuple[int, int]:
        task = tasks.index(row["tasks"]) if row["tasks"] in tasks else len(tasks)
        return task, names.index(row["planner"]) if row["planner"] in names else len(names)

    return sorted(rows, key=key)


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 module episodes, 1 planner episode per cell"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/real_models.json"),
        help="where to write the JSON report",
    )
    parser.add_argument("--module-episodes", type=int, default=20, help="(a)'s episodes per row")
    parser.add_argument(
        "--planner-episodes", type=int, default=6, help="(b)'s episodes per task set and planner"
    )
    parser.add_argument(
        "--free-module-episodes", type=int, help="(a)'s unconstrained row (default: the same)"
    )
    parser.add_argument("--max-turns", type=int, default=4, help="(b)'s turn limit")
    parser.add_argument("--parts", default="ab", help="which parts to run: a, b or ab")
    parser.add_argument(
        "--tasks",
        help="(b)'s task sets, comma-separated (default all); rows of the others stay from --out",
    )
    parser.add_argument(
        "--planners",
        default=",".join(PLANNERS),
        help="(b)'s planner columns, comma-separated; rows of the others stay from --out",
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="episodes stepping together (one batch)"
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    planners = [p.strip() for p in args.planners.split(",") if p.strip()]
    task_sets = None if args.tasks is None else [t.strip() for t in args.tasks.split(",")]
    known_tasks = [*ENV_IDS, *FILES]
    if task_sets is not None and (not task_sets or set(task_sets) - set(known_tasks)):
        parser.error(f"--tasks: known task sets are {', '.join(known_tasks)}")
    unknown = sorted(set(planners) - set(PLANNERS))
    if unknown or not planners:
        parser.error(f"--planners: unknown {unknown or 'none given'}; known: {', '.join(PLANNERS)}")
    previous = finished_report(args.out)  # before the run writes its partial report there
    report = run(
        args.quick,
        args.module_episodes,
        args.planner_episodes,
        args.parts,
        args.free_module_episodes,
        args.max_turns,
        args.concurrency,
        args.out,
        planners,
        task_sets,
    )
    report["argv"] = sys.argv[1:] if argv is None else list(argv)
    carry_other_part(report, previous)
    print_report(report, Console(width=140))
    _write(args.out, report)
    Console().print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
