"""Run every benchmark in benchmarks/, print one combined table, write JSON.

Each benchmark runs as its own process (``--quick`` in CI), writes its JSON under
``--results-dir``, and contributes its headline numbers and targets to the combined table. The
table's caption and the combined JSON name the machine each result was measured on (the
``machine`` its JSON recorded). ``--summarize-only`` runs nothing and rebuilds both from the
JSONs already saved (e.g. for the README).

    python -m benchmarks [--quick] [--only search_throughput,sandbox_latency] [--results-dir DIR]
    python -m benchmarks --summarize-only [--markdown table.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if __package__ in (
    None,
    "",
):  # run as a script (python benchmarks/run_all.py): make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info
from tools.log_excerpt import log_excerpt

ROOT = Path(__file__).resolve().parent
Row = tuple[str, str, str, str]  # metric, value, target, met


def _search(d: dict[str, Any]) -> list[Row]:
    best = {(r["backend"], r["mode"]): r["qps"] for r in d["rows"] if r["level"] == "tool"}
    rows = [
        (f"queries/s {b} {m} ({d['passages']:,} passages)", f"{q:,.0f}", "", "")
        for (b, m), q in best.items()
    ]
    rows.append(
        (
            "best batched queries/s",
            f"{d['best_tool_batched_qps']:,.0f}",
            f">= {d['target_batched_qps']:,.0f}",
            _ok(d["target_met"]),
        )
    )
    rows.append(("index build s", f"{d['build']['build_s']:.2f}", "", ""))
    return rows


def _sandbox(d: dict[str, Any]) -> list[Row]:
    rows = []
    # the target is on the strict pool's paced single caller (older files: every strict single
    # caller, back to back only)
    has_paced = any("paced" in r for r in d["rows"])
    for r in d["rows"]:
        targeted = "strict" in r["setup"] and r["callers"] == 1
        if has_paced:
            targeted = targeted and bool(r.get("paced"))
        target = f"<= {d['target_median_ms']:g}" if targeted else ""
        met = _ok(r["median_ms"] <= d["target_median_ms"]) if target else ""
        rows.append(
            (
                f"{r['setup']} x{r['callers']} median/p95 ms",
                f"{r['median_ms']:.1f} / {r['p95_ms']:.1f}",
                target,
                met,
            )
        )
    for mode, ratio in (d.get("ratios") or {}).items():
        # back to back carries the target too in files that judge it (older ones did not)
        judged = mode == "paced" or "back_to_back_target_met" in d
        rows.append(
            (
                f"fresh `python -c` / strict pool median ({mode.replace('_', ' ')})",
                f"{ratio['median_ratio']:.1f}x (p95 {ratio['p95_ratio']:.1f}x)",
                f">= {d['target_ratio']:g}x" if judged else "",
                _ok(ratio["median_ratio"] >= d["target_ratio"]) if judged else "",
            )
        )
    for level, cpu in (d.get("cpu_per_call") or {}).items():
        pool_ms = cpu["pool_tree_ms"] + cpu["caller_ms"]
        rows.append(
            (
                f"CPU per back-to-back call, fresh `python -c` / {level} pool (ms)",
                f"{cpu['fresh_over_pool']:.1f}x ({cpu['fresh_ms']:.1f} / {pool_ms:.1f})",
                "",
                "",
            )
        )
    for name, option in (d.get("huge_pages") or {}).items():
        cpu = option["cpu_per_call"]
        rows.append(
            (
                f"strict pool, workers' memory in {name}: back to back / paced median ms, CPU ms",
                f"{option['back_to_back']['median_ms']:.1f} / {option['paced']['median_ms']:.1f}, "
                f"{cpu['pool_tree_ms'] + cpu['caller_ms']:.1f}",
                "",
                "",
            )
        )
    return rows


def _vector(d: dict[str, Any]) -> list[Row]:
    rows = []
    targets = {"callable-50ms": 5.0, "hf-tiny": 3.0}
    for r in d["throughput"]:
        target = targets.get(r["engine"]) if r["N"] == 16 else None
        rows.append(
            (
                f"{r['engine']} N={r['N']} vector/serial episodes/s",
                f"{r['vector_over_serial']:.1f}x",
                f">= {target:g}x" if target else "",
                _ok(r["vector_over_serial"] >= target) if target else "",
            )
        )
    return rows


def _overhead(d: dict[str, Any]) -> list[Row]:
    """Per family: the env's share of an offline step; then the search step's largest stages."""
    target = d["target_frac"]
    rows: list[Row] = [
        (
            f"offline env overhead per step ({o['family']}, {o['clock']} clock)",
            f"{100 * o['overhead_frac']:.1f}% ({1000 * o['overhead_ms']:,.0f} µs)",
            f"<= {100 * target:g}%",
            _ok(o["overhead_frac"] <= target),
        )
        for o in d["offline_overhead"]
    ]
    b = d["search_breakdown"]
    top = ", ".join(
        f"{s['stage']} {100 * s['share']:.0f}%" for s in b["stages"][:3]
    )  # sorted largest first
    rows.append((f"search step overhead, largest stages ({b['clock']} clock)", top, "", ""))
    return rows


def _learning(d: dict[str, Any]) -> list[Row]:
    """Per method: mean +- std gain over seeds and mean success before -> after; then the target."""
    results = d["results"]
    rows: list[Row] = []
    for method, s in d["summary"].items():
        runs = [r for r in results if r["method"] == method]
        n = int(s["n"])
        span = (
            f" ({fmean(r['before'] for r in runs):.2f} -> {fmean(r['after'] for r in runs):.2f})"
            if runs
            else ""
        )
        rows.append(
            (
                f"{method} held-out gain ({n} seed{'' if n == 1 else 's'})",
                f"{s['mean_gain']:+.2f} ± {s['std_gain']:.2f}{span}",
                "",
                "",
            )
        )
    grpo = [r for r in results if r["method"] == "flow_grpo"]
    gain, minutes = d["target_gain"], d["target_minutes"]
    worst = (
        f"worst seed {min(r['gain'] for r in grpo):+.2f} "
        f"in {max(r['train_minutes'] for r in grpo):.1f} min"
        if grpo
        else "no flow_grpo run"
    )
    quick = " [quick run]" if d.get("quick") else ""
    rows.append(
        (
            f"target: flow_grpo +{100 * gain:.0f} points in {minutes:g} min (every seed){quick}",
            worst,
            f">= +{gain:.2f} in {minutes:g} min",
            _ok(bool(d["target_met"])),
        )
    )
    return rows


def _update(d: dict[str, Any]) -> list[Row]:
    """Per variant: update throughput and peak memory side by side; packed vs TRL speed."""
    batch = f"{d['queries']}x{d['group_size']}"
    rows: list[Row] = [
        (
            f"update {r['variant']} ({batch}): tokens/s | peak RSS growth",
            f"{r['tokens_per_s']:,.0f} | {r['peak_rss_growth_mb']:,.0f} MB",
            "",
            "",
        )
        for r in d["rows"]
    ]
    speed = {r["variant"]: r["tokens_per_s"] for r in d["rows"]}
    if speed.get("flow_grpo_packed") and speed.get("trl_grpo"):
        rows.append(
            (
                "flow_grpo_packed / trl_grpo tokens/s",
                f"{speed['flow_grpo_packed'] / speed['trl_grpo']:.1f}x",
                "",
                "",
            )
        )
    return rows


def _scorers(d: dict[str, Any]) -> list[Row]:
    """Per benchmark file: how often ours and the reference agree with the case labels."""
    if d.get("skipped"):
        return [("skipped", str(d["skipped"]), "", "")]
    rows: list[Row] = []
    for f in d["files"]:
        ref = f["reference_vs_label"]
        rows.append(
            (
                f"{f['file']} ({f['cases']:,} cases): ours / {f['reference']} agree with labels",
                f"{100 * f['ours_vs_label']:.1f}% / "
                + ("n/a" if ref is None else f"{100 * ref:.1f}%"),
                "",
                "",
            )
        )
    behind = [
        f["file"]
        for f in d["files"]
        if f["reference_vs_label"] is not None and f["ours_vs_label"] < f["reference_vs_label"]
    ]
    rows.append(
        (
            f"all files ({d['cases']:,} cases): ours agrees with labels; at least the reference's",
            f"{100 * d['ours_total_vs_label']:.1f}%"
            + (f" (behind on {', '.join(behind)})" if behind else ""),
            ">= reference, every file",
            _ok(not behind),
        )
    )
    return rows


def _reliability(d: dict[str, Any]) -> list[Row]:
    """Fault modes against evaluate (defaults: exit; played through: errored/scored), then the
    retrieval server's load rows."""
    rows: list[Row] = []
    by_mode: dict[str, dict[str, dict[str, Any]]] = {}
    for r in d["faults"]:
        by_mode.setdefault(r["mode"], {})[r["run"]] = r
    for mode, runs in by_mode.items():
        default, through = runs["defaults"], runs["played through"]
        failing = mode not in ("ok", "flaky")
        rows.append(
            (
                f"evaluate, planner server '{mode}': exit | errored/scored played through",
                f"{default['exit']} | {through['errored']}/{through['scored']} of "
                f"{through['episodes']} ({through['wall_s']:.1f} s)",
                "exit 3 | all errored" if failing else "exit 0 | all scored",
                _ok(
                    default["exit"] == 3 and through["errored"] == through["episodes"]
                    if failing
                    else default["exit"] == 0 and through["scored"] == through["episodes"]
                ),
            )
        )
    for r in d["retrieval"]:
        ours = r["backlog"] != 5
        rows.append(
            (
                f"retrieval server {r['clients']}x{r['requests'] // r['clients']} "
                f"({r['connections']}, backlog {r['backlog']}): failed | p50/p99 ms",
                f"{r['failed']} | {r['p50_ms']:.0f} / {r['p99_ms']:.0f}",
                "0 failed" if ours else "",
                _ok(r["failed"] == 0) if ours else "",
            )
        )
    return rows


def _async(d: dict[str, Any]) -> list[Row]:
    """Per setting: k=1 / sync steps per minute (target where rollouts are latency-bound); then
    the learning check."""
    rows: list[Row] = []
    target = d["target_speedup"]
    for s in d["speed_summary"]:
        bound = s["latency_bound"]
        # files from before the remote tool setting have the engine's wait only
        what, share = (
            ("engine + tool wait", s["wait_share"])
            if "wait_share" in s
            else ("engine wait", s["engine_wait_share"])
        )
        rows.append(
            (
                f"{s['setting']} k=1/sync steps per minute "
                f"({what} {100 * share:.0f}% of a sync step)",
                f"{s['speedup']:.2f}x",
                f">= {target:g}x" if bound else "",
                _ok(s["speedup"] >= target) if bound else "",
            )
        )
    learn = d["learning_summary"]
    if learn is None:  # run with --learn-steps 0: the learning benchmark's flow_grpo_k1 compares
        return rows
    rows.append(
        (
            f"held-out gain after {d['settings']['learn_steps']} steps, sync vs k=1",
            f"{learn['sync_gain']:+.2f} vs {learn['k1_gain']:+.2f}",
            "equal within noise",
            _ok(learn["equal_within_noise"]),
        )
    )
    return rows


def _ok(flag: bool) -> str:
    return "yes" if flag else "NO"


# name -> (script, summarizer, extra args for both quick and full runs)
BENCHMARKS: dict[str, tuple[str, Callable[[dict[str, Any]], list[Row]], list[str]]] = {
    "search_throughput": ("search_throughput.py", _search, []),
    "sandbox_latency": ("sandbox_latency.py", _sandbox, []),
    "vector_throughput": ("vector_throughput.py", _vector, []),
    # CPU time: the ratio stays readable on a busy shared machine (search also has a wall row)
    "env_overhead": ("env_overhead.py", _overhead, ["--clock", "cpu"]),
    "learning": ("learning.py", _learning, ["--jobs", "2"]),  # independent runs, one core each
    "update_throughput": ("update_throughput.py", _update, []),
    "async_rollout": ("async_rollout.py", _async, []),
    "scorers": ("scorers.py", _scorers, []),
    "reliability": ("reliability.py", _reliability, []),
}


def summarize(name: str, data: Any) -> list[Row]:
    """The benchmark's table rows; a JSON without the expected shape (half-written, older format)
    gives one ``malformed`` row saying what is wrong instead of a traceback."""
    return _summarize(name, data)[0]


def _summarize(name: str, data: Any) -> tuple[list[Row], bool]:
    """(rows, whether the data was malformed)."""
    try:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return BENCHMARKS[name][1](data), False
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as exc:
        detail = (
            f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        )
        return [(f"malformed {name}.json", detail[:200], "", "NO")], True


def read_result(name: str, path: Path) -> dict[str, Any]:
    """Summarize a benchmark's saved JSON: status, rows and the machine it was measured on."""
    if not path.is_file():
        return {"name": name, "status": "no results", "rows": [(f"({path} not found)", "", "", "")]}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return {
            "name": name,
            "status": "malformed",
            "json": str(path),
            "rows": [(f"malformed {name}.json", f"not JSON: {exc}"[:200], "", "NO")],
        }
    rows, malformed = _summarize(name, data)
    machine = (
        data.get("machine")
        if isinstance(data, dict) and isinstance(data.get("machine"), dict)
        else None
    )
    return {
        "name": name,
        "status": "malformed" if malformed else "ok",
        "json": str(path),
        "rows": rows,
        "machine": machine,
    }


def run_one(name: str, quick: bool, results_dir: Path, timeout_s: float) -> dict[str, Any]:
    script, _, extra = BENCHMARKS[name]
    path = ROOT / script
    out = results_dir / f"{name}.json"
    if not path.exists():
        return {"name": name, "status": "missing", "rows": [("(script not present)", "", "", "")]}
    cmd = [sys.executable, str(path), "--out", str(out), *extra, *(["--quick"] if quick else [])]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT.parent, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"name": name, "status": f"timeout after {timeout_s:g} s", "rows": []}
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        excerpt = log_excerpt(proc.stderr or proc.stdout, max_chars=300, max_cause_lines=2)
        return {
            "name": name,
            "status": f"failed ({proc.returncode})",
            "seconds": elapsed,
            "rows": [("error", " | ".join(excerpt.splitlines()), "", "NO")],
        }
    return {**read_result(name, out), "seconds": elapsed}


def describe_machine(machine: dict[str, Any]) -> str:
    """One line: CPU count and model, OS, Python (whatever of these the dict has)."""
    parts = []
    if machine.get("cpus") is not None:
        model = f" ({machine['cpu_model']})" if machine.get("cpu_model") else ""
        parts.append(f"{machine['cpus']} CPUs{model}")
    parts += [str(machine[k]) for k in ("platform",) if machine.get(k)]
    parts += [
        f"{label} {machine[k]}"
        for k, label in (("python", "Python"), ("torch", "torch"))
        if machine.get(k)
    ]
    return ", ".join(parts) or "unknown machine"


def machine_caption(host: dict[str, Any], results: Sequence[dict[str, Any]]) -> str:
    """Where the numbers were measured, from each result's ``machine`` (what its JSON recorded)."""
    where: dict[str, list[str]] = {}
    for res in results:
        machine = res.get("machine")
        # Load, time and per-benchmark extras differ run to run; the hardware and software do not.
        key = (
            describe_machine(
                {k: machine.get(k) for k in ("cpus", "cpu_model", "platform", "python")}
            )
            if machine
            else "machine not recorded"
        )
        where.setdefault(key, []).append(res["name"])
    if len(where) <= 1:
        return f"measured on {next(iter(where), describe_machine(host))}"
    return "measured on: " + "; ".join(
        f"{', '.join(names)}: {desc}" for desc, names in where.items()
    )


def render_table(results: Sequence[dict[str, Any]], host: dict[str, Any], mode: str) -> Table:
    """The combined table; the caption names the machine(s) the numbers come from."""
    table = Table(
        title=f"agentflow-gym benchmarks ({mode})",
        caption=escape(machine_caption(host, results)),
        caption_justify="left",
    )
    for col in ("benchmark", "metric", "value", "target", "met"):
        table.add_column(col)
    for res in results:
        rows = res["rows"] or [("", "", "", "")]
        for i, (metric, value, target, met) in enumerate(rows):
            label = f"{res['name']} [{res['status']}]" if i == 0 else ""
            # Cells are data, not markup: "[ok]" or an error message must show as written.
            table.add_row(*(escape(str(cell)) for cell in (label, metric, value, target, met)))
    return table


def render_markdown(results: Sequence[dict[str, Any]], host: dict[str, Any]) -> str:
    """The combined table as Markdown (what the README shows), with the machine caption under it."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| benchmark | measure | value | target | met |", "| --- | --- | --- | --- | --- |"]
    for res in results:
        for i, (metric, value, target, met) in enumerate(res["rows"] or [("", "", "", "")]):
            label = res["name"] if res["status"] == "ok" else f"{res['name']} ({res['status']})"
            lines.append(
                "| "
                + " | ".join(cell(c) for c in (label if i == 0 else "", metric, value, target, met))
                + " |"
            )
    return "\n".join(lines) + f"\n\n{machine_caption(host, results)}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short runs (what CI and the README table use)"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS)
    )
    parser.add_argument("--results-dir", type=Path, default=ROOT / "results")
    parser.add_argument(
        "--out", type=Path, default=None, help="combined JSON (default: RESULTS_DIR/all.json)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5400.0,
        help="seconds per benchmark (the full learning run takes ~60 min)",
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, help="also write the table as Markdown here"
    )
    parser.add_argument(
        "--summarize-only",
        action="store_true",
        help="run nothing: rebuild the table and combined JSON from the JSONs in RESULTS_DIR",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    console = Console()
    results = []
    for name in names:
        if args.summarize_only:
            results.append(read_result(name, args.results_dir / f"{name}.json"))
            continue
        console.log(f"running {name} ...")
        results.append(run_one(name, args.quick, args.results_dir, args.timeout))
    host = machine_info()
    for (
        res
    ) in results:  # measured just now, here: a JSON without machine info still ran on this host
        if res["status"] == "ok" and not args.summarize_only and not res.get("machine"):
            res["machine"] = host
    mode = "saved results" if args.summarize_only else "quick" if args.quick else "full"
    console.print(render_table(results, host, mode))
    combined = args.out or args.results_dir / "all.json"
    combined.write_text(
        json.dumps(
            {
                "quick": args.quick,
                "mode": mode,
                "machine": host,
                "measured_on": machine_caption(host, results),
                "benchmarks": results,
            },
            indent=2,
        )
    )
    console.print(f"wrote {combined}")
    if args.markdown is not None:
        args.markdown.write_text(render_markdown(results, host))
        console.print(f"wrote {args.markdown}")
    return 0 if all(r["status"] in ("ok", "missing") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
