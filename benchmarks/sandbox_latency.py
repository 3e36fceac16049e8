"""Per-call latency of the Python sandbox, side by side with the alternatives.

Runs the same snippet, ``print(sum(range(1000)))``, through:
  (a) a fresh ``python -c`` subprocess per call (what a naive isolated runner costs),
  (b) PythonCoderTool's worker pool at each isolation level available here,
  (c) the same pools with 8 concurrent callers (latency as each caller sees it, and throughput),
plus in-process ``exec`` as a no-isolation reference. Prints a table and writes JSON.

One caller is measured two ways, both for (a) and (b): back to back (the next call starts as soon
as the last returns) and paced (``--pace-ms`` of idle time before each call, not timed). Between
two calls a worker forks and sets up the child for its next call and frees the last one's memory
(~3 ms on the machine measured); paced calls find that done, as a planner's calls do (a
model generates between them), while back-to-back calls on few cores compete with it. (a) runs
in blocks interleaved with the strict pool's calls, so that both meet the same load.

    python benchmarks/sandbox_latency.py            # full run
    python benchmarks/sandbox_latency.py --quick    # a few seconds

Targets: issue 3, median <= 8 ms with namespace isolation (back to back); issue 17, the strict
pool's paced median at least 10x faster than a fresh ``python -c`` in the same run, taking the
fresh interpreter at the faster of its two modes, with p95 and 8 concurrent callers reported
(``target_met``), and the same ratio with both back to back (``back_to_back_target_met``).
``target_median_ms`` is that tenth of the fresh median; ``huge_pages`` compares the strict pool
with and without its workers' memory in huge pages, side by side; ``breakdown`` says where a
paced call's time goes, from the worker's own clock, ``breakdown_back_to_back`` the same for
calls back to back (where the worker's work between calls competes with them for the cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

if __package__ in (
    None,
    "",
):  # run as a script (python benchmarks/x.py): this checkout's packages, not an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import machine_info
from tools.python_coder import PythonCoderTool
from tools.sandbox.local import IsolationRequest

SNIPPET = "print(sum(range(1000)))"
EXPECTED = "499500\n"
TARGET_MS = 8.0
TARGET_RATIO = 10.0
# the worker's own timings of one call (see tools/sandbox/worker.py), in call order
ON_PATH = ("handoff", "run", "result")
OFF_PATH = ("previous_cleanup", "previous_fork")


def _stats(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return {
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p95_ms": p95,
        "mean_ms": statistics.fmean(ms),
        "min_ms": ms[0],
        "max_ms": ms[-1],
    }


def _time_calls(call: Callable[[], str], n: int, warmup: int, pace_s: float) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(n):
        if pace_s:
            time.sleep(pace_s)
        start = time.perf_counter()
        out = call()
        samples.append(time.perf_counter() - start)
        if out != EXPECTED:
            raise RuntimeError(f"wrong output {out!r}")
    return samples


def _fresh_call() -> str:
    return subprocess.run(
        [sys.executable, "-c", SNIPPET],
        capture_output=True,
        text=True,
        env={},
        timeout=30,
        check=True,
    ).stdout


def bench_side_by_side(
    tool: PythonCoderTool, n: int, n_fresh: int, pace_s: float, with_fresh: bool
) -> tuple[list[float], list[float]]:
    """One caller's latencies through the pool and, interleaved in blocks of 5, through a fresh
    ``python -c``: on a shared machine the load drifts, and both sides should meet the same."""
    rounds = max(1, n_fresh // 5) if with_fresh else 1
    pool: list[float] = []
    fresh: list[float] = []
    _time_calls(lambda: tool.run(SNIPPET).stdout, 0, warmup=10, pace_s=0.0)
    if with_fresh:
        _time_calls(_fresh_call, 0, warmup=2, pace_s=0.0)
    for i in range(rounds):
        if with_fresh:
            fresh += _time_calls(_fresh_call, n_fresh // rounds, warmup=0, pace_s=pace_s)
        share = n // rounds + (1 if i < n % rounds else 0)
        pool += _time_calls(lambda: tool.run(SNIPPET).stdout, share, warmup=0, pace_s=pace_s)
    return pool, fresh


def bench_exec(n: int) -> list[float]:
    import io

    def call() -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(SNIPPET, "<bench>", "exec"), {})  # noqa: S102 - reference only
        return buf.getvalue()

    return _time_calls(call, n, warmup=5, pace_s=0.0)


def bench_concurrent(
    tool: PythonCoderTool, callers: int, per_caller: int
) -> tuple[list[float], float]:
    """Per-call latencies seen by ``callers`` threads, and calls per second overall."""
    samples: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        local = []
        for _ in range(per_caller):
            start = time.perf_counter()
            out = tool.run(SNIPPET).stdout
            local.append(time.perf_counter() - start)
            if out != EXPECTED:
                errors.append(out)
        with lock:
            samples.extend(local)

    threads = [threading.Thread(target=worker) for _ in range(callers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"wrong outputs under concurrency: {errors[:3]}")
    return samples, len(samples) / wall


def breakdown(tool: PythonCoderTool, n: int, pace_s: float) -> dict[str, Any]:
    """Where a paced call's time goes, from the worker's own clock (median ms per part).

    ``host_and_pipes`` is the caller's total minus the worker's part: the request and result
    crossing the pipes as JSON, both sides waking up, validation into an ExecutionResult.
    """
    backend = tool._backend  # the local backend's pool returns the worker's raw message
    payload = backend.limits.model_dump()
    payload["cpu_s"] = backend.limits.effective_cpu_s
    totals, parts = [], []
    for i in range(n + 10):
        time.sleep(pace_s)
        start = time.perf_counter()
        raw = backend.pool.run(SNIPPET, payload)
        total = time.perf_counter() - start
        if raw.get("stdout") != EXPECTED or "timings" not in raw:
            raise RuntimeError(f"unexpected result {raw!r}")
        if i >= 10:
            totals.append(total)
            parts.append(raw["timings"])
    ms = {key: 1000 * statistics.median(p[key] for p in parts) for key in ON_PATH + OFF_PATH}
    worker = [sum(p[key] for key in ON_PATH) for p in parts]
    ms["host_and_pipes"] = 1000 * statistics.median(
        t - w for t, w in zip(totals, worker, strict=True)
    )
    ms["total"] = 1000 * statistics.median(totals)
    # calls whose child had finished setting itself up before the call came (the premise)
    set_up = statistics.fmean(p["child_was_set_up"] for p in parts)
    return {"n": n, "median_ms": ms, "child_set_up_share": set_up}


def _tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds (user + system) of the processes ``roots`` and all their descendants, with
    the children they have reaped (the worker reaps each call's child and memory holder)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        # fields 4 (ppid) and 14-17 (utime, stime, cutime, cstime) of proc(5), 0-based from 3
        stats[int(name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, (ppid, _) in stats.items() if ppid in frontier} - found
        found |= frontier
    return sum(stats[pid][1] for pid in found if pid in stats) / tick


def cpu_per_call(tool: PythonCoderTool, n: int, n_fresh: int) -> dict[str, float]:
    """CPU time (all cores, ms) one call costs, back to back: the pool's whole process tree
    (worker, the call's child and memory holder, the next child's fork and set-up) and the
    caller, against a fresh ``python -c``. When the cores are busy, latency follows CPU time:
    fresh / pool is then about the best ratio back-to-back calls can reach."""
    roots = tool._backend.worker_pids()
    _time_calls(lambda: tool.run(SNIPPET).stdout, 0, warmup=10, pace_s=0.0)
    tree, own = _tree_cpu_s(roots), time.process_time()
    _time_calls(lambda: tool.run(SNIPPET).stdout, n, warmup=0, pace_s=0.0)
    pool_ms = 1000 * (_tree_cpu_s(roots) - tree) / n
    caller_ms = 1000 * (time.process_time() - own) / n
    if not n_fresh:
        return {"n": n, "pool_tree_ms": pool_ms, "caller_ms": caller_ms}
    before = os.times()
    _time_calls(_fresh_call, n_fresh, warmup=0, pace_s=0.0)
    after = os.times()
    fresh_ms = 1000 * (after.children_user + after.children_system) / n_fresh
    fresh_ms -= 1000 * (before.children_user + before.children_system) / n_fresh
    return {
        "n": n,
        "n_fresh": n_fresh,
        "fresh_ms": fresh_ms,
        "pool_tree_ms": pool_ms,
        "caller_ms": caller_ms,
        "fresh_over_pool": fresh_ms / (pool_ms + caller_ms),
    }


PAGE_OPTIONS = {"huge pages (default)": {}, "small pages": {"huge_pages": False}}
"""the strict pool with its workers' memory in huge pages or not (tools/sandbox/hugepages.py)"""


def bench_huge_pages(pool_size: int, n: int, pace_s: float) -> dict[str, Any]:
    """The strict pool with each of :data:`PAGE_OPTIONS`, side by side: blocks of 10 calls go
    round the pools, back to back and then paced; then the CPU time of a back-to-back call in
    each."""
    report: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        tools = {
            name: stack.enter_context(
                PythonCoderTool(isolation="strict", pool_size=pool_size, timeout_s=10, **options)
            )
            for name, options in PAGE_OPTIONS.items()
        }
        for name, tool in tools.items():
            features = tool._backend.pool.features
            report[name] = {"huge_pages_kb_per_worker": features.get("huge_pages_kb", 0)}
            _time_calls(lambda t=tool: t.run(SNIPPET).stdout, 0, warmup=10, pace_s=0.0)
        for mode, pace in (("back_to_back", 0.0), ("paced", pace_s)):
            samples: dict[str, list[float]] = {name: [] for name in tools}
            for _ in range(max(1, n // 10)):
                for name, tool in tools.items():
                    samples[name] += _time_calls(
                        lambda t=tool: t.run(SNIPPET).stdout, 10, warmup=0, pace_s=pace
                    )
            for name, values in samples.items():
                report[name][mode] = _stats(values)
        for name, tool in tools.items():
            report[name]["cpu_per_call"] = cpu_per_call(tool, max(40, n // 2), 0)
    return report


def _levels() -> list[IsolationRequest]:
    levels: list[IsolationRequest] = ["strict"] if shutil.which("bwrap") else []
    return levels + ["process"]


def _ratio(fresh: dict[str, Any], pool: dict[str, Any]) -> dict[str, float]:
    return {
        "fresh_median_ms": fresh["median_ms"],
        "pool_median_ms": pool["median_ms"],
        "median_ratio": fresh["median_ms"] / pool["median_ms"],
        "fresh_p95_ms": fresh["p95_ms"],
        "pool_p95_ms": pool["p95_ms"],
        "p95_ratio": fresh["p95_ms"] / pool["p95_ms"],
    }


def _targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratios of the fresh interpreter to the strict pool, and whether the targets hold."""
    fresh = {r["paced"]: r for r in rows if r["setup"].startswith("fresh")}
    strict = {
        r["paced"]: r for r in rows if r["isolation"].startswith("bwrap") and r["callers"] == 1
    }
    # the fresh interpreter at its faster mode (pacing does not help it, and load can hurt it)
    fresh_best = min(fresh.values(), key=lambda r: r["median_ms"])
    ratios = {}
    if strict:
        ratios = {
            "paced": _ratio(fresh_best, strict[True]),
            "back_to_back": _ratio(fresh[False], strict[False]),
        }
    target_ms = round(fresh_best["median_ms"] / TARGET_RATIO, 2)  # 2 decimals in the table
    return {
        "target_ratio": TARGET_RATIO,
        # the ratio target as a median: a tenth of the fresh `python -c` median of this run
        "target_median_ms": target_ms,
        "target_met": bool(strict) and strict[True]["median_ms"] <= target_ms,
        # the same ratio back to back (how the issue measured 3.0x): fresh and pool both so
        "back_to_back_target_met": bool(ratios)
        and ratios["back_to_back"]["median_ratio"] >= TARGET_RATIO,
        "issue3_target_median_ms": TARGET_MS,
        "issue3_target_met": bool(strict) and strict[False]["median_ms"] <= TARGET_MS,
        "ratios": ratios,
    }


def run(quick: bool, pool_size: int, callers: int, pace_ms: float) -> dict[str, Any]:
    n = 40 if quick else 300
    n_fresh = max(10, n // 4)
    pace_s = pace_ms / 1000
    load_before = os.getloadavg()
    per_caller = 10 if quick else 60
    rows: list[dict[str, Any]] = []
    fresh_rows: list[dict[str, Any]] = []
    parts: dict[str, Any] = {}
    parts_b2b: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    for index, level in enumerate(_levels()):
        with PythonCoderTool(isolation=level, pool_size=pool_size, timeout_s=10) as tool:
            for paced in (False, True):
                # the fresh interpreter runs alongside the first (strongest) level's pool
                pool, fresh = bench_side_by_side(
                    tool, n, n_fresh, pace_s if paced else 0.0, with_fresh=index == 0
                )
                if fresh:
                    fresh_rows.append(
                        {
                            "setup": "fresh `python -c` subprocess" + (", paced" if paced else ""),
                            "isolation": "process (none inside)",
                            "callers": 1,
                            "paced": paced,
                            **_stats(fresh),
                        }
                    )
                rows.append(
                    {
                        "setup": f"PythonCoderTool pool ({level})" + (", paced" if paced else ""),
                        "isolation": tool.isolation_level,
                        "callers": 1,
                        "paced": paced,
                        **_stats(pool),
                    }
                )
            samples, throughput = bench_concurrent(tool, callers, per_caller)
            rows.append(
                {
                    "setup": f"PythonCoderTool pool ({level}), {callers} callers",
                    "isolation": tool.isolation_level,
                    "callers": callers,
                    "paced": False,
                    "calls_per_s": throughput,
                    **_stats(samples),
                }
            )
            parts[level] = breakdown(tool, max(20, n // 3), pace_s)
            parts_b2b[level] = breakdown(tool, max(20, n // 3), 0.0)
            if index == 0:
                cpu[level] = cpu_per_call(tool, max(40, n // 2), n_fresh)
    huge_pages = bench_huge_pages(pool_size, n, pace_s) if "strict" in _levels() else {}
    rows = fresh_rows + rows
    rows.append(
        {
            "setup": "in-process exec (reference, NO isolation)",
            "isolation": "none",
            "callers": 1,
            "paced": False,
            **_stats(bench_exec(n)),
        }
    )
    return {
        "snippet": SNIPPET,
        "quick": quick,
        "pool_size": pool_size,
        "pace_ms": pace_ms,
        # other work on the machine inflates every number; the load is recorded for context
        "machine": machine_info(bwrap=shutil.which("bwrap"), loadavg_before=load_before),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **_targets(rows),
        "breakdown": parts,
        "breakdown_back_to_back": parts_b2b,
        "cpu_per_call": cpu,
        "huge_pages": huge_pages,
        "rows": rows,
    }


def _print(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Sandbox latency per call: {SNIPPET}")
    for column in ("setup", "isolation", "n", "median ms", "p95 ms", "calls/s"):
        table.add_column(column, justify="left" if column in ("setup", "isolation") else "right")
    for row in report["rows"]:
        rate = row.get("calls_per_s")
        table.add_row(
            row["setup"],
            row["isolation"],
            str(row["n"]),
            f"{row['median_ms']:.2f}",
            f"{row['p95_ms']:.2f}",
            f"{rate:.0f}" if rate else "",
        )
    console.print(table)
    labels = {
        "host_and_pipes": "caller <-> worker: JSON over pipes, wake-ups, result validation, "
        "and any wait for the worker to finish its last call",
        "handoff": "worker: call handed to the waiting child (last holder reaped)",
        "run": "child: read call, rlimits, uid drop, compile+exec, report, exit",
        "result": "worker: result built, call's uid signalled, directory removed",
        "total": "total as the caller sees it",
        "previous_cleanup": "off the path: last call's sweep, clean-up, memory freed",
        "previous_fork": "off the path: fork of the next call's child",
    }
    b2b = report.get("breakdown_back_to_back", {})
    for level, part in report["breakdown"].items():
        other = b2b.get(level)
        parts = Table(title=f"Where a call's time goes, {level} pool (worker's clock, median ms)")
        parts.add_column("part")
        parts.add_column(f"paced (n={part['n']})", justify="right")
        if other:
            parts.add_column(f"back to back (n={other['n']})", justify="right")
        for key, label in labels.items():
            cells = [f"{part['median_ms'][key]:.3f}"]
            if other:
                cells.append(f"{other['median_ms'][key]:.3f}")
            parts.add_row(label, *cells)
        shares = [part] + ([other] if other else [])
        parts.add_row(
            "calls whose child was set up when they came",
            *(f"{100 * x['child_set_up_share']:.0f}%" for x in shares),
        )
        console.print(parts)
    machine = report["machine"]
    console.print(
        f"{machine['cpus']} CPUs; 1-min load average "
        f"{machine['loadavg_before'][0]:.2f} before, "
        f"{machine['loadavg'][0]:.2f} after"
    )
    for mode, r in report["ratios"].items():
        fresh = "faster of its two modes" if mode == "paced" else "back to back"
        console.print(
            f"fresh `python -c` ({fresh}) / strict pool {mode.replace('_', ' ')}: median "
            f"{r['fresh_median_ms']:.2f} / {r['pool_median_ms']:.2f} ms = "
            f"{r['median_ratio']:.1f}x, p95 {r['fresh_p95_ms']:.2f} / {r['pool_p95_ms']:.2f} ms "
            f"= {r['p95_ratio']:.1f}x"
        )
    for level, c in report.get("cpu_per_call", {}).items():
        console.print(
            f"CPU per call back to back ({level} pool, all cores): pool's processes "
            f"{c['pool_tree_ms']:.2f} ms + caller {c['caller_ms']:.2f} ms; fresh `python -c` "
            f"{c['fresh_ms']:.2f} ms: {c['fresh_over_pool']:.1f}x"
        )
    options = report.get("huge_pages") or {}
    if options:
        table = Table(title="Strict pool: workers' memory in huge pages or not (hugepages.py)")
        for column in ("workers' memory", "huge MB", "back to back", "paced", "CPU per call"):
            table.add_column(column, justify="left" if column == "workers' memory" else "right")
        for name, o in options.items():
            cpu = o["cpu_per_call"]
            table.add_row(
                name,
                str(o["huge_pages_kb_per_worker"] // 1024),
                f"{o['back_to_back']['median_ms']:.2f} / {o['back_to_back']['p95_ms']:.2f}",
                f"{o['paced']['median_ms']:.2f} / {o['paced']['p95_ms']:.2f}",
                f"{cpu['pool_tree_ms'] + cpu['caller_ms']:.2f}",
            )
        console.print(table)
        console.print("(median / p95 ms; CPU ms in all processes, caller included)")
    verdict = "met" if report["target_met"] else "NOT met (or no namespace isolation here)"
    console.print(
        f"target: strict pool median >= {TARGET_RATIO:g}x faster than a fresh `python -c` "
        f"(pool paced; <= {report['target_median_ms']:.2f} ms in this run): {verdict}"
    )
    verdict_b2b = "met" if report["back_to_back_target_met"] else "NOT met"
    console.print(f"the same, back to back (fresh back to back too): {verdict_b2b}")
    verdict3 = "met" if report["issue3_target_met"] else "NOT met"
    console.print(f"issue 3 target: median <= {TARGET_MS:g} ms back to back: {verdict3}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/sandbox_latency.json"),
        help="where to write the JSON report",
    )
    parser.add_argument("--pool-size", type=int, default=2, help="workers per pool")
    parser.add_argument("--callers", type=int, default=8, help="concurrent callers in (c)")
    parser.add_argument(
        "--pace-ms", type=float, default=20.0, help="idle time before each paced call"
    )
    args = parser.parse_args(argv)
    report = run(args.quick, args.pool_size, args.callers, args.pace_ms)
    _print(report, Console(width=120))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    Console().print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
